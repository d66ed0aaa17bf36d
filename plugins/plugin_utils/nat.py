"""Publishing instance ports on the LXD host: proxy devices, network forwards, iptables DNAT.

- proxy (default): an LXD proxy device per rule, `mage-nat-<proto>-<extport>`; LXD-native, survives
  reboots, works on a remote LXD, no firewall edits. It lives and dies with the instance.
- forward: a port entry on an LXD network forward (LXD >= 4.18) for the listen address, marked with
  a description that names the instance, so only our entries are ever changed.
- iptables: the seed's DNAT + FORWARD rules on the LXD host (this controller only), each carrying a
  comment that names the instance; rules without our comment are never touched.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .cluster import member_statuses
from .errors import NotFoundError, OptionError, RemoteError
from .lxd_api import LxdApi
from .nics import ManagedNetwork, NicView
from .records import decode_record
from .values import is_instance_name, is_project_name

PROXY_DEVICE_PREFIX = "mage-nat-"
FORWARD_DESCRIPTION = "mage-lxd"
# Every forward port and iptables rule we make carries `mage-lxd:PROJECT/INSTANCE:RULE`.
MARK_PREFIX = "mage-lxd:"
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
    return f"{MARK_PREFIX}{project}/{instance}"


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


# One write to LXD's network forwards: (method, path under /1.0, body, query).
ForwardWrite = tuple[str, str, dict[str, Any] | None, dict[str, str] | None]


def plan_forwards(
    tag: str, rules: Iterable[NatRule], targets: Mapping[str, str], listen: Mapping[str, str], member: str,
    forwards: Mapping[str, Iterable[Mapping[str, Any]]], clustered: bool = False,
) -> list[ForwardWrite]:
    """The writes that make the forward port entries tagged `tag` exactly `rules` (pure).

    `forwards` maps each network that holds or is to hold one of them to its forwards as LXD lists
    them. On a cluster (`clustered`) a bridge's forwards belong to one member each: ours go on the
    instance's `member`, and entries left on another member (the instance moved) are removed.
    """
    wanted: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for rule in rules:
        if rule.key not in listen:
            raise OptionError(f"{tag}: nat {rule.key} with backend forward needs listen or extif")
        wanted.setdefault((rule.intif, listen[rule.key], member), []).append({
            "description": f"{tag}:{rule.key}",
            "protocol": rule.proto,
            "listen_port": str(rule.extport),
            "target_port": str(rule.intport),
            "target_address": targets[rule.key],
        })
    writes: list[ForwardWrite] = []
    for network, listed in forwards.items():
        for forward in listed:
            address = forward["listen_address"]
            owner = str(forward.get("location") or "") if clustered else ""
            on_member = {"target": owner} if owner else None
            ports = list(forward.get("ports") or [])
            kept = [port for port in ports if not str(port.get("description", "")).startswith(f"{tag}:")]
            desired = kept + wanted.pop((network, address, owner), [])
            if _port_set(desired) == _port_set(ports):
                continue
            if not desired and forward.get("description") == FORWARD_DESCRIPTION:
                writes.append(("delete", f"networks/{network}/forwards/{address}", None, on_member))
            else:
                writes.append(("put", f"networks/{network}/forwards/{address}",
                               {"description": forward.get("description", ""), "config": forward.get("config", {}),
                                "ports": desired}, on_member))
    for (network, address, owner), ports in wanted.items():
        writes.append(("post", f"networks/{network}/forwards",
                       {"listen_address": address, "description": FORWARD_DESCRIPTION, "ports": ports},
                       {"target": owner} if owner else None))
    return writes


def apply_forwards(
    api: LxdApi, tag: str, rules: Iterable[NatRule], targets: Mapping[str, str], listen: dict[str, str],
    location: str = "",
) -> bool:
    """Make the forward port entries tagged `tag` exactly `rules` (plan_forwards, from the forwards
    LXD lists now); return True if anything changed."""
    rules = list(rules)
    networks = {rule.intif for rule in rules} | set(_networks_with_tag(api, tag))
    forwards = {network: api.get(f"networks/{network}/forwards", {"recursion": "1"}) or [] for network in networks}
    writes = plan_forwards(tag, rules, targets, listen, location if api.clustered else "", forwards,
                           clustered=api.clustered)
    for method, path, body, params in writes:
        if method == "delete":
            api.delete(path, params)
        elif method == "put":
            api.put(path, body, params)
        else:
            api.post(path, body, params)
    return bool(writes)


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


def iptables_rules(tag: str, rules: Iterable[NatRule], targets: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """(table, rule arguments) for the DNAT and FORWARD rules of the iptables backend's rules."""
    planned = []
    for rule in rules:
        target = targets[rule.key]
        comment = ["-m", "comment", "--comment", f"{tag}:{rule.key}"]
        planned.append(("nat", ["PREROUTING", "-i", rule.extif, "-p", rule.proto, "-m", rule.proto,
                                "--dport", str(rule.extport), *comment, "-j", "DNAT",
                                "--to-destination", f"{target}:{rule.intport}"]))
        planned.append(("filter", ["FORWARD", "-d", f"{target}/32", "-i", rule.extif, "-o", rule.intif,
                                   "-p", rule.proto, "-m", rule.proto, "--dport", str(rule.intport),
                                   *comment, "-j", "ACCEPT"]))
    return planned


def apply_iptables(tag: str, rules: Iterable[NatRule], targets: Mapping[str, str]) -> bool:
    """Make the host's rules commented `tag` exactly the planned ones; True if anything changed."""
    planned = iptables_rules(tag, rules, targets)
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
    return [args for args in _marked_rules(table) if _value_after(args, "--comment").startswith(f"{tag}:")]


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

    def publish(self, api: LxdApi, tag: str, rules: list[NatRule], targets: Mapping[str, str],
                listen: dict[str, str], location: str) -> bool:
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

    def publish(self, api: LxdApi, tag: str, rules: list[NatRule], targets: Mapping[str, str],
                listen: dict[str, str], location: str) -> bool:
        if not api.has_extension("network_forward"):
            return False
        # A forward's ports are read, edited and written back whole: instances of one batch that
        # share a listen address would otherwise overwrite each other's ports.
        with _FORWARD_EDITS:
            return apply_forwards(api, tag, rules, targets, listen, location)


class IptablesRules(NatBackend):
    """The seed's DNAT and FORWARD rules on this machine's firewall (a local LXD only)."""

    name = "iptables"
    needs = ("extif", "intif")
    needs_address = True

    def check(self, api: LxdApi, rules: list[NatRule], where: str) -> None:
        check_iptables_rules(api, rules, where)

    def publish(self, api: LxdApi, tag: str, rules: list[NatRule], targets: Mapping[str, str],
                listen: dict[str, str], location: str) -> bool:
        return not api.remote.is_https and apply_iptables(tag, rules, targets)


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


def publish_nat(api: LxdApi, tag: str, rules: Iterable[NatRule], targets: Mapping[str, str],
                listen: dict[str, str], location: str) -> list[str]:
    """Publish `rules` with every backend outside the instance (removing what `tag` no longer
    declares); return the names of the backends that changed something."""
    rules = list(rules)
    return [backend.name for backend in BACKENDS.values()
            if backend.publish(api, tag, _of(backend, rules), targets, listen, location)]


def nat_targets(where: str, rules: Iterable[NatRule], view: NicView, networks: Mapping[str, ManagedNetwork]) -> dict[str, str]:
    """Each rule's target (rule key -> IPv4) for the backends that point at the instance (pure): its
    address on its NIC on the rule's `intif` network, as LXD sees that NIC (nics.nic_addresses).
    OptionError naming the instance, the rule, the network and the addresses refused otherwise."""
    targets = {}
    for rule in rules:
        if not BACKENDS[rule.backend].needs_address:
            continue
        label = f"{where}: nat {rule.key} (backend {rule.backend}, intif '{rule.intif}')"
        network = networks.get(rule.intif)
        if network is None or rule.intif not in view.networks:
            attached = ", ".join(f"'{name}'" for name in sorted(view.networks)) or "no managed network"
            raise OptionError(
                f"{label}: the instance has no NIC on managed network '{rule.intif}' (its NICs are on {attached}); "
                "NAT only points at an address LXD gives the instance on a network it is attached to. "
                "Fix: set intif to the managed network of the NIC to publish, or attach a NIC on that network."
            )
        addresses = view.on_network(rule.intif)
        if not addresses:
            interface = view.networks[rule.intif]
            held = [f"{address} ({why})" for name, address, why in view.refused if name == interface and "." in address]
            raise OptionError(
                f"{label}: no IPv4 address inside {network.describe()} on its NIC '{interface}': no DHCP lease, and "
                f"the NIC holds {', '.join(held) or 'no IPv4 address'}; NAT never points outside the instance's "
                f"network, at loopback, link-local or the host. Fix: let '{interface}' take its address from "
                f"'{rule.intif}' by DHCP (or set ipv4.address on the NIC device), then rerun."
            )
        targets[rule.key] = addresses[0]
    return targets


@dataclass(frozen=True)
class PublishedRule:
    """One forward port or iptables rule on the host that carries our mark, with its owner."""

    project: str
    instance: str
    key: str
    backend: str
    # forward: the network, listen address and (on a cluster) member of the forward, and the port's
    # description; iptables: the table and the rule's arguments as iptables-save lists them.
    network: str = ""
    listen: str = ""
    member: str = ""
    description: str = ""
    table: str = ""
    args: tuple[str, ...] = ()
    # forward: the project the network belongs to ("default", or one with features.networks=true).
    network_project: str = "default"

    @property
    def owner(self) -> tuple[str, str]:
        """(project, instance) of the instance that published it."""
        return (self.project, self.instance)

    def describe(self) -> str:
        """The rule as messages name it."""
        if self.backend == "forward":
            network = self.network if self.network_project == "default" else \
                f"{self.network}' of project '{self.network_project}"
            return f"forward port {self.key} on network '{network}' listen address {self.listen}"
        return f"iptables {self.table} rule {self.key} ({' '.join(self.args[:1])})"


@dataclass(frozen=True)
class StaleRule:
    """A published rule to remove, and why (its owner is gone, or no longer records it)."""

    rule: PublishedRule
    why: str

    def describe(self) -> str:
        """One line for the task's warnings."""
        return (f"{self.rule.describe()} of instance '{self.rule.instance}' in project '{self.rule.project}': "
                f"{self.why}")

    def as_dict(self) -> dict[str, str]:
        """What the task returns for it (nat_removed)."""
        return {"project": self.rule.project, "instance": self.rule.instance, "rule": self.rule.key,
                "backend": self.rule.backend, "where": self.rule.describe(), "why": self.why}


def parse_mark(mark: str) -> tuple[str, str, str] | None:
    """(project, instance, rule key) of a mark `mage-lxd:PROJECT/INSTANCE:KEY`, None if it is not one.

    A forward port's description is a tenant's to write: only a valid project and instance name
    make a mark, so an owner read is always GET /1.0/instances/NAME. Anything else is not ours and
    is left alone."""
    if not mark.startswith(MARK_PREFIX):
        return None
    owner, _colon, key = mark[len(MARK_PREFIX):].rpartition(":")
    project, _slash, instance = owner.partition("/")
    return (project, instance, key) if is_project_name(project) and is_instance_name(instance) and key else None


def recorded_nat(instance: Mapping[str, Any] | None) -> set[tuple[str, str]] | None:
    """(backend, rule key) of every rule an instance's user.mage.nat records; None when the instance
    is gone. A record that cannot be read (edited by hand, any shape or depth) records nothing."""
    if instance is None:
        return None
    raw = (instance.get("config") or {}).get("user.mage.nat")
    try:
        record = decode_record(raw) if isinstance(raw, str) else []
    except ValueError:  # not JSON, too long or too deep (records.RecordError)
        return set()
    found = set()
    for entry in record if isinstance(record, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("extport"), int):
            found.add((str(entry.get("backend") or DEFAULT_BACKEND), f"{entry.get('proto') or 'tcp'}-{entry['extport']}"))
    return found


def plan_stale_nat(published: Iterable[PublishedRule], owners: Mapping[tuple[str, str], Mapping[str, Any] | None]
                   ) -> list[StaleRule]:
    """The published rules whose owner is gone or no longer records them (pure). An owner missing
    from `owners` could not be read: its rules are kept."""
    stale = []
    for rule in published:
        if rule.owner not in owners:
            continue
        recorded = recorded_nat(owners[rule.owner])
        if recorded is None:
            stale.append(StaleRule(rule, "the instance no longer exists"))
        elif (rule.backend, rule.key) not in recorded:
            stale.append(StaleRule(rule, f"its user.mage.nat no longer records {rule.backend} rule {rule.key}"))
    return stale


def network_projects(projects: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """The projects whose networks are their own (pure, from GET /1.0/projects?recursion=1): the
    default project and each with features.networks=true (the others use the default project's)."""
    own = {project["name"] for project in projects or [] if isinstance(project, Mapping)
           and isinstance(project.get("name"), str) and project["name"]
           and str((project.get("config") or {}).get("features.networks", "")).lower() == "true"}
    return ["default", *sorted(own - {"default"})]


def read_published(api: LxdApi, networks: Mapping[str, Mapping[str, ManagedNetwork]]) -> list[PublishedRule]:
    """Every forward port and iptables rule with our mark on this server's managed networks,
    `networks` being {project: {name: network}} for each project that has networks of its own
    (reads only). iptables rules count only when they point into one of the default project's
    networks: LXD and Incus on one host share its firewall, and a rule of the other server is not
    ours to judge. Only those networks' host bridges carry the iptables backend's traffic; another
    project's networks are named and numbered by its tenant, who could make them look like the other
    server's."""
    found = []
    if api.has_extension("network_forward"):
        for project, name in sorted((project, name) for project, named in networks.items() for name in named):
            try:
                forwards = api.get(f"networks/{name}/forwards", {"recursion": "1", "project": project}) or []
            except RemoteError:
                continue  # a network type without forwards (macvlan, physical)
            for forward in forwards:
                for port in forward.get("ports") or []:
                    mark = parse_mark(str(port.get("description") or ""))
                    if mark:
                        found.append(PublishedRule(*mark, backend="forward", network=name, network_project=project,
                                                   listen=str(forward.get("listen_address")),
                                                   member=str(forward.get("location") or "") if api.clustered else "",
                                                   description=str(port.get("description"))))
    if not api.remote.is_https and not api.clustered and shutil.which("iptables-save"):
        default = list((networks.get("default") or {}).values())
        for table in ("nat", "filter"):
            for args in _marked_rules(table):
                mark = parse_mark(_value_after(args, "--comment"))
                if mark and _points_into(args, default):
                    found.append(PublishedRule(*mark, backend="iptables", table=table, args=tuple(args)))
    return found


def read_owners(api: LxdApi, published: Iterable[PublishedRule]) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Each owner's instance (None: it does not exist); an owner that cannot be read is left out."""
    owners: dict[tuple[str, str], dict[str, Any] | None] = {}
    for project, name in sorted({rule.owner for rule in published}):
        try:
            owners[(project, name)] = api.get(f"instances/{quote(name, safe='')}", {"project": project}) or {}
        except NotFoundError:
            owners[(project, name)] = None
        except RemoteError:
            continue
    return owners


def remove_stale_nat(api: LxdApi, stale: Iterable[StaleRule]) -> list[str]:
    """Remove the stale rules (the one executor of plan_stale_nat); return what could not be removed."""
    problems = []
    by_forward: dict[tuple[str, str, str, str], set[str]] = {}
    for item in stale:
        rule = item.rule
        if rule.backend == "forward":
            by_forward.setdefault((rule.network_project, rule.network, rule.listen, rule.member),
                                  set()).add(rule.description)
            continue
        try:
            _iptables(rule.table, "-D", list(rule.args))
        except RemoteError as exc:
            problems.append(f"{item.describe()}: removing it failed: {exc}")
    with _FORWARD_EDITS:
        for (project, network, listen, member), descriptions in sorted(by_forward.items()):
            params = {"project": project, **({"target": member} if member else {})}
            path = f"networks/{network}/forwards/{listen}"
            try:
                forward, etag = api.get_with_etag(path, params)
                ports = [port for port in forward.get("ports") or [] if port.get("description") not in descriptions]
                if not ports and forward.get("description") == FORWARD_DESCRIPTION:
                    api.delete(path, params)
                else:
                    api.put(path, {"description": forward.get("description", ""), "config": forward.get("config", {}),
                                   "ports": ports}, params, etag=etag)
            except RemoteError as exc:
                problems.append(f"forward {listen} on network '{network}' of project '{project}': removing stale ports "
                                f"failed: {exc}")
    return problems


def _marked_rules(table: str) -> list[list[str]]:
    listing = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=True).stdout
    return [_split_rule(line[3:]) for line in listing.splitlines()
            if line.startswith("-A ") and (f'--comment "{MARK_PREFIX}' in line or f"--comment {MARK_PREFIX}" in line)]


def _value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1] if flag in args[:-1] else ""


def _points_into(args: list[str], networks: Iterable[ManagedNetwork]) -> bool:
    # DNAT: its destination inside a network's subnet; FORWARD: out through one of the networks.
    networks = list(networks)
    if _value_after(args, "-o") in {network.name for network in networks}:
        return True
    destination = _value_after(args, "--to-destination").rpartition(":")[0]
    try:
        address = ipaddress.ip_address(destination)
    except ValueError:
        return False
    return any(address in gateway.network for network in networks for gateway in network.gateways
               if gateway.version == address.version)
