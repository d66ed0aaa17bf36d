"""What a tenant's data may not decide in the inventory: which host is localhost, which host or
group two instances share, and whether one record breaks everyone. Snapshots recorded on the lab
LXD, changed the way a tenant can change them (instance names, profiles, user.mage.* config)."""

from __future__ import annotations

import copy
import json

import ansible.constants
import pytest
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import CONTROLLER_NAMES, InventoryOptions, plan_inventory
from ansible_collections.mage.lxd.plugins.plugin_utils.records import MAX_RECORD_CHARS, MAX_RECORD_DEPTH
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi

PROJECTS = ("mage-rec-a", "mage-rec-b")
LOCAL = {"local": Remote()}
# About a kilobyte that broke the inventory with RecursionError (ansible's wrap_var, then json).
NESTED = "[" * 600 + "]" * 600


@pytest.fixture()
def snapshot():
    return take_snapshot(RecordedApi(), list(PROJECTS))


def instance(snapshot, name):
    return next(item for item in snapshot["instances"] if item["name"] == name)


def tenant_copy(snapshot, source, **changes):
    """A copy of a recorded instance, as a tenant of project mage-rec-b could make it."""
    item = copy.deepcopy(instance(snapshot, source))
    item.update({"project": "mage-rec-b", **changes})
    snapshot["instances"].append(item)
    return item


def plan(snapshot, **options):
    return plan_inventory([snapshot], LOCAL, InventoryOptions(projects=PROJECTS, **options))


def hosts(result):
    return {host.name: host for host in result.hosts}


def test_the_controller_names_are_ansible_cores():
    assert set(CONTROLLER_NAMES) == set(ansible.constants.LOCALHOST)


FIX = ("Fix: set hostname_format to '{project}.{name}' ('{remote}.{project}.{name}' across remotes), which cannot "
       "collide (instance names hold no dot), or rename the instance.")


@pytest.mark.parametrize("name", ansible.constants.LOCALHOST)
def test_an_instance_is_never_the_controllers_localhost(snapshot, name):
    tenant_copy(snapshot, "web2", name=name)
    result = plan(snapshot)
    assert not set(CONTROLLER_NAMES) & set(hosts(result))
    assert set(hosts(result)) == {"web1", "db1", "odd1", "web2", f"mage-rec-b.{name}"}
    assert hosts(result)[f"mage-rec-b.{name}"].variables["mage_lxd_instance"] == name
    assert result.warnings == [
        f"the host name '{name}' (hostname_format '{{name}}') is the controller's (plays on localhost, and tasks "
        f"delegated to it, would run in the instance): instance '{name}' in project 'mage-rec-b' on 'local' is the "
        f"host 'mage-rec-b.{name}'. {FIX}"]


def test_a_host_name_two_projects_share_is_given_to_neither(snapshot):
    tenant_copy(snapshot, "web2", name="web1")
    result = plan(snapshot)
    assert "web1" not in hosts(result) and {"db1", "web2", "odd1"} <= set(hosts(result))
    assert hosts(result)["mage-rec-a.web1"].variables["lxd_project"] == "mage-rec-a"
    assert hosts(result)["mage-rec-b.web1"].variables["lxd_project"] == "mage-rec-b"
    # Renamed, the operator's instance keeps its groups and its routes (read by instance, not host name).
    assert "project_mage_rec_a" in hosts(result)["mage-rec-a.web1"].groups
    assert result.warnings == [
        "the host name 'web1' (hostname_format '{name}') would be given to more than one instance (they would be "
        "one host): instance 'web1' in project 'mage-rec-a' on 'local' is the host 'mage-rec-a.web1'; instance "
        f"'web1' in project 'mage-rec-b' on 'local' is the host 'mage-rec-b.web1'. {FIX}"]
    assert plan(snapshot, hostname_format="{project}.{name}").warnings == []


def test_the_same_instance_on_two_remotes_is_named_for_its_remote(snapshot):
    twice = [snapshot, {**copy.deepcopy(snapshot), "remote": "other"}]
    remotes = {"local": Remote(), "other": Remote(name="other")}
    result = plan_inventory(twice, remotes, InventoryOptions(projects=PROJECTS))
    assert {"local.mage-rec-a.web1", "other.mage-rec-a.web1"} <= set(hosts(result))
    assert len(result.hosts) == 2 * len(snapshot["instances"])
    # Under a format that already names everything, a clash that remains leaves both out.
    result = plan_inventory(twice, remotes, InventoryOptions(projects=PROJECTS, hostname_format="{remote}.{project}.{name}"))
    assert len(result.hosts) == 2 * len(snapshot["instances"]) and result.warnings == []


def test_a_clash_no_format_resolves_leaves_the_hosts_out(snapshot):
    same = copy.deepcopy(snapshot)
    result = plan_inventory([snapshot, same], LOCAL, InventoryOptions(projects=PROJECTS))
    assert result.hosts == []
    assert all("is left out of the inventory" in warning for warning in result.warnings[-4:])


def test_a_tenants_profile_never_joins_the_operators_profile_group(snapshot):
    tenant_copy(snapshot, "web1", name="intruder")  # profiles default + web, in mage-rec-b
    result = hosts(plan(snapshot))
    assert "profile_mage_rec_a__web" in result["web1"].groups
    assert "profile_mage_rec_b__web" in result["intruder"].groups
    assert not [g for g in result["intruder"].groups if g in result["web1"].groups and g.startswith("profile_")]
    assert "network_mage_rec_a__magebr0" in result["web1"].groups


def test_a_tenants_image_os_never_joins_the_operators_os_group(snapshot):
    # image.os and image.release are the instance's own config: `lxc config set intruder image.os
    # busybox` is all it takes to claim the operator's os.
    tenant_copy(snapshot, "web1", name="intruder")
    result = hosts(plan(snapshot))
    operator_os = [g for g in result["web1"].groups if g.startswith(("os_", "release_"))]
    assert operator_os and all(g.startswith(("os_mage_rec_a__", "release_mage_rec_a__")) for g in operator_os)
    assert not set(operator_os) & set(result["intruder"].groups)
    assert "os_mage_rec_b__busybox" in result["intruder"].groups


def test_one_project_keeps_plain_profile_and_network_groups(snapshot):
    result = plan_inventory([snapshot], LOCAL, InventoryOptions(projects=("mage-rec-a",)))
    assert {"profile_web", "network_magebr0", "os_busybox"} <= set(hosts(result)["web1"].groups)
    assert InventoryOptions(projects=("*",)).scoped_groups


def test_a_group_name_two_projects_would_share_holds_neither(snapshot):
    # LXD refuses _ in project names, but shop.prod and shop-prod are both valid.
    for item, project in ((instance(snapshot, "web1"), "shop.prod"), (instance(snapshot, "web2"), "shop-prod")):
        item["project"] = project
    result = plan(snapshot)
    assert all("project_shop_prod" not in host.groups for host in result.hosts)
    assert [w for w in result.warnings if "project_shop_prod" in w] == [
        "group 'project_shop_prod' would hold project 'shop-prod' and project 'shop.prod'; it is left out for "
        "instance 'web1' in project 'shop.prod' on 'local', instance 'web2' in project 'shop-prod' on 'local' "
        "(group_by). Fix: rename one of them, or take its key out of group_by and group with keyed_groups."]
    # The other groups of those hosts stay.
    assert "status_running" in hosts(result)["web1"].groups


def test_a_server_group_never_takes_the_default_group(snapshot):
    instance(snapshot, "web2")["expanded_config"]["image.os"] = "lxd"
    result = hosts(plan_inventory([snapshot], LOCAL, InventoryOptions(projects=("mage-rec-a",), default_group="os_lxd")))
    assert all(host.groups[0] == "os_lxd" for host in result.values())
    assert result["web2"].groups.count("os_lxd") == 1


def test_release_groups_of_different_os_and_release_do_not_merge(snapshot):
    instance(snapshot, "web1")["expanded_config"].update({"image.os": "debian_12", "image.release": "1"})
    instance(snapshot, "web2")["expanded_config"].update({"image.os": "debian", "image.release": "12_1"})
    result = plan(snapshot)
    assert all("release_debian_12_1" not in host.groups for host in result.hosts)


@pytest.mark.parametrize("key", ["user.mage.proxy", "user.mage.nat", "user.mage.anything"])
@pytest.mark.parametrize("raw", [NESTED, '{"a":' * 600 + "1" + "}" * 600, json.dumps(["x" * MAX_RECORD_CHARS])])
def test_a_record_too_deep_or_too_long_drops_only_that_record(snapshot, key, raw):
    web2 = instance(snapshot, "web2")
    web2["config"][key] = web2["expanded_config"][key] = raw
    result = hosts(plan(snapshot))
    assert key.removeprefix("user.mage.") not in result["web2"].variables["lxd_mage"]
    assert result["web1"].variables["lxd_mage"]["proxy"] == [{"name": "web1.example.org", "path": "/", "pass": 8080}]
    # What broke every inventory before: Ansible's unsafe marking walks every value.
    wrap_var([host.variables for host in result.values()])
    (warning,) = plan(snapshot).warnings
    assert warning.startswith(f"instance 'web2' in project 'mage-rec-b' on 'local': {key} ")
    assert warning.endswith(f"Fix: correct or remove it (lxc config unset web2 {key} --project mage-rec-b).")


def test_records_within_the_bounds_are_read_and_text_stays_text(snapshot):
    web2 = instance(snapshot, "web2")
    deep_enough = "[" * MAX_RECORD_DEPTH + "]" * MAX_RECORD_DEPTH
    web2["expanded_config"].update({"user.mage.deep": deep_enough, "user.mage.note": "[[[ not json"})
    result = plan(snapshot)
    variables = hosts(result)["web2"].variables
    assert variables["lxd_mage"]["deep"] == json.loads(deep_enough)
    assert variables["lxd_mage"]["note"] == "[[[ not json"
    assert result.warnings == []
