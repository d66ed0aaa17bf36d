"""The documentation is the one list of choices and defaults: where the library checks a choice or applies a
default itself (an entry of `instances`, the inventory's filters), it holds exactly what the plugin documents."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.mage.lxd.plugins.doc_fragments.mage_lxd import ModuleDocFragment
from ansible_collections.mage.lxd.plugins.plugin_utils.batch import BatchOptions, batch_options
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import (
    ADDRESS_WAITS, PROTOCOLS, STATES, InstanceSpec, parse_spec)
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import (
    ADDRESS_FAMILIES, DEFAULT_GROUP_BY, GROUP_BY_CHOICES, InventoryOptions)
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import ADDRESS_SOURCES, STATUSES
from ansible_collections.mage.lxd.plugins.plugin_utils.values import INSTANCE_TYPES

ROOT = Path(__file__).resolve().parents[3]


def _options(path: str) -> dict[str, Any]:
    source = (ROOT / path).read_text()
    text = next(ast.literal_eval(node.value) for node in ast.parse(source).body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "DOCUMENTATION")
    return yaml.safe_load(text)["options"]


def _same(documented: Any, applied: Any) -> bool:
    # YAML lists are the library's tuples; 60 is 60.0.
    return documented == (list(applied) if isinstance(applied, tuple) else applied)


def test_the_instance_modules_choices_are_the_librarys():
    options = _options("plugins/modules/mage_lxd_instance.py")
    assert options["state"]["choices"] == list(STATES)
    assert options["type"]["choices"] == list(INSTANCE_TYPES)
    assert options["wait_for_address"]["choices"] == list(ADDRESS_WAITS)
    assert options["nat"]["suboptions"]["proto"]["choices"] == list(PROTOCOLS)


def test_the_defaults_the_library_applies_are_the_documented_ones():
    options = {**yaml.safe_load(ModuleDocFragment.MODULE)["options"], **_options("plugins/modules/mage_lxd_instance.py")}
    spec, batch = parse_spec({"name": "web1"}), batch_options({}, check_mode=False)
    applied = {item.name: getattr(spec, item.name) for item in dataclasses.fields(InstanceSpec)}
    applied |= {item.name: getattr(batch, item.name) for item in dataclasses.fields(BatchOptions)}
    compared = {name: (doc["default"], applied[name]) for name, doc in options.items() if "default" in doc and name in applied}
    assert {"state", "type", "wait_for_address", "address_timeout", "forks", "operation_timeout"} <= set(compared)
    assert {name: pair for name, pair in compared.items() if not _same(*pair)} == {}


def test_the_inventorys_choices_and_defaults_are_the_librarys():
    options = _options("plugins/inventory/mage_lxd.py")
    assert options["group_by"]["choices"] == list(GROUP_BY_CHOICES)
    assert options["group_by"]["default"] == list(DEFAULT_GROUP_BY)
    assert options["preferred_address_family"]["choices"] == list(ADDRESS_FAMILIES)
    assert options["address_source"]["choices"] == list(ADDRESS_SOURCES)
    assert options["filters"]["suboptions"]["status"]["choices"] == list(STATUSES)
    assert options["filters"]["suboptions"]["type"]["choices"] == list(INSTANCE_TYPES)
    defaults = InventoryOptions()
    for name in ("default_group", "hostname_format", "preferred_address_family", "set_ansible_host"):
        assert options[name]["default"] == getattr(defaults, name), name
