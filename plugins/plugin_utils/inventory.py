"""Turn LXD snapshots into Ansible inventory: host names, groups and host variables.

Pure functions over snapshot data (see mage_lxd.snapshot); the inventory plugin only feeds them
and hands the result to Ansible. Values read from LXD are returned as plain data; the plugin marks
them unsafe before Ansible sees them, so nothing read from LXD is ever templated.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .cluster import member_name
from .errors import OptionError
from .nics import addresses_by_family, attached_networks
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


@dataclass
class PlannedHost:
    """One inventory host: its name, the groups it joins and its variables."""

    name: str
    groups: list[str]
    variables: dict[str, Any]


@dataclass
class InventoryPlan:
    """What the inventory plugin adds: hosts in order, and variables set on groups."""

    hosts: list[PlannedHost] = field(default_factory=list)
    group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    """Build the hosts, groups and variables for every instance of every snapshot."""
    plan = InventoryPlan(group_vars={options.default_group: {"ansible_connection": CONNECTION_PLUGIN}})
    owners: dict[str, str] = {}
    for snapshot in snapshots:
        remote = remotes[snapshot["remote"]]
        for instance in snapshot["instances"]:
            host = plan_host(instance, remote, options)
            where = f"instance '{instance['name']}' in project '{host.variables['lxd_project']}' on '{remote.name}'"
            if host.name in owners:
                raise OptionError(
                    f"hostname_format '{options.hostname_format}' gives the host name '{host.name}' to "
                    f"both {owners[host.name]} and {where}. Fix: set hostname_format to "
                    "'{project}-{name}' (or '{remote}-{project}-{name}' across remotes)."
                )
            owners[host.name] = where
            plan.hosts.append(host)
    return plan


def plan_host(instance: Mapping[str, Any], remote: Remote, options: InventoryOptions) -> PlannedHost:
    """The inventory host for one LXD instance."""
    variables = host_variables(instance, remote, options)
    name = options.hostname_format.format(
        name=instance["name"], project=variables["lxd_project"], remote=remote.name
    )
    return PlannedHost(name=name, groups=host_groups(variables, options), variables=variables)


def host_variables(instance: Mapping[str, Any], remote: Remote, options: InventoryOptions) -> dict[str, Any]:
    """Every variable the inventory sets for one instance (see the plugin's documentation)."""
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
        "lxd_config": {
            key: value for key, value in config.items() if not key.startswith(HIDDEN_CONFIG_PREFIXES)
        },
    }
    address = preferred_address(ipv4, ipv6, options.preferred_address_family)
    variables["lxd_address"] = address
    if address and options.set_ansible_host:
        variables["ansible_host"] = address
    # One variable of the inventory's own: an instance's config can never name (and so override) a
    # connection or Ansible variable, whatever keys someone sets on it.
    variables["lxd_mage"] = mage_variables(config)
    return variables


def preferred_address(ipv4: Mapping[str, list[str]], ipv6: Mapping[str, list[str]], family: str) -> str:
    """The first address of the preferred family (interfaces in name order), else of the other."""
    order = (ipv4, ipv6) if family == "inet" else (ipv6, ipv4)
    for by_interface in order:
        for interface in sorted(by_interface):
            if by_interface[interface]:
                return by_interface[interface][0]
    return ""


def mage_variables(config: Mapping[str, str]) -> dict[str, Any]:
    """Decode `user.mage.<key>` config into {<key>: value} (JSON when it parses), for `lxd_mage`."""
    found: dict[str, Any] = {}
    for key, raw in config.items():
        if not key.startswith(MAGE_CONFIG_PREFIX):
            continue
        suffix = key[len(MAGE_CONFIG_PREFIX):]
        if not _MAGE_KEY.fullmatch(suffix):
            continue
        try:
            value: Any = json.loads(raw)
        except (TypeError, ValueError):
            value = raw
        found[re.sub(r"[.-]", "_", suffix)] = value
    return found


def host_groups(variables: Mapping[str, Any], options: InventoryOptions) -> list[str]:
    """The groups a host joins: the default group, then one per group_by key that applies."""
    names: list[str] = [options.default_group]
    values: dict[str, list[str]] = {
        "project": [variables["lxd_project"]],
        "profile": list(variables["lxd_profiles"]),
        "status": [variables["lxd_status"]],
        "os": [variables["lxd_image_os"]],
        "release": [
            f"{variables['lxd_image_os']}_{variables['lxd_image_release']}"
            if variables["lxd_image_os"] and variables["lxd_image_release"]
            else ""
        ],
        "type": [variables["lxd_type"]],
        "location": [member_name(variables["lxd_location"])],
        "network": list(variables["lxd_networks"]),
        "remote": [variables["lxd_remote"]],
    }
    for key in options.group_by:
        for value in values[key]:
            if value:
                name = safe_group_name(f"{key}_{value}")
                if name not in names:
                    names.append(name)
    return names
