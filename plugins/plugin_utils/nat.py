"""Publishing instance ports on the LXD host: proxy devices, network forwards, iptables DNAT.

- proxy (default): an LXD proxy device per rule, `mage-nat-<proto>-<extport>`; LXD-native, survives
  reboots, works on a remote LXD, no firewall edits. It lives and dies with the instance.
- forward: a port entry on an LXD network forward (LXD >= 4.18) for the listen address, marked with
  a description that names the instance, so only our entries are ever changed.
- iptables: the seed's DNAT + FORWARD rules on the LXD host (this controller only), each carrying a
  comment that names the instance; rules without our comment are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .cluster import member_statuses
from .errors import NotFoundError, OptionError, RemoteError
from .remote import LxdApi

PROXY_DEVICE_PREFIX = "mage-nat-"
FORWARD_DESCRIPTION = "mage-lxd"
DEFAULT_BACKEND = "proxy"
_FORWARD_EDITS = threading.Lock()


@dataclass(frozen=True)
class NatRule:
    """Publish `intport` of the instance as `extport` on the LXD host."""

    extport: int
    intport: int
    proto: str = "tcp"
    extif: str = ""
    intif: str = ""
    backend: str = DEFAULT_BACKEND
    listen: str = ""
    # On a cluster: ((member, address), ...) - the address to listen on depends on where the
    # instance runs. Sorted, so equal declarations compare equal.
    listen_by_member: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """What identifies the rule on the host: protocol and host port."""
        return f"{self.proto}-{self.extport}"


def owner_tag(project: str, instance: str) -> str:
    """The mark that identifies what one instance published (forward ports, iptables comments)."""
    return f"mage-lxd:{project}/{instance}"


def proxy_devices(rules: Iterable[NatRule], listen_addresses: dict[str, str]) -> dict[str, dict[str, str]]:
    """The proxy devices for the proxy backend's rules, keyed by device name."""
    devices = {}
    for rule in rules:
        if rule.listen_by_member and rule.key not in listen_addresses:
            continue  # its member is not known yet (a new instance LXD has still to place)
        address = listen_addresses.get(rule.key, "0.0.0.0")
        devices[f"{PROXY_DEVICE_PREFIX}{rule.key}"] = {
            "type": "proxy",
            "listen": f"{rule.proto}:{address}:{rule.extport}",
            "connect": f"{rule.proto}:127.0.0.1:{rule.intport}",
            "bind": "host",
        }
    return devices


def check_listen_by_member(api: LxdApi, rules: Iterable[NatRule], where: str, new_on: str | None) -> None:
    """Per-member listen addresses need a cluster; for a new instance (`new_on`: its member, or ""
    when LXD will pick one) they must cover where it can land, checked before it is created."""
    mapped = [rule for rule in rules if rule.listen_by_member]
    if not mapped:
        return
    if not api.clustered:
        raise OptionError(
            f"{where}: nat {mapped[0].key}: listen gives addresses per cluster member, but "
            f"{api.describe()} is not a cluster. Fix: give listen one address."
        )
    if new_on is None:
        return
    possible = {new_on} if new_on else set(member_statuses(api))
    for rule in mapped:
        missing = sorted(possible - {member for member, _address in rule.listen_by_member})
        if missing:
            raise OptionError(
                f"{where}: nat {rule.key}: listen gives no address for cluster member(s) {', '.join(missing)}, "
                "where the new instance may be placed. Fix: add them to listen, or set target to a member it names."
            )


def resolve_listen_addresses(api: LxdApi, rules: Iterable[NatRule], where: str, location: str = "") -> dict[str, str]:
    """Each rule's host address: `listen` (for the cluster member at `location` when it is given per
    member), else the IPv4 of `extif` read through LXD, else any. Per-member rules are left out
    while `location` is unknown."""
    addresses = {}
    for rule in rules:
        if rule.listen_by_member:
            if not location:
                continue
            by_member = dict(rule.listen_by_member)
            if location not in by_member:
                raise OptionError(
                    f"{where}: nat {rule.key}: listen gives no address for cluster member '{location}', where the "
                    f"instance is (it has: {', '.join(sorted(by_member))}). Fix: add '{location}: ADDRESS' to listen."
                )
            addresses[rule.key] = by_member[location]
        elif rule.listen:
            addresses[rule.key] = rule.listen
        elif rule.extif:
            addresses[rule.key] = interface_ipv4(api, rule.extif, where)
    return addresses


def interface_ipv4(api: LxdApi, interface: str, where: str) -> str:
    """The first IPv4 address of a host interface, as LXD sees it (works on remote hosts too)."""
    try:
        state = api.get(f"networks/{interface}/state") or {}
    except NotFoundError:
        raise OptionError(f"{where}: host interface '{interface}' does not exist on {api.describe()}") from None
    for address in state.get("addresses") or []:
        if address.get("family") == "inet":
            return str(address["address"])
    raise OptionError(f"{where}: host interface '{interface}' has no IPv4 address to listen on; set nat[].listen")


def check_iptables_rules(api: LxdApi, rules: Iterable[NatRule], where: str) -> None:
    """The iptables backend (these are its rules) edits this machine's firewall, so LXD must be local
    and the interfaces real."""
    wanted = list(rules)
    if not wanted:
        return
    if api.clustered:
        raise OptionError(
            f"{where}: the iptables backend changes the firewall of the machine running Ansible, but on "
            f"cluster {api.describe()} the instance may run on another member, whose host is not in "
            "this play. Fix: use backend forward (made on the instance's member) or proxy."
        )
    if api.remote.is_https:
        raise OptionError(
            f"{where}: the iptables backend changes the firewall of the machine running Ansible, but "
            f"{api.describe()} is elsewhere. Fix: use backend proxy or forward."
        )
    if not shutil.which("iptables"):
        raise OptionError(f"{where}: the iptables backend needs the iptables command on this host")
    for rule in wanted:
        for interface in (rule.extif, rule.intif):
            if not os.path.isdir(f"/sys/class/net/{interface}"):
                raise OptionError(f"{where}: nat interface '{interface}' does not exist on this host (backend iptables)")


# Longer than most (about 45 lines): reading, merging and writing back one forward's ports is one
# step under the forward lock; split, the halves would pass half-merged port lists between them.
def apply_forwards(
    api: LxdApi, tag: str, rules: Iterable[NatRule], target: str, listen: dict[str, str], location: str = ""
) -> bool:
    """Make the forward port entries tagged `tag` exactly `rules`; return True if anything changed.

    On a cluster a bridge's forwards belong to one member each: ours are made on the instance's
    member (`location`), and entries left on another member (the instance moved) are removed.
    """
    member = location if api.clustered else ""
    wanted: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for rule in rules:
        if rule.key not in listen:
            raise OptionError(f"{tag}: nat {rule.key} with backend forward needs listen or extif")
        wanted.setdefault((rule.intif, listen[rule.key], member), []).append({
            "description": f"{tag}:{rule.key}",
            "protocol": rule.proto,
            "listen_port": str(rule.extport),
            "target_port": str(rule.intport),
            "target_address": target,
        })
    changed = False
    for network in {network for network, *_rule in wanted} | set(_networks_with_tag(api, tag)):
        for forward in api.get(f"networks/{network}/forwards", {"recursion": "1"}) or []:
            address = forward["listen_address"]
            owner = str(forward.get("location") or "") if api.clustered else ""
            on_member = {"target": owner} if owner else None
            ports = list(forward.get("ports") or [])
            kept = [port for port in ports if not str(port.get("description", "")).startswith(f"{tag}:")]
            desired = kept + wanted.pop((network, address, owner), [])
            if _port_set(desired) == _port_set(ports):
                continue
            changed = True
            if not desired and forward.get("description") == FORWARD_DESCRIPTION:
                api.delete(f"networks/{network}/forwards/{address}", on_member)
            else:
                api.put(f"networks/{network}/forwards/{address}",
                        {"description": forward.get("description", ""), "config": forward.get("config", {}),
                         "ports": desired}, on_member)
    for (network, address, owner), ports in wanted.items():
        changed = True
        api.post(f"networks/{network}/forwards",
                 {"listen_address": address, "description": FORWARD_DESCRIPTION, "ports": ports},
                 {"target": owner} if owner else None)
    return changed


def _port_set(ports: list[dict[str, str]]) -> set[tuple[str, ...]]:
    return {tuple(sorted((k, str(v)) for k, v in port.items())) for port in ports}


def _networks_with_tag(api: LxdApi, tag: str) -> list[str]:
    # Managed bridges only carry forwards; the list is short (one request plus one per bridge).
    found = []
    for network in api.get("networks", {"recursion": "1"}) or []:
        if not network.get("managed"):
            continue
        for forward in api.get(f"networks/{network['name']}/forwards", {"recursion": "1"}) or []:
            if any(str(port.get("description", "")).startswith(f"{tag}:") for port in forward.get("ports") or []):
                found.append(network["name"])
                break
    return found


def iptables_rules(tag: str, rules: Iterable[NatRule], target: str) -> list[tuple[str, list[str]]]:
    """(table, rule arguments) for the DNAT and FORWARD rules of the iptables backend's rules."""
    planned = []
    for rule in rules:
        comment = ["-m", "comment", "--comment", f"{tag}:{rule.key}"]
        planned.append(("nat", ["PREROUTING", "-i", rule.extif, "-p", rule.proto, "-m", rule.proto,
                                "--dport", str(rule.extport), *comment, "-j", "DNAT",
                                "--to-destination", f"{target}:{rule.intport}"]))
        planned.append(("filter", ["FORWARD", "-d", f"{target}/32", "-i", rule.extif, "-o", rule.intif,
                                   "-p", rule.proto, "-m", rule.proto, "--dport", str(rule.intport),
                                   *comment, "-j", "ACCEPT"]))
    return planned


def apply_iptables(tag: str, rules: Iterable[NatRule], target: str) -> bool:
    """Make the host's rules commented `tag` exactly the planned ones; True if anything changed."""
    planned = iptables_rules(tag, rules, target)
    changed = False
    for table in ("nat", "filter"):
        present = _tagged_rules(table, tag)
        wanted = [args for planned_table, args in planned if planned_table == table]
        for args in present:
            if args not in wanted:
                _iptables(table, "-D", args)
                changed = True
        for args in wanted:
            if args not in present:
                _iptables(table, "-A", args)
                changed = True
    if planned:
        _enable_forwarding()
    return changed


def _tagged_rules(table: str, tag: str) -> list[list[str]]:
    if not shutil.which("iptables-save"):
        return []
    listing = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True).stdout
    found = []
    for line in listing.splitlines():
        if line.startswith("-A ") and (f'--comment "{tag}:' in line or f"--comment {tag}:" in line):
            found.append(_split_rule(line[3:]))
    return found


def _split_rule(text: str) -> list[str]:
    # iptables-save quotes only comments; they hold no spaces of ours, so quotes just come off.
    return [part.strip('"') for part in text.split()]


def _iptables(table: str, action: str, args: list[str]) -> None:
    result = subprocess.run(["iptables", "-w", "-t", table, action, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RemoteError(f"iptables -t {table} {action} {' '.join(args)} failed: {result.stderr.strip()}")


def _enable_forwarding() -> None:
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as handle:
        if handle.read().strip() != "1":
            handle.seek(0)
            handle.write("1")


class NatBackend:
    """One way to publish ports: what it needs, what it checks, what it makes. Every backend is an
    entry of BACKENDS, and nothing else names one."""

    name = ""
    # Rule fields it cannot work without (checked when the declaration is parsed).
    needs: tuple[str, ...] = ()
    # It points at the instance's IPv4, known only once the instance runs.
    needs_address = False
    # LXD opens a socket on the host for it, so the host port must be free.
    binds_on_host = False

    def check_rule(self, rule: NatRule, label: str) -> None:
        """Refuse a rule that lacks what this backend needs (pure)."""
        missing = [field for field in self.needs if not getattr(rule, field)]
        if missing:
            raise OptionError(f"{label}: the {self.name} backend needs {' and '.join(missing)}")

    def check(self, api: LxdApi, rules: list[NatRule], where: str) -> None:
        """Refuse, before any change, what this server or host cannot do (reads only)."""

    def devices(self, rules: list[NatRule], listen: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """Instance devices that publish `rules` (part of the instance's own definition)."""
        return {}

    def publish(self, api: LxdApi, tag: str, rules: list[NatRule], target: str, listen: dict[str, str],
                location: str) -> bool:
        """Make what `tag` published exactly `rules` (none: remove it all); True if anything changed."""
        return False


class ProxyDevices(NatBackend):
    """An LXD proxy device per rule: lives and dies with the instance, works on any LXD."""

    name = "proxy"
    binds_on_host = True

    def devices(self, rules: list[NatRule], listen: Mapping[str, str]) -> dict[str, dict[str, str]]:
        return proxy_devices(rules, dict(listen))


class NetworkForwards(NatBackend):
    """Ports on an LXD network forward of the instance's bridge (LXD >= 4.18)."""

    name = "forward"
    needs = ("intif",)
    needs_address = True

    def check(self, api: LxdApi, rules: list[NatRule], where: str) -> None:
        if rules and not api.has_extension("network_forward"):
            raise OptionError(
                f"{where}: nat {rules[0].key}: {api.describe()} has no network forwards (API "
                "extension network_forward, LXD 4.18). Fix: use backend proxy."
            )

    def publish(self, api: LxdApi, tag: str, rules: list[NatRule], target: str, listen: dict[str, str],
                location: str) -> bool:
        if not api.has_extension("network_forward"):
            return False
        # A forward's ports are read, edited and written back whole: instances of one batch that
        # share a listen address would otherwise overwrite each other's ports.
        with _FORWARD_EDITS:
            return apply_forwards(api, tag, rules, target, listen, location)


class IptablesRules(NatBackend):
    """The seed's DNAT and FORWARD rules on this machine's firewall (a local LXD only)."""

    name = "iptables"
    needs = ("extif", "intif")
    needs_address = True

    def check(self, api: LxdApi, rules: list[NatRule], where: str) -> None:
        check_iptables_rules(api, rules, where)

    def publish(self, api: LxdApi, tag: str, rules: list[NatRule], target: str, listen: dict[str, str],
                location: str) -> bool:
        return not api.remote.is_https and apply_iptables(tag, rules, target)


BACKENDS: dict[str, NatBackend] = {backend.name: backend for backend in (ProxyDevices(), NetworkForwards(), IptablesRules())}


def _of(backend: NatBackend, rules: Iterable[NatRule]) -> list[NatRule]:
    return [rule for rule in rules if rule.backend == backend.name]


def check_nat(api: LxdApi, rules: Iterable[NatRule], where: str) -> None:
    """Every backend's checks of its own rules, before any change."""
    rules = list(rules)
    for backend in BACKENDS.values():
        backend.check(api, _of(backend, rules), where)


def nat_devices(rules: Iterable[NatRule], listen: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The instance devices every backend needs for `rules`."""
    rules = list(rules)
    return {name: device for backend in BACKENDS.values() for name, device in backend.devices(_of(backend, rules), listen).items()}


def publish_nat(api: LxdApi, tag: str, rules: Iterable[NatRule], target: str, listen: dict[str, str],
                location: str) -> list[str]:
    """Publish `rules` with every backend outside the instance (removing what `tag` no longer
    declares); return the names of the backends that changed something."""
    rules = list(rules)
    return [backend.name for backend in BACKENDS.values()
            if backend.publish(api, tag, _of(backend, rules), target, listen, location)]
