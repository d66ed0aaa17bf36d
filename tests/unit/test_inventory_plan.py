"""Host names, groups and variables planned from a snapshot recorded on the lab LXD."""

from __future__ import annotations

import re

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import (
    InventoryOptions, added_host, plan_inventory, preferred_address, safe_group_name)
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi

PROJECTS = ["mage-rec-a", "mage-rec-b"]
LOCAL = {"local": Remote()}


@pytest.fixture(scope="module")
def snapshot():
    return take_snapshot(RecordedApi(), PROJECTS)


def hosts(plan):
    return {host.name: host for host in plan.hosts}


def test_every_instance_is_in_the_default_group_which_carries_the_connection(snapshot):
    plan = plan_inventory([snapshot], LOCAL, InventoryOptions())
    assert all(host.groups[0] == "lxd" for host in plan.hosts)
    assert plan.group_vars["lxd"]["ansible_connection"] == "mage.lxd.mage_lxd"
    # Set on the group, not the host: group_vars and host_vars files can override it.
    assert all("ansible_connection" not in host.variables for host in plan.hosts)


def test_groups_by_project_profile_status_os_release_type_network(snapshot):
    web1 = hosts(plan_inventory([snapshot], LOCAL, InventoryOptions()))["web1"]
    assert web1.groups == ["lxd", "project_mage_rec_a", "profile_default", "profile_web", "status_running",
                           "os_busybox", f"release_busybox_{web1.variables['lxd_image_release'].replace('.', '_')}",
                           "type_container", "network_magebr0"]


def test_group_by_is_configurable_and_remote_groups_exist_on_request(snapshot):
    plan = plan_inventory([snapshot], LOCAL, InventoryOptions(default_group="all_lxd", group_by=("status", "remote")))
    assert hosts(plan)["db1"].groups == ["all_lxd", "status_stopped", "remote_local"]


def test_variables_of_a_running_instance(snapshot):
    variables = hosts(plan_inventory([snapshot], LOCAL, InventoryOptions()))["web1"].variables
    assert variables["mage_lxd_instance"] == "web1"
    assert variables["mage_lxd_project"] == "mage-rec-a"
    assert variables["mage_lxd_remote"] == "local"
    assert variables["lxd_status"] == "running"
    assert variables["lxd_profiles"] == ["default", "web"]
    assert variables["lxd_ipv4"]["eth0"] == [variables["lxd_address"]]
    assert variables["ansible_host"] == variables["lxd_address"]
    assert variables["lxd_config"] == {"user.role": "frontend"}
    assert variables["lxd_mage"]["proxy"] == [{"name": "web1.example.org", "path": "/", "pass": 8080}]
    assert variables["lxd_mage"]["nat"] == [{"extport": 8080, "intport": 80, "proto": "tcp"}]
    # Read as data; the plugin marks it unsafe so Ansible never templates it.
    assert variables["lxd_description"] == "{{ lookup('pipe', 'id') }}"


def test_a_stopped_instance_has_no_address_and_no_ansible_host(snapshot):
    variables = hosts(plan_inventory([snapshot], LOCAL, InventoryOptions()))["db1"].variables
    assert variables["lxd_address"] == "" and variables["lxd_ipv4"] == {}
    assert "ansible_host" not in variables


def test_set_ansible_host_can_be_turned_off(snapshot):
    variables = hosts(plan_inventory([snapshot], LOCAL, InventoryOptions(set_ansible_host=False)))["web1"].variables
    assert "ansible_host" not in variables and variables["lxd_address"]


def test_hostname_format_and_collisions(snapshot):
    twice = [snapshot, {**snapshot, "remote": "other"}]
    remotes = {"local": Remote(), "other": Remote(name="other")}
    plan = plan_inventory(twice, remotes, InventoryOptions(projects=tuple(PROJECTS)))
    # Neither of two instances that would share a host name stands in for the other.
    assert "db1" not in hosts(plan) and {"local.mage-rec-a.db1", "other.mage-rec-a.db1"} <= set(hosts(plan))
    assert any(re.search(r"the host name 'db1' .* would be given to more than one instance .*"
                         r"instance 'db1' in project 'mage-rec-a' on 'local' is the host .* Fix: set hostname_format",
                         warning)
               for warning in plan.warnings)
    plan = plan_inventory(twice, remotes, InventoryOptions(hostname_format="{remote}-{project}-{name}"))
    assert "other-mage-rec-a-web1" in hosts(plan) and "local-mage-rec-a-web1" in hosts(plan)
    assert plan.warnings == []


@pytest.mark.parametrize("fmt", ["{name.__class__}", "{name!r}", "{name:>20}", "{address}", "static", "{"])
def test_hostname_format_allows_only_plain_fields(fmt):
    with pytest.raises(OptionError, match="hostname_format"):
        InventoryOptions(hostname_format=fmt)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"default_group": "lxd hosts"}, "default_group"),
        ({"group_by": ("colour",)}, "group_by: unknown key"),
        ({"preferred_address_family": "ipx"}, "preferred_address_family"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(OptionError, match=message):
        InventoryOptions(**options)


def test_safe_group_names():
    assert safe_group_name("project_mage-rec.a") == "project_mage_rec_a"
    assert safe_group_name("profile_{{ x }}") == "profile____x___"


def test_preferred_address_falls_back_to_the_other_family():
    assert preferred_address({}, {"eth0": ["fd42::5"]}, "inet") == "fd42::5"
    assert preferred_address({"eth0": ["10.0.0.5"]}, {"eth0": ["fd42::5"]}, "inet6") == "fd42::5"
    assert preferred_address({"eth1": ["10.0.1.5"], "eth0": ["10.0.0.5"]}, {}, "inet") == "10.0.0.5"


def test_a_converged_instance_is_added_to_the_run_unless_the_inventory_holds_it_so():
    result = {"name": "web1", "project": "shop", "status": "running", "address": "10.0.0.5"}
    added = added_host(result, Remote(), ["lxd"], None)
    assert added == {"host_name": "web1", "groups": ["lxd"], "host_vars": {
        "ansible_connection": "mage.lxd.mage_lxd", "mage_lxd_instance": "web1", "mage_lxd_project": "shop",
        **Remote().connection_vars(), "ansible_host": "10.0.0.5"}}
    # The inventory's remote name is only a label; the same host in the same groups adds nothing.
    known = {**added["host_vars"], "mage_lxd_remote": "elsewhere", "group_names": ["lxd", "web"]}
    assert added_host(result, Remote(), ["lxd"], known) is None
    assert added_host(result, Remote(), ["lxd", "db"], known) == {**added, "groups": ["lxd", "db"]}
    assert added_host(result, Remote(), ["lxd"], {**known, "ansible_host": "10.0.0.9"}) == added
    assert added_host({**result, "status": "absent"}, Remote(), ["lxd"], None) is None
    assert added_host({"name": "web1", "project": "shop", "failed": True, "msg": "x"}, Remote(), ["lxd"], None) is None
