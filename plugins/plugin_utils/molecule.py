"""Molecule's platforms as mage_lxd_instance declarations, and what Molecule reads back.

Molecule (its default driver) runs the scenario's create playbook, which creates the instances and
writes two things Molecule and Ansible read afterwards: the instance config (one entry per instance:
address, connection, and here the project and the server's CLI for `molecule login`), and an
inventory file beside Molecule's own that gives each host its instance and project for the
mage_lxd connection. These functions are pure: the role's tasks do the writing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import OptionError
from .inventory import CONNECTION_PLUGIN

# The platform keys that describe an instance; the rest (groups, children, ...) are Molecule's.
INSTANCE_KEYS = ("name", "image", "image_server", "profiles", "config", "devices", "mounts", "type", "target",
                 "ephemeral", "project")
# LXD's longest project name, and the part of it a scenario's name may take.
PROJECT_NAME_MAX = 63
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9-]+")


def run_project_name(prefix: str, scenario: str, suffix: str) -> str:
    """The project of one scenario run: prefix, the scenario's name (made fit) and a random suffix."""
    room = PROJECT_NAME_MAX - len(prefix) - len(suffix) - 1
    if room < 1:
        raise OptionError(f"mage.lxd.molecule: the project prefix '{prefix}' is too long (a project name has at most "
                          f"{PROJECT_NAME_MAX} characters). Fix: a shorter mage_lxd_molecule_project_prefix.")
    part = _NOT_IN_NAMES.sub("-", scenario).strip("-")[:room] or "scenario"
    return f"{prefix}{part}-{suffix}"


def platform_instances(platforms: Iterable[Mapping[str, Any]], project: str, suffix: str) -> list[dict[str, Any]]:
    """Each platform as a mage_lxd_instance entry named PLATFORM-SUFFIX, in the run's project unless it
    names its own. The suffix is there because LXD refuses two instances of one name on one bridge,
    whatever their projects (the bridge's DNS), and parallel runs share the bridge."""
    instances = []
    for index, platform in enumerate(platforms or []):
        if not isinstance(platform, Mapping) or not platform.get("name"):
            raise OptionError(f"mage.lxd.molecule: platforms[{index}] has no name. Fix: give every platform a name "
                              "(it is the instance's name).")
        entry = {key: platform[key] for key in INSTANCE_KEYS if key in platform}
        entry["name"] = f"{platform['name']}-{suffix}"
        entry["project"] = str(platform.get("project") or project)
        instances.append(entry)
    names = [str(platform["name"]) for platform in platforms or []]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise OptionError(f"mage.lxd.molecule: platform(s) {', '.join(twice)} declared twice. Fix: one platform per name.")
    return instances


def instance_config(results: Iterable[Mapping[str, Any]], cli: str, hosts: Mapping[str, str]) -> list[dict[str, Any]]:
    """Molecule's instance config from mage_lxd_instance's results (`hosts`: instance name to platform
    name): Molecule maps `connection` to ansible_connection and `address` to ansible_host;
    `instance_name`, `project` and `cli` are for login_cmd_template."""
    return [{"instance": hosts[item["name"]], "address": item.get("address") or item["name"],
             "connection": CONNECTION_PLUGIN, "instance_name": item["name"], "project": item["project"], "cli": cli}
            for item in results]


def inventory(results: Iterable[Mapping[str, Any]], hosts: Mapping[str, str]) -> dict[str, Any]:
    """The inventory file beside Molecule's: what the mage_lxd connection needs that Molecule's
    instance config cannot carry (mage_lxd_instance wins over ansible_host, the address)."""
    found = {hosts[item["name"]]: {"ansible_connection": CONNECTION_PLUGIN, "mage_lxd_instance": item["name"],
                                   "mage_lxd_project": item["project"]} for item in results}
    return {"all": {"hosts": found}}


def plan_run(platforms: Iterable[Mapping[str, Any]], prefix: str, scenario: str, suffix: str,
             recorded: str = "") -> dict[str, Any]:
    """The run's project (the recorded one, else a new name), its instances, and the record destroy reads."""
    if recorded:
        # The suffix a recorded project was named with names its instances too.
        project, suffix = recorded, recorded.rsplit("-", 1)[-1]
    else:
        project = run_project_name(prefix, scenario, suffix)
    platforms = list(platforms or [])
    instances = platform_instances(platforms, project, suffix)
    record = {"project": project, "instances": [{"name": entry["name"], "project": entry["project"]}
                                                for entry in instances]}
    hosts = {entry["name"]: str(platform["name"]) for entry, platform in zip(instances, platforms)}
    return {"project": project, "instances": instances, "hosts": hosts, "record": record}


def molecule_files(results: Iterable[Mapping[str, Any]], cli: str, hosts: Mapping[str, str]) -> dict[str, Any]:
    """The instance config and the inventory file for the created instances (`hosts`: instance name
    to platform name, the inventory host)."""
    results = list(results)
    return {"instance_config": instance_config(results, cli, hosts), "inventory": inventory(results, hosts)}
