"""One snapshot of an LXD server's instances, taken with a constant number of requests.

`recursion=1` gives every instance's config, devices, profiles, status and location in one
request, but no addresses; `recursion=2` would add them at the cost of LXD gathering state per
instance (about 10x slower). Addresses come instead from the managed networks' DHCP leases: two
requests per (project, network) in use (the network, its leases), matched to NICs by MAC
address. Only running instances with a NIC on a managed network that has no lease (a static
address set inside, a lease list that cannot be read) or a NIC on an unmanaged network (a plain
bridge, macvlan) cost a state request each; there only that NIC's own interface counts.

A snapshot is plain JSON-able data, so the inventory cache can store it as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .cluster import member_statuses
from .errors import MageLxdError, NotFoundError, OptionError
from .lxd_api import LxdApi
from .nics import ManagedNetwork, NicView, attached_networks, managed_networks, nic_addresses
from .values import INSTANCE_TYPES

ALL_PROJECTS = "*"
STATUSES = ("running", "stopped", "frozen", "error")
ADDRESS_SOURCES = ("leases", "state")

Instance = dict[str, Any]


@dataclass(frozen=True)
class SnapshotFilters:
    """Which instances to read; empty means no restriction on that field."""

    statuses: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choices("filters.status", self.statuses, STATUSES)
        _check_choices("filters.type", self.types, INSTANCE_TYPES)

    def matches(self, instance: Mapping[str, Any]) -> bool:
        """True when `instance` (an LXD instance object) passes every filter."""
        if self.statuses and str(instance.get("status", "")).lower() not in self.statuses:
            return False
        if self.types and instance.get("type", "container") not in self.types:
            return False
        if self.profiles and not set(self.profiles) & set(instance.get("profiles") or ()):
            return False
        return True

    def server_filter(self) -> str | None:
        """The LXD `filter=` expression for status and type, or None when it cannot be exact.

        LXD 5.0 has no parentheses in filters, so a disjunction is sent only when it is the
        whole expression; whatever is not sent is applied on our side (it always is anyway).
        """
        clauses = []
        if self.statuses:
            clauses.append([f"status eq {status.capitalize()}" for status in self.statuses])
        if self.types:
            clauses.append([f"type eq {kind}" for kind in self.types])
        if not clauses:
            return None
        if len(clauses) == 1:
            return " or ".join(clauses[0])
        singles = [clause[0] for clause in clauses if len(clause) == 1]
        return " and ".join(singles) if singles else None


def _check_choices(option: str, values: Iterable[str], allowed: tuple[str, ...]) -> None:
    bad = [value for value in values if value not in allowed]
    if bad:
        raise OptionError(f"{option}: unknown value(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")


def take_snapshot(
    api: LxdApi,
    projects: list[str],
    filters: SnapshotFilters = SnapshotFilters(),
    address_source: str = "leases",
) -> dict[str, Any]:
    """Read the instances of `projects` (["*"] = all) on one remote, with their addresses.

    Returns {"remote", "server": {...}, "instances": [instance + "addresses"]}. The number of
    requests does not depend on the number of instances (see the module docstring). Addresses are
    LXD's view of each instance's NICs (nics.nic_addresses), never any interface it made itself.
    """
    if address_source not in ADDRESS_SOURCES:
        raise OptionError(f"address_source: '{address_source}' is not one of {', '.join(ADDRESS_SOURCES)}")
    instances = [item for item in _read_instances(api, projects, filters) if filters.matches(item)]
    running = [item for item in instances if item.get("status") == "Running"]
    named: dict[str, set[str]] = {}
    for item in running:
        named.setdefault(_key(item)[0], set()).update(attached_networks(item))
    networks = {project: _managed_networks(api, project, named[project]) for project in sorted(named)}
    use_leases = address_source == "leases" and api.has_extension("network_leases")
    leases = _read_leases(api, running, networks) if use_leases else {}
    addresses: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = {}
    for item in running:
        project = _key(item)[0]
        view = nic_addresses(item, networks[project], leases.get(project))
        if not use_leases or _needs_state(item, networks[project], leases.get(project) or {}, view):
            view = nic_addresses(item, networks[project], leases.get(project), _read_state(api, item))
        addresses[_key(item)] = view.addresses
    # One more request on a cluster: whether each instance's member is online.
    members = member_statuses(api)
    for item in instances:
        item["addresses"] = addresses.get(_key(item), {})
        if members:
            item["location_status"] = members.get(str(item.get("location") or ""), "unknown")
    return {
        "remote": api.remote.name,
        # cli: the client a Fix hint names (lxc or incus).
        "server": {"version": api.server_version, "clustered": api.clustered, "cli": api.kind.cli},
        "instances": instances,
    }


def _key(instance: Mapping[str, Any]) -> tuple[str, str]:
    return (str(instance.get("project") or "default"), str(instance["name"]))


def _read_instances(api: LxdApi, projects: list[str], filters: SnapshotFilters) -> list[Instance]:
    params: dict[str, str] = {"recursion": "1"}
    expression = filters.server_filter()
    if expression and api.has_extension("api_filtering"):
        params["filter"] = expression
    if not api.has_extension("projects"):
        if projects not in ([ALL_PROJECTS], ["default"]):
            raise OptionError(
                f"projects: {api.describe()} has no projects; use the default project"
            )
        return _tag_project(api.get("instances", params), "default")
    wanted = None if projects == [ALL_PROJECTS] else projects
    if wanted is not None:
        _check_projects_exist(api, wanted)
    if wanted is not None and len(wanted) == 1:
        return _tag_project(api.get("instances", {**params, "project": wanted[0]}), wanted[0])
    if api.has_extension("instance_all_projects"):
        found = api.get("instances", {**params, "all-projects": "true"}) or []
        return [item for item in found if wanted is None or item.get("project", "default") in wanted]
    names = wanted if wanted is not None else _project_names(api)
    return [item for name in names for item in _tag_project(api.get("instances", {**params, "project": name}), name)]


def _tag_project(found: list[Instance] | None, project: str) -> list[Instance]:
    # Servers without all-projects leave "project" out of instance objects.
    for item in found or []:
        item.setdefault("project", project)
    return list(found or [])


def _project_names(api: LxdApi) -> list[str]:
    return [url.rstrip("/").rsplit("/", 1)[-1] for url in api.get("projects") or []]


def _check_projects_exist(api: LxdApi, wanted: list[str]) -> None:
    # LXD answers an unknown project's instance list with [], which would hide a typo.
    known = _project_names(api)
    missing = [name for name in wanted if name not in known]
    if missing:
        raise OptionError(
            f"projects: {', '.join(missing)} not found on {api.describe()}; "
            f"it has: {', '.join(sorted(known))}. Fix the name, or create it ({api.kind.cli} project create NAME)."
        )


def _managed_networks(api: LxdApi, project: str, names: Iterable[str]) -> dict[str, ManagedNetwork]:
    """The managed networks among `names` (the ones running instances' NICs are on), one request
    each: the whole list with recursion=1 describes every host interface, one veth per running
    container, each with what uses it (measured on Incus 6.0 with about 300 containers: 1.6 s,
    where one network took 0.24 s). A network this client may not read vouches for no address."""
    found: dict[str, ManagedNetwork] = {}
    for name in sorted(names):
        try:
            found.update(managed_networks([api.get(f"networks/{quote(name, safe='')}", {"project": project})]))
        except MageLxdError:
            continue
    return found


def _read_leases(
    api: LxdApi, running: list[Instance], networks: Mapping[str, Mapping[str, ManagedNetwork]]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{project: {network: leases}} for the managed networks running instances' NICs are on, one
    request per (project, network); a list that cannot be read is left out."""
    wanted = sorted({(project, network) for item in running for project in [_key(item)[0]]
                     for network in nic_addresses(item, networks[project]).networks})
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for project, network in wanted:
        try:
            found.setdefault(project, {})[network] = list(
                api.get(f"networks/{network}/leases", {"project": project}) or [])
        except MageLxdError:
            # Not readable here, or (on a cluster) one member that holds part of the leases is down,
            # which fails the whole list: those instances' own state answers instead.
            continue
    return found


def _needs_state(item: Instance, networks: Mapping[str, ManagedNetwork], leases: Mapping[str, Any],
                 view: NicView) -> bool:
    # Leases covered every NIC on a managed network, and it has no other NIC: no state request.
    return bool(view.unmanaged) or any(network not in leases or not view.addresses.get(interface)
                                       for network, interface in view.networks.items())


def _read_state(api: LxdApi, instance: Instance) -> dict[str, Any]:
    project, name = _key(instance)
    try:
        return api.get(f"instances/{name}/state", {"project": project}) or {}
    except NotFoundError:  # deleted between the two requests
        return {}
    except MageLxdError:
        # On a cluster, its member may have gone down since the list was read: listed, without
        # addresses. Anywhere else a failure here is a real one.
        if not api.clustered:
            raise
        return {}
