"""Which variables the inventory sets once on a group instead of on every host, on a snapshot
recorded from the lab: the effective variables of every host stay what the host alone would hold."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import (
    SHARED_CONNECTION_KEYS, InventoryOptions, plan_inventory, settable_group_variables, stray_shared_keys)
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi

PROJECTS = ("mage-rec-a", "mage-rec-b")
LOCAL = {"local": Remote(url="unix:/var/lib/lxd/unix.socket")}


@pytest.fixture(scope="module")
def snapshot():
    return take_snapshot(RecordedApi(), list(PROJECTS))


def effective(plan, host):
    """What Ansible resolves for a host from this plan alone: its groups' variables (groups of one
    source are all children of `all`, so a value two of them carry must be the same), then its own."""
    resolved = {}
    for group in host.groups:
        for key, value in plan.group_vars.get(group, {}).items():
            assert key not in resolved or resolved[key] == value, f"{host.name}: groups disagree on {key}"
            resolved[key] = value
    return {**resolved, **host.own_variables}


def test_every_host_resolves_to_the_variables_it_held_itself(snapshot):
    for options in (InventoryOptions(projects=PROJECTS), InventoryOptions(projects=PROJECTS, group_by=()),
                    InventoryOptions(projects=("*",), group_by=("status", "remote"))):
        plan = plan_inventory([snapshot], LOCAL, options)
        assert plan.hosts
        for host in plan.hosts:
            assert effective(plan, host) == {"ansible_connection": "mage.lxd.mage_lxd", **host.variables}


def test_the_remote_goes_on_the_default_group_and_the_project_on_its_group(snapshot):
    plan = plan_inventory([snapshot], LOCAL, InventoryOptions(projects=PROJECTS))
    assert plan.group_vars["lxd"] == {"ansible_connection": "mage.lxd.mage_lxd", "mage_lxd_remote": "local",
                                      "mage_lxd_url": "unix:/var/lib/lxd/unix.socket"}
    assert plan.group_vars["project_mage_rec_a"] == {"mage_lxd_project": "mage-rec-a"}
    for host in plan.hosts:
        assert host.shared == {"mage_lxd_remote", "mage_lxd_url", "mage_lxd_project"}
        # What a playbook's group_vars may set (lxd_project in inventory/group_vars/all.yml) stays on the
        # host, where it outranks group_vars files.
        assert {"lxd_project", "lxd_remote", "mage_lxd_instance"} <= set(host.own_variables)


def test_without_project_groups_one_project_goes_on_the_default_group_and_two_stay_on_hosts(snapshot):
    plan = plan_inventory([snapshot], LOCAL, InventoryOptions(projects=PROJECTS, group_by=("status",)))
    assert "mage_lxd_project" not in plan.group_vars["lxd"]
    assert all(host.own_variables["mage_lxd_project"] == host.variables["lxd_project"] for host in plan.hosts)
    one = {**snapshot, "instances": [i for i in snapshot["instances"] if i["project"] == "mage-rec-a"]}
    plan = plan_inventory([one], LOCAL, InventoryOptions(projects=PROJECTS, group_by=("status",)))
    assert plan.group_vars["lxd"]["mage_lxd_project"] == "mage-rec-a"


def test_two_remotes_keep_their_own_address_on_each_host_unless_remote_groups_carry_it(snapshot):
    remotes = {**LOCAL, "other": Remote(name="other", url="https://10.0.0.1:8443", validate_certs=False)}
    both = [snapshot, {**copy.deepcopy(snapshot), "remote": "other"}]
    options = InventoryOptions(projects=PROJECTS, hostname_format="{remote}.{project}.{name}")
    plan = plan_inventory(both, remotes, options)
    assert not {"mage_lxd_url", "mage_lxd_remote"} & set(plan.group_vars["lxd"])
    for host in plan.hosts:
        assert host.own_variables["mage_lxd_url"] == remotes[host.variables["lxd_remote"]].url
    plan = plan_inventory(both, remotes, InventoryOptions(projects=PROJECTS, hostname_format=options.hostname_format,
                                                          group_by=("project", "remote")))
    assert plan.group_vars["remote_other"] == {"mage_lxd_remote": "other", "mage_lxd_url": "https://10.0.0.1:8443",
                                               "mage_lxd_validate_certs": False}
    for host in plan.hosts:
        assert effective(plan, host) == {"ansible_connection": "mage.lxd.mage_lxd", **host.variables}


def test_a_group_name_two_projects_share_carries_no_project(snapshot):
    # shop.prod and shop-prod are both the group project_shop_prod: it is made for neither.
    renamed = copy.deepcopy(snapshot)
    for instance in renamed["instances"]:
        instance["project"] = {"mage-rec-a": "shop.prod", "mage-rec-b": "shop-prod"}[instance["project"]]
    plan = plan_inventory([renamed], LOCAL, InventoryOptions(projects=("shop.prod", "shop-prod")))
    assert "project_shop_prod" not in plan.group_vars
    for host in plan.hosts:
        assert host.own_variables["mage_lxd_project"] == host.variables["lxd_project"]


def test_only_connection_variables_are_shared():
    assert all(key.startswith("mage_lxd_") for key in SHARED_CONNECTION_KEYS)


def test_a_boolean_and_a_number_are_not_one_value(snapshot):
    plan = plan_inventory([snapshot], LOCAL, InventoryOptions(projects=PROJECTS))
    host = plan.hosts[0]
    host.shared = {"mage_lxd_validate_certs"}
    host.variables["mage_lxd_validate_certs"] = True
    assert stray_shared_keys(host, [{"mage_lxd_validate_certs": 1}]) == ["mage_lxd_validate_certs"]
    assert stray_shared_keys(host, [{"mage_lxd_validate_certs": True}]) == []


def test_a_host_another_group_gives_another_value_must_hold_its_own(snapshot):
    plan = plan_inventory([snapshot], LOCAL, InventoryOptions(projects=PROJECTS))
    host = next(host for host in plan.hosts if host.variables["lxd_project"] == "mage-rec-b")
    groups = [plan.group_vars["lxd"], plan.group_vars["project_mage_rec_b"]]
    assert stray_shared_keys(host, groups) == []
    # A keyed group (a tenant's config value as its name) that is another project's group, or
    # another source's default group for another remote.
    assert stray_shared_keys(host, [*groups, plan.group_vars["project_mage_rec_a"]]) == ["mage_lxd_project"]
    assert stray_shared_keys(host, [*groups, {"mage_lxd_url": "https://elsewhere:8443"}]) == ["mage_lxd_url"]
    # The default group kept another source's value: nothing of this source gives the host its own.
    assert stray_shared_keys(host, [{"mage_lxd_url": "x", "mage_lxd_remote": "local"}, groups[1]]) == [
        "mage_lxd_url"]
    assert stray_shared_keys(host, [groups[1]]) == ["mage_lxd_remote", "mage_lxd_url"]


def test_a_group_another_source_made_gets_no_new_shared_variable():
    planned = {"ansible_connection": "mage.lxd.mage_lxd", "mage_lxd_url": "unix:/b", "mage_lxd_project": "b",
               "mage_lxd_remote": "local"}
    assert settable_group_variables(planned, None) == planned
    assert settable_group_variables(planned, {"mage_lxd_url": "unix:/a", "mage_lxd_remote": "local"}) == {
        "ansible_connection": "mage.lxd.mage_lxd", "mage_lxd_remote": "local"}
    assert settable_group_variables(planned, {}) == {"ansible_connection": "mage.lxd.mage_lxd"}
