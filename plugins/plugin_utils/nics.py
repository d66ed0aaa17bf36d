"""The one reader of an instance's NICs and addresses, for the inventory, the lookup and provisioning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# An address as the rest of the code passes it: {"family": "inet" | "inet6", "address": "..."}.
Address = dict[str, str]


def nic_devices(instance: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The instance's NICs as {device name: {"interface", "network", "parent", "hwaddr"}}."""
    config = instance.get("expanded_config") or instance.get("config") or {}
    devices = instance.get("expanded_devices") or instance.get("devices") or {}
    nics = {}
    for device, spec in devices.items():
        if spec.get("type") != "nic":
            continue
        nics[device] = {
            "interface": str(spec.get("name") or device),
            # A managed network (leases can be read), or the host interface it is attached to.
            "network": str(spec.get("network") or ""),
            "parent": str(spec.get("parent") or ""),
            "hwaddr": str(spec.get("hwaddr") or config.get(f"volatile.{device}.hwaddr") or "").lower(),
        }
    return nics


def attached_networks(instance: Mapping[str, Any]) -> list[str]:
    """The networks (or parent interfaces) its NICs are on, sorted."""
    return sorted({nic["network"] or nic["parent"] for nic in nic_devices(instance).values()} - {""})


def state_addresses(state: Mapping[str, Any]) -> dict[str, list[Address]]:
    """Global IPv4/IPv6 addresses per interface (loopback left out) from GET /instances/NAME/state."""
    found: dict[str, list[Address]] = {}
    for interface, network in sorted((state.get("network") or {}).items()):
        if interface == "lo":
            continue
        usable = [
            {"family": str(address["family"]), "address": str(address["address"])}
            for address in network.get("addresses") or []
            if address.get("scope") == "global" and address.get("family") in ("inet", "inet6")
        ]
        if usable:
            found[interface] = usable
    return found


def addresses_by_family(addresses: Mapping[str, list[Mapping[str, str]]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split {interface: [{family, address}]} into ({iface: [ipv4...]}, {iface: [ipv6...]})."""
    ipv4: dict[str, list[str]] = {}
    ipv6: dict[str, list[str]] = {}
    for interface in sorted(addresses):
        for entry in addresses[interface]:
            target = ipv4 if entry["family"] == "inet" else ipv6
            target.setdefault(interface, []).append(entry["address"])
    return ipv4, ipv6


def flat(by_interface: Mapping[str, list[str]]) -> list[str]:
    """Every address of {interface: [addresses]}, interfaces in name order."""
    return [address for interface in sorted(by_interface) for address in by_interface[interface]]
