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


def platform_instances(platforms: Iterable[Mapping[str, Any]], project: str) -> list[dict[str, Any]]:
    """Each platform as a mage_lxd_instance entry, in the run's project unless it names its own."""
    instances = []
    for index, platform in enumerate(platforms or []):
        if not isinstance(platform, Mapping) or not platform.get("name"):
            raise OptionError(f"mage.lxd.molecule: platforms[{index}] has no name. Fix: give every platform a name "
                              "(it is the instance's name).")
        entry = {key: platform[key] for key in INSTANCE_KEYS if key in platform}
        entry["project"] = str(platform.get("project") or project)
        instances.append(entry)
    names = [entry["name"] for entry in instances]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise OptionError(f"mage.lxd.molecule: platform(s) {', '.join(twice)} declared twice. Fix: one platform per name.")
    return instances


def instance_config(results: Iterable[Mapping[str, Any]], cli: str) -> list[dict[str, Any]]:
    """Molecule's instance config from mage_lxd_instance's results: Molecule maps `connection` to
    ansible_connection and `address` to ansible_host; `project` and `cli` are for login_cmd_template."""
    return [{"instance": item["name"], "address": item.get("address") or item["name"], "connection": CONNECTION_PLUGIN,
             "project": item["project"], "cli": cli} for item in results]


def inventory(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The inventory file beside Molecule's: what the mage_lxd connection needs that Molecule's
    instance config cannot carry (the instance's own name wins over ansible_host, the address)."""
    hosts = {item["name"]: {"ansible_connection": CONNECTION_PLUGIN, "mage_lxd_instance": item["name"],
                            "mage_lxd_project": item["project"]} for item in results}
    return {"all": {"hosts": hosts}}


def plan_run(platforms: Iterable[Mapping[str, Any]], prefix: str, scenario: str, suffix: str,
             recorded: str = "") -> dict[str, Any]:
    """The run's project (the recorded one, else a new name), its instances, and the record destroy reads."""
    project = recorded or run_project_name(prefix, scenario, suffix)
    instances = platform_instances(platforms, project)
    record = {"project": project, "instances": [{"name": entry["name"], "project": entry["project"]}
                                                for entry in instances]}
    return {"project": project, "instances": instances, "record": record}


def molecule_files(results: Iterable[Mapping[str, Any]], cli: str) -> dict[str, Any]:
    """The instance config and the inventory file for the created instances."""
    results = list(results)
    return {"instance_config": instance_config(results, cli), "inventory": inventory(results)}
