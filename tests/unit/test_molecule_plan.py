"""Molecule's platforms as instances, and what Molecule reads back: pure."""

from __future__ import annotations

import re

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.molecule import molecule_files, plan_run, run_project_name
from ansible_collections.mage.lxd.plugins.plugin_utils.project_removal import ProjectContents, plan_removal

PLATFORMS = [
    {"name": "web", "image": "mage/debian-12", "image_server": "", "config": {"limits.memory": "512MiB"},
     "groups": ["www"], "children": ["x"]},
    {"name": "db", "image": "mage/debian-12", "project": "shared", "profiles": ["default"]},
]


def test_each_run_gets_a_project_and_platforms_keep_only_instance_keys():
    plan = plan_run(PLATFORMS, "molecule-", "default", "0badcafe")
    assert plan["project"] == "molecule-default-0badcafe"
    assert plan["instances"] == [
        {"name": "web-0badcafe", "image": "mage/debian-12", "image_server": "", "config": {"limits.memory": "512MiB"},
         "project": "molecule-default-0badcafe"},
        {"name": "db-0badcafe", "image": "mage/debian-12", "profiles": ["default"], "project": "shared"},
    ]
    assert plan["hosts"] == {"web-0badcafe": "web", "db-0badcafe": "db"}
    assert plan["record"] == {"project": "molecule-default-0badcafe",
                              "instances": [{"name": "web-0badcafe", "project": "molecule-default-0badcafe"},
                                            {"name": "db-0badcafe", "project": "shared"}]}


def test_a_recorded_project_is_kept_with_its_instance_names():
    plan = plan_run(PLATFORMS, "molecule-", "default", "11111111", recorded="molecule-default-0badcafe")
    assert plan["project"] == "molecule-default-0badcafe"
    assert [entry["name"] for entry in plan["instances"]] == ["web-0badcafe", "db-0badcafe"]


def test_a_scenario_name_is_made_fit_for_lxd_and_the_name_stays_short():
    name = run_project_name("mage-test-inc-mol-", "my_scenario " * 10, "0badcafe")
    assert len(name) <= 63 and name.startswith("mage-test-inc-mol-my-scenario-") and name.endswith("-0badcafe")


@pytest.mark.parametrize("platforms, words", [
    ([{"image": "x"}], "platforms[0] has no name"),
    ([{"name": "a"}, {"name": "a"}], "a declared twice"),
])
def test_bad_platforms_are_named(platforms, words):
    with pytest.raises(OptionError, match=re.escape(words)):
        plan_run(platforms, "molecule-", "default", "0badcafe")


def test_molecule_reads_the_address_and_the_connection_reads_instance_and_project():
    results = [{"name": "web-0badcafe", "project": "p1", "address": "10.187.32.9"}]
    files = molecule_files(results, "incus", {"web-0badcafe": "web"})
    assert files["instance_config"] == [{"instance": "web", "address": "10.187.32.9", "connection": "mage.lxd.mage_lxd",
                                         "instance_name": "web-0badcafe", "project": "p1", "cli": "incus"}]
    assert files["inventory"] == {"all": {"hosts": {"web": {"ansible_connection": "mage.lxd.mage_lxd",
                                                            "mage_lxd_instance": "web-0badcafe",
                                                            "mage_lxd_project": "p1"}}}}


def test_a_project_is_emptied_in_the_order_lxd_needs():
    contents = ProjectContents("p1", True, instances=(("web", "Running"), ("old", "Stopped")),
                               profiles=("default", "small"), volumes=(("mage", "data"),))
    removal = plan_removal(contents)
    assert (removal.stop, removal.instances, removal.profiles, removal.volumes, removal.project) == (
        ["web"], ["web", "old"], ["small"], [("mage", "data")], True)
    assert removal.changed


def test_a_missing_project_is_no_change_and_default_is_refused():
    assert not plan_removal(ProjectContents("gone", False)).changed
    with pytest.raises(OptionError, match="default project cannot be deleted"):
        plan_removal(ProjectContents("default", True))
