"""The one reader of an instance's NICs and addresses, for the inventory, the lookup and provisioning.

An instance's addresses are LXD's view of its own NICs, never what the instance reports about
itself: root inside it can add any interface (a docker0 bridge, a dummy link carrying a
neighbour's address), and those come before eth0 in name order. `nic_addresses()` decides, for
NAT and the inventory alike: per NIC device on a managed network, the NIC's static address or its
DHCP lease, else the address inside that network's subnet on the interface LXD made for that NIC.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .values import read_address

# An address as the rest of the code passes it: {"family": "inet" | "inet6", "address": "...",
# "network": the managed network it was found in}.
Address = dict[str, str]
IpInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
FAMILIES = {4: "inet", 6: "inet6"}


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


@dataclass(frozen=True)
class ManagedNetwork:
    """A network LXD manages, with the host's own address on it (the gateway) and its subnet."""

    name: str
    # ipv4.address / ipv6.address as LXD holds them: host address and prefix, e.g. 10.0.0.1/24.
    gateways: tuple[IpInterface, ...] = ()

    def subnet(self, family: str) -> IpInterface | None:
        """The host's address and prefix of `family` on this network, None when it has none."""
        return next((gateway for gateway in self.gateways if FAMILIES[gateway.version] == family), None)

    def describe(self) -> str:
        """The network as messages name it: name and subnets."""
        subnets = ", ".join(str(gateway.network) for gateway in self.gateways) or "no subnet"
        return f"network '{self.name}' ({subnets})"


def managed_networks(networks: Iterable[Mapping[str, Any]] | None) -> dict[str, ManagedNetwork]:
    """The managed networks of GET /1.0/networks?recursion=1, by name (unmanaged ones left out)."""
    found = {}
    for network in networks or []:
        if not isinstance(network, Mapping) or not network.get("managed"):
            continue
        config = network.get("config") or {}
        gateways = []
        for key in ("ipv4.address", "ipv6.address"):
            gateway = _interface(config.get(key))
            if gateway is not None:
                gateways.append(gateway)
        found[str(network.get("name"))] = ManagedNetwork(str(network.get("name")), tuple(gateways))
    return found


@dataclass
class NicView:
    """What `nic_addresses()` decided: the addresses, and those refused with the reason."""

    # {interface inside the instance: [address]}, only addresses LXD's own view vouches for.
    addresses: dict[str, list[Address]] = field(default_factory=dict)
    # {managed network: interface of the instance's NIC on it}.
    networks: dict[str, str] = field(default_factory=dict)
    # (interface, address, why): what the instance holds on its NIC but cannot be used.
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    # Interfaces of NICs on no managed network: only the instance's state tells their addresses.
    unmanaged: list[str] = field(default_factory=list)

    def on_network(self, network: str, family: str = "inet") -> list[str]:
        """The addresses of `family` on the instance's NIC on `network`."""
        return [entry["address"] for entries in self.addresses.values() for entry in entries
                if entry["network"] == network and entry["family"] == family]


# Longer than most (about 45 lines): static address, lease and state are one decision per NIC and
# family, and splitting it would pass half-decided NICs around.
def nic_addresses(
    instance: Mapping[str, Any],
    networks: Mapping[str, ManagedNetwork],
    leases: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    state: Mapping[str, Any] | None = None,
) -> NicView:
    """The instance's addresses as LXD sees its NICs (pure).

    For each NIC device of its expanded config on a managed network (`network`, or a `parent` that
    is one) and each address family with a subnet there: the NIC's static `ipv4.address` /
    `ipv6.address`, else its DHCP leases on that network (`leases`: {network: lease list}, matched
    by MAC), else from `state` the addresses inside the subnet on the interface LXD made for that
    NIC (its `name`, with the NIC's MAC). The host's own address, loopback and link-local never
    count. A NIC on no managed network (LXD knows no subnet there) gives the global addresses of
    its own interface, with network "" (not vouched for). No other interface ever counts.
    """
    view = NicView()
    interfaces = (state or {}).get("network") or {}
    devices = instance.get("expanded_devices") or instance.get("devices") or {}
    gateways = {gateway.ip for network in networks.values() for gateway in network.gateways}
    for device, nic in sorted(nic_devices(instance).items()):
        seen = interfaces.get(nic["interface"]) or {}
        if str(seen.get("hwaddr") or "").lower() not in ("", nic["hwaddr"]):
            seen = {}  # an interface the instance renamed into the NIC's name, not LXD's NIC
        # Every address, whatever scope LXD gives it (it calls 169.254/16 "link"): each is judged below.
        held = [str(entry.get("address") or "") for entry in seen.get("addresses") or []]
        network = networks.get(nic["network"] or nic["parent"])
        if network is None:
            view.unmanaged.append(nic["interface"])
            _add(view, nic["interface"], "", [text for text in held if _host_address(text, gateways)])
            continue
        view.networks.setdefault(network.name, nic["interface"])
        spec = devices.get(device) or {}
        lease_addresses = [str(lease.get("address") or "") for lease in (leases or {}).get(network.name) or []
                           if nic["hwaddr"] and str(lease.get("hwaddr") or "").lower() == nic["hwaddr"]]
        for family in ("inet", "inet6"):
            gateway = network.subnet(family)
            if gateway is None:
                continue
            static = str(spec.get("ipv4.address" if family == "inet" else "ipv6.address") or "")
            for source in ([static], lease_addresses, held):
                usable = [text for text in source if _why_refused(text, gateway, network) == ""]
                if usable:
                    _add(view, nic["interface"], network.name, usable)
                    break
            else:
                # fe80:: on every NIC is no one's attempt at anything: left out of what is reported.
                view.refused += [(nic["interface"], text, _why_refused(text, gateway, network)) for text in held
                                 if _family(text) == family and not _auto_link_local(text)]
    return view


def _add(view: NicView, interface: str, network: str, texts: Iterable[str]) -> None:
    for text in texts:
        address = ipaddress.ip_address(text)
        entry = {"family": FAMILIES[address.version], "address": str(address), "network": network}
        if entry not in view.addresses.setdefault(interface, []):
            view.addresses[interface].append(entry)


def _host_address(text: str, gateways: set[IpAddress]) -> bool:
    address = _address(text)
    return address is not None and address not in gateways and not (
        address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified)


def _why_refused(text: str, gateway: IpInterface, network: ManagedNetwork) -> str:
    """'' when `text` is a usable address of the instance inside `gateway`'s subnet, else why not."""
    address = _address(text)
    if address is None or address.version != gateway.version:
        return "not an address of that family"
    if address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified:
        return "loopback, link-local or not a host address"
    if address == gateway.ip:
        return f"the host's own address on {network.describe()}"
    subnet = gateway.network
    if address not in subnet:
        return f"outside {network.describe()}"
    if subnet.version == 4 and subnet.prefixlen < 31 and address in (subnet.network_address, subnet.broadcast_address):
        return f"not a host address of {network.describe()}"
    return ""


def _auto_link_local(text: str) -> bool:
    address = _address(text)
    return address is not None and address.version == 6 and address.is_link_local


def _family(text: str) -> str:
    address = _address(text)
    return FAMILIES[address.version] if address is not None else ""


def _address(text: Any) -> IpAddress | None:
    # Scope ids ("fe80::1%eth0") are never an address we point at.
    return read_address(text)


def _interface(text: Any) -> IpInterface | None:
    if not isinstance(text, str) or "/" not in text or "%" in text:
        return None  # "none", "auto" (resolved by LXD when set) or empty: no subnet
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        return None
