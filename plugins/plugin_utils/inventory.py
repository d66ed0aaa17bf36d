"""Turn LXD snapshots into Ansible inventory: host names, groups and host variables.

Pure functions over snapshot data (see mage_lxd.snapshot); the inventory plugin only feeds them
and hands the result to Ansible. Values read from LXD are returned as plain data; the plugin marks
them unsafe before Ansible sees them, so nothing read from LXD is ever templated.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .cluster import member_name
from .errors import OptionError
from .masking import masked_config
from .nics import addresses_by_family, attached_networks
from .records import RecordError, decode_record
from .remote import Remote

GROUP_BY_CHOICES = ("project", "profile", "status", "os", "release", "type", "location", "network", "remote")
DEFAULT_GROUP_BY = ("project", "profile", "status", "os", "release", "type", "location", "network")
HOSTNAME_FIELDS = ("name", "project", "remote")
ADDRESS_FAMILIES = ("inet", "inet6")
# The connection every host gets, by its FQCN: it resolves wherever the collection does, the checkout too.
CONNECTION_PLUGIN = "mage.lxd.mage_lxd"
MAGE_CONFIG_PREFIX = "user.mage."
# Config that is LXD's bookkeeping or already exposed as its own variable.
HIDDEN_CONFIG_PREFIXES = ("volatile.", "image.", MAGE_CONFIG_PREFIX)
# The names ansible-core takes for the controller (ansible.constants.LOCALHOST): a host of one of
# these names is what `hosts: localhost` and `delegate_to: localhost` run on.
CONTROLLER_NAMES = ("127.0.0.1", "localhost", "::1")
# Group keys whose values live in a project (profiles, and networks of projects with their own):
# a profile `db` of one project is not the profile `db` of another. And those whose values come
# from the instance's own config (image.os, image.release), which whoever may edit it sets: a
# tenant's `image.os debian` must not put its instance in the group an operator's play targets.
PROJECT_SCOPED_KEYS = ("profile", "network", "os", "release")
# What a host whose name is the controller's or shared is named instead, in this order: instance
# names hold no dot, so neither can be a name of "{name}" or one of another instance.
FALLBACK_HOSTNAME_FORMATS = ("{project}.{name}", "{remote}.{project}.{name}")
# The connection's own variables, the same for every instance of a remote (or of a project): each goes
# on a group whose members all hold it with one value. lxd_* variables stay on each host: group_vars
# files outrank an inventory's group variables, and playbooks set lxd_project there
# (inventory/group_vars/all.yml).
SHARED_CONNECTION_KEYS = ("mage_lxd_remote", "mage_lxd_url", "mage_lxd_client_cert", "mage_lxd_client_key",
                          "mage_lxd_server_cert", "mage_lxd_validate_certs", "mage_lxd_project")
# The group_by keys whose groups may carry shared connection variables, besides the default group.
SHARING_GROUP_KEYS = ("project", "remote")
FIX_HOSTNAME = ("Fix: set hostname_format to '{project}.{name}' ('{remote}.{project}.{name}' across remotes), "
                "which cannot collide (instance names hold no dot), or rename the instance.")
_UNSAFE_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")
_MAGE_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class InventoryOptions:
    """How hosts are named and grouped; validated on creation."""

    default_group: str = "lxd"
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    hostname_format: str = "{name}"
    preferred_address_family: str = "inet"
    set_ansible_host: bool = True
    # The projects option as given: it, not what the server holds, decides group scoping.
    projects: tuple[str, ...] = ("default",)

    def __post_init__(self) -> None:
        if not self.default_group or safe_group_name(self.default_group) != self.default_group:
            raise OptionError(
                f"default_group: '{self.default_group}' is not a valid group name (letters, digits, _)"
            )
        unknown = [key for key in self.group_by if key not in GROUP_BY_CHOICES]
        if unknown:
            raise OptionError(
                f"group_by: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(GROUP_BY_CHOICES)}"
            )
        if self.preferred_address_family not in ADDRESS_FAMILIES:
            raise OptionError(
                f"preferred_address_family: '{self.preferred_address_family}' is not one of "
                f"{', '.join(ADDRESS_FAMILIES)}"
            )
        check_hostname_format(self.hostname_format)

    @property
    def scoped_groups(self) -> bool:
        """Groups of what belongs to a project (profiles, networks) or is said by whoever may edit an
        instance (image.os, image.release) carry the project when more than one project is read."""
        return len(self.projects) != 1 or self.projects[0] == "*"


@dataclass
class PlannedHost:
    """One inventory host: its name, the groups it joins and its variables."""

    name: str
    groups: list[str]
    variables: dict[str, Any]
    # Why parts of the instance's data were left out; each message names it.
    warnings: list[str] = field(default_factory=list)
    # Keys of `variables` that one of `groups` carries with the same value (InventoryPlan.group_vars).
    shared: set[str] = field(default_factory=set)

    @property
    def own_variables(self) -> dict[str, Any]:
        """The variables set on the host itself: all but the ones its groups carry."""
        return {key: value for key, value in self.variables.items() if key not in self.shared}

    @property
    def where(self) -> str:
        """The instance this host is, for messages."""
        return (f"instance '{self.variables['lxd_name']}' in project '{self.variables['lxd_project']}' "
                f"on '{self.variables['lxd_remote']}'")


@dataclass
class InventoryPlan:
    """What the inventory plugin adds: hosts in order, variables set on groups, and warnings
    about instances (or parts of them) left out."""

    hosts: list[PlannedHost] = field(default_factory=list)
    group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def added_host(result: Mapping[str, Any], remote: Remote, groups: list[str],
               known: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The add_host entry of one instance result of mage_lxd_instance (name, groups, the variables the
    mage_lxd connection reaches it by), or None: it failed or is absent, or the run's inventory already
    holds it exactly so (`known`, its hostvars there; None when the inventory lacks it), since Ansible
    counts an add_host that changes nothing as a change (the mage_lxd inventory on a second run)."""
    if result.get("failed") or result.get("status") in ("absent", None):
        return None
    host_vars = {"ansible_connection": CONNECTION_PLUGIN, "mage_lxd_instance": result["name"],
                 "mage_lxd_project": result["project"], **remote.connection_vars()}
    if result.get("address"):
        host_vars["ansible_host"] = result["address"]
    # The remote's name is only a label (the inventory's may differ from this task's); where and how
    # to connect is what must match.
    if known is not None and all(group in known.get("group_names", []) for group in groups) and all(
            known.get(key) == value for key, value in host_vars.items() if key != "mage_lxd_remote"):
        return None
    return {"host_name": result["name"], "groups": groups, "host_vars": host_vars}


def safe_group_name(name: str) -> str:
    """A valid Ansible group name for `name`: anything but letters, digits and _ becomes _."""
    return _UNSAFE_GROUP_CHARS.sub("_", name)


def check_hostname_format(fmt: str) -> None:
    """Allow only plain {name}, {project} and {remote} fields in hostname_format."""
    try:
        fields = [(name, spec, conv) for _text, name, spec, conv in string.Formatter().parse(fmt) if name is not None]
    except ValueError as exc:
        raise OptionError(f"hostname_format: '{fmt}' is not a valid format ({exc})") from None
    for name, spec, conv in fields:
        if name not in HOSTNAME_FIELDS or spec or conv:
            raise OptionError(
                f"hostname_format: '{{{name}}}' is not allowed in '{fmt}'; use only "
                + ", ".join("{" + key + "}" for key in HOSTNAME_FIELDS)
            )
    if not fields or "name" not in {name for name, _s, _c in fields}:
        raise OptionError(f"hostname_format: '{fmt}' must contain {{name}}")


def plan_inventory(
    snapshots: Iterable[Mapping[str, Any]], remotes: Mapping[str, Remote], options: InventoryOptions
) -> InventoryPlan:
    """Build the hosts, groups and variables for every instance of every snapshot.

    Nothing read from the server decides which host is the controller, or merges two instances
    or two groups: an instance whose host name is the controller's or another's is named
    '{project}.{name}' instead, and a group name two values would share is made for neither,
    each with a warning.
    """
    plan = InventoryPlan(group_vars={options.default_group: {"ansible_connection": CONNECTION_PLUGIN}})
    candidates = [plan_host(instance, remotes[snapshot["remote"]], options, cli=_cli(snapshot))
                  for snapshot in snapshots for instance in snapshot["instances"]]
    for host in candidates:
        plan.warnings.extend(host.warnings)
    plan.hosts = _distinct_hosts(candidates, options, plan.warnings)
    owners = _drop_shared_groups(plan.hosts, options, plan.warnings)
    sharing = [options.default_group] + [name for name, claims in owners.items()
                                         if len(claims) == 1 and next(iter(claims))[0] in SHARING_GROUP_KEYS]
    share_connection_variables(plan, sharing)
    return plan


def share_connection_variables(plan: InventoryPlan, groups: Iterable[str]) -> None:
    """Move each SHARED_CONNECTION_KEYS variable onto the first of `groups` whose every member holds
    it with one value; a host keeps its own copy of a key none of its groups carries."""
    members: dict[str, list[PlannedHost]] = {}
    for host in plan.hosts:
        for name in host.groups:
            members.setdefault(name, []).append(host)
    for name in groups:
        hosts = members.get(name)
        if not hosts:
            continue
        for key in SHARED_CONNECTION_KEYS:
            if key not in hosts[0].variables or all(key in host.shared for host in hosts):
                continue
            value = hosts[0].variables[key]
            if all(key in host.variables and _same(host.variables[key], value) for host in hosts):
                plan.group_vars.setdefault(name, {})[key] = value
                for host in hosts:
                    host.shared.add(key)


def _same(one: Any, other: Any) -> bool:
    # True == 1 in Python; a boolean and a number are never one value here. (Ansible hands back
    # subclasses of str, tagged or unsafe, so types are not compared.)
    return isinstance(one, bool) == isinstance(other, bool) and one == other


def settable_group_variables(planned: Mapping[str, Any], current: Mapping[str, Any] | None) -> dict[str, Any]:
    """What of a group's planned variables to set, given the variables the group already has when
    another inventory source made it (`current`), else None: such a group may hold that source's
    hosts, so it gets no shared connection variable it does not carry with the same value already.
    ansible_connection is always set."""
    return {key: value for key, value in planned.items()
            if key not in SHARED_CONNECTION_KEYS or current is None
            or (key in current and _same(current[key], value))}


def stray_shared_keys(host: PlannedHost, group_vars: Iterable[Mapping[str, Any]]) -> list[str]:
    """The shared keys of `host` that the variables of the groups it is in (`group_vars`, from any
    inventory source) do not all give with its own value: the host must hold those itself."""
    stray = []
    for key in sorted(host.shared):
        values = [variables[key] for variables in group_vars if key in variables]
        if not values or not all(_same(value, host.variables[key]) for value in values):
            stray.append(key)
    return stray


def _distinct_hosts(candidates: list[PlannedHost], options: InventoryOptions, warnings: list[str]) -> list[PlannedHost]:
    """Rename each host whose name is the controller's, or shared with another, to the next of
    FALLBACK_HOSTNAME_FORMATS that changes it (left out when none is left), until names are distinct."""
    formats = {id(host): [options.hostname_format, *FALLBACK_HOSTNAME_FORMATS] for host in candidates}
    hosts = list(candidates)
    while True:
        claimants: dict[str, list[PlannedHost]] = {}
        for host in hosts:
            claimants.setdefault(host.name, []).append(host)
        clashes = [group for name, group in claimants.items() if name in CONTROLLER_NAMES or len(group) > 1]
        if not clashes:
            return hosts
        for group in clashes:
            renamed = {id(host): _next_name(host, formats[id(host)]) for host in group}
            warnings.append(_clash_warning(group, renamed, options))
            for host in group:
                new_name = renamed[id(host)]
                if new_name is None:
                    hosts.remove(host)
                else:
                    host.name = new_name


def _next_name(host: PlannedHost, formats: list[str]) -> str | None:
    """The host's name under the next format in `formats` that gives another name (dropping the
    ones used), or None when none is left."""
    while len(formats) > 1:
        formats.pop(0)
        name = formats[0].format(name=host.variables["lxd_name"], project=host.variables["lxd_project"],
                                 remote=host.variables["lxd_remote"])
        if name != host.name:
            return name
    return None


def _clash_warning(group: list[PlannedHost], renamed: Mapping[int, str | None], options: InventoryOptions) -> str:
    name = group[0].name
    if name in CONTROLLER_NAMES:
        reason = "is the controller's (plays on localhost, and tasks delegated to it, would run in the instance)"
    else:
        reason = "would be given to more than one instance (they would be one host)"
    outcomes = sorted(
        f"{host.where} is the host '{renamed[id(host)]}'" if renamed[id(host)] else f"{host.where} is left out of the inventory"
        for host in group)
    return f"the host name '{name}' (hostname_format '{options.hostname_format}') {reason}: " + "; ".join(outcomes) + ". " + FIX_HOSTNAME


def _drop_shared_groups(hosts: list[PlannedHost], options: InventoryOptions,
                        warnings: list[str]) -> dict[str, set[tuple[Any, ...]]]:
    """Take every host out of a group name that two different values would share; return what each
    group name stands for (more than one owner: a dropped name)."""
    owners: dict[str, set[tuple[Any, ...]]] = {options.default_group: {("default_group",)}}
    members: dict[str, list[PlannedHost]] = {}
    for host in hosts:
        for name, owner in _group_claims(host.variables, options):
            owners.setdefault(name, set()).add(owner)
            members.setdefault(name, []).append(host)
    for name, claims in owners.items():
        if len(claims) < 2:
            continue
        values = sorted(_describe_owner(owner) for owner in claims)
        if name == options.default_group:
            # The operator's group stays as it is: every host is in it anyway.
            warnings.append(
                f"group '{name}' is the default_group; " + " and ".join(v for v in values if v != "the default_group")
                + " of " + ", ".join(sorted(host.where for host in members.get(name, [])))
                + " makes no group of its own (group_by). Fix: choose another default_group.")
            continue
        warnings.append(
            f"group '{name}' would hold " + " and ".join(values)
            + "; it is left out for " + ", ".join(sorted(host.where for host in members.get(name, [])))
            + " (group_by). Fix: rename one of them, or take its key out of group_by and group with "
            "keyed_groups.")
        for host in members.get(name, []):
            host.groups = [group for group in host.groups if group != name]
    return owners


def _describe_owner(owner: tuple[Any, ...]) -> str:
    if owner == ("default_group",):
        return "the default_group"
    key, project, value = owner
    shown = "/".join(value) if isinstance(value, tuple) else value
    return f"{key} '{shown}'" + (f" of project '{project}'" if project is not None else "")


def _cli(snapshot: Mapping[str, Any]) -> str:
    # Snapshots cached before the cli was recorded name LXD's.
    return str((snapshot.get("server") or {}).get("cli") or "lxc")


def plan_host(instance: Mapping[str, Any], remote: Remote, options: InventoryOptions, cli: str = "lxc") -> PlannedHost:
    """The inventory host for one LXD instance; `cli` is the client its Fix hints name."""
    variables, warnings = describe_instance(instance, remote, options, cli)
    name = options.hostname_format.format(
        name=instance["name"], project=variables["lxd_project"], remote=remote.name
    )
    return PlannedHost(name=name, groups=host_groups(variables, options), variables=variables, warnings=warnings)


def host_variables(instance: Mapping[str, Any], remote: Remote, options: InventoryOptions) -> dict[str, Any]:
    """Every variable the inventory sets for one instance (see the plugin's documentation)."""
    return describe_instance(instance, remote, options)[0]


def describe_instance(
    instance: Mapping[str, Any], remote: Remote, options: InventoryOptions, cli: str = "lxc"
) -> tuple[dict[str, Any], list[str]]:
    """host_variables() for one instance, and a warning for each user.mage.* record left out
    (its Fix names the client `cli`)."""
    config: Mapping[str, str] = instance.get("expanded_config") or instance.get("config") or {}
    project = str(instance.get("project") or "default")
    ipv4, ipv6 = addresses_by_family(instance.get("addresses") or {})
    variables: dict[str, Any] = {
        # What the mage_lxd connection plugin reads; ansible_mage_lxd_* vars override each one.
        "mage_lxd_instance": instance["name"],
        "mage_lxd_project": project,
        **remote.connection_vars(),
        "lxd_name": instance["name"],
        "lxd_project": project,
        "lxd_remote": remote.name,
        "lxd_status": str(instance.get("status", "")).lower(),
        "lxd_type": instance.get("type", "container"),
        "lxd_profiles": list(instance.get("profiles") or []),
        "lxd_location": str(instance.get("location") or ""),
        # On a cluster: the member's status (online, offline, evacuated...); "" off a cluster.
        "lxd_location_status": str(instance.get("location_status") or ""),
        "lxd_architecture": instance.get("architecture", ""),
        "lxd_description": instance.get("description", ""),
        "lxd_ephemeral": bool(instance.get("ephemeral", False)),
        "lxd_created_at": instance.get("created_at", ""),
        "lxd_image_os": config.get("image.os", ""),
        "lxd_image_release": config.get("image.release", ""),
        "lxd_image_description": config.get("image.description", ""),
        "lxd_networks": attached_networks(instance),
        "lxd_ipv4": ipv4,
        "lxd_ipv6": ipv6,
        # Secret values (environment.*, cloud-init) are never exposed: the cache and --list would print them.
        "lxd_config": masked_config({
            key: value for key, value in config.items() if not key.startswith(HIDDEN_CONFIG_PREFIXES)
        }),
    }
    address, network = vouched_address(instance.get("addresses") or {}, options.preferred_address_family)
    variables["lxd_address"] = address
    # The managed network whose subnet holds lxd_address; "" when no managed network vouches for it.
    variables["lxd_address_network"] = network
    if address and options.set_ansible_host:
        variables["ansible_host"] = address
    # One variable of the inventory's own: an instance's config can never name (and so override) a
    # connection or Ansible variable, whatever keys someone sets on it.
    variables["lxd_mage"], refused = mage_variables(config)
    where = f"instance '{instance['name']}' in project '{project}' on '{remote.name}'"
    warnings = [
        f"{where}: {key} {reason}, so it is left out of lxd_mage (the rest of the inventory is unaffected). "
        f"Fix: correct or remove it ({cli} config unset {instance['name']} {key} --project {project})."
        for key, reason in refused.items()
    ]
    return variables, warnings


def vouched_address(addresses: Mapping[str, list[Mapping[str, str]]], family: str) -> tuple[str, str]:
    """(address, network): the preferred address among those a managed network vouches for (see
    nics.nic_addresses), else among the addresses of NICs on unmanaged networks (network "")."""
    for vouched in (True, False):
        chosen = {interface: [entry for entry in entries if bool(entry.get("network")) == vouched]
                  for interface, entries in addresses.items()}
        address = preferred_address(*addresses_by_family(chosen), family)
        if address:
            network = next(str(entry.get("network") or "") for entries in chosen.values() for entry in entries
                           if entry["address"] == address)
            return address, network
    return "", ""


def preferred_address(ipv4: Mapping[str, list[str]], ipv6: Mapping[str, list[str]], family: str) -> str:
    """The first address of the preferred family (interfaces in name order), else of the other."""
    order = (ipv4, ipv6) if family == "inet" else (ipv6, ipv4)
    for by_interface in order:
        for interface in sorted(by_interface):
            if by_interface[interface]:
                return by_interface[interface][0]
    return ""


def mage_variables(config: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Decode `user.mage.<key>` config into {<key>: value} (JSON when it parses), for `lxd_mage`;
    and {config key: why} for the records refused for their size or depth (records.decode_record)."""
    found: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for key, raw in config.items():
        if not key.startswith(MAGE_CONFIG_PREFIX):
            continue
        suffix = key[len(MAGE_CONFIG_PREFIX):]
        if not _MAGE_KEY.fullmatch(suffix):
            continue
        try:
            value: Any = decode_record(raw)
        except RecordError as exc:
            refused[key] = str(exc)
            continue
        except (TypeError, ValueError):
            value = raw
        found[re.sub(r"[.-]", "_", suffix)] = value
    return found, refused


def host_groups(variables: Mapping[str, Any], options: InventoryOptions) -> list[str]:
    """The groups a host joins: the default group, then one per group_by key that applies."""
    names = [options.default_group]
    for name, _owner in _group_claims(variables, options):
        if name not in names:
            names.append(name)
    return names


def _group_claims(variables: Mapping[str, Any], options: InventoryOptions) -> list[tuple[str, tuple[Any, ...]]]:
    """(group name, what it stands for) for each group_by group of a host. What it stands for is
    (key, project or None, raw value): two of those that share one name are two different things."""
    os_name, release = variables["lxd_image_os"], variables["lxd_image_release"]
    values: dict[str, list[Any]] = {
        "project": [variables["lxd_project"]],
        "profile": list(variables["lxd_profiles"]),
        "status": [variables["lxd_status"]],
        "os": [os_name],
        "release": [(os_name, release) if os_name and release else ""],
        "type": [variables["lxd_type"]],
        "location": [member_name(variables["lxd_location"])],
        "network": list(variables["lxd_networks"]),
        "remote": [variables["lxd_remote"]],
    }
    claims = []
    for key in options.group_by:
        scoped = options.scoped_groups and key in PROJECT_SCOPED_KEYS
        project = variables["lxd_project"] if scoped else None
        for value in values[key]:
            if not value:
                continue
            shown = "_".join(value) if isinstance(value, tuple) else str(value)
            name = safe_group_name(f"{key}_{project}__{shown}" if scoped else f"{key}_{shown}")
            claims.append((name, (key, project, value)))
    return claims
