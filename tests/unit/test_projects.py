"""Planning projects and profiles: pure, from what LXD answered."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.projects import MANAGED_KEY, ProjectState, base_devices, parse_profiles, plan_projects

# The lab's default profile as LXD 5.0.2 answers GET /1.0/profiles/default.
LAB_DEFAULT_DEVICES = {
    "eth0": {"name": "eth0", "network": "magebr0", "type": "nic"},
    "root": {"path": "/", "pool": "mage", "type": "disk"},
    "data": {"path": "/srv", "source": "/srv", "type": "disk"},
}


def missing(name: str) -> ProjectState:
    return ProjectState(name=name, exists=False, profiles={"default": {"config": {}, "devices": {}}},
                        base_devices=base_devices(LAB_DEFAULT_DEVICES))


def test_base_devices_are_the_root_disk_and_nics_only():
    assert sorted(base_devices(LAB_DEFAULT_DEVICES)) == ["eth0", "root"]


def test_a_missing_project_is_created_and_its_default_profile_filled():
    [plan] = plan_projects([missing("shop")], [parse_spec({"name": "web1", "project": "shop"})], [], True)
    assert plan.create and plan.actions() == ["created project", "updated profile default"]
    assert plan.profiles[0].wanted["devices"] == base_devices(LAB_DEFAULT_DEVICES)


def test_a_missing_project_that_must_exist_is_refused_as_a_missing_project():
    with pytest.raises(OptionError, match="project 'shop' does not exist, and create_project is false"):
        plan_projects([missing("shop")], [], [], False)


def test_an_existing_project_with_nothing_declared_needs_nothing():
    state = ProjectState(name="shop", exists=True, profiles={"default": {"config": {}, "devices": LAB_DEFAULT_DEVICES}})
    [plan] = plan_projects([state], [parse_spec({"name": "web1", "project": "shop", "profiles": ["default"]})], [], True)
    assert not plan.changed and plan.diffs() == []


def test_an_unknown_profile_names_the_instance_and_the_fix():
    state = ProjectState(name="shop", exists=True, profiles={"default": {}})
    spec = parse_spec({"name": "web1", "project": "shop", "profiles": ["default", "big"]})
    with pytest.raises(OptionError, match="instance 'web1' in project 'shop': profile\\(s\\) 'big' do not exist"):
        plan_projects([state], [spec], [], True)


def test_a_declared_profile_is_created_once_then_left_alone():
    declared = parse_profiles([{"name": "small", "config": {"limits.memory": "256MiB"}}])
    state = ProjectState(name="shop", exists=True, profiles={"default": {}})
    [plan] = plan_projects([state], [parse_spec({"name": "w", "project": "shop", "profiles": ["small"]})], declared, True)
    assert plan.actions() == ["created profile small"]
    written = plan.profiles[0].wanted
    assert json.loads(written["config"][MANAGED_KEY]) == {"config": ["limits.memory"], "devices": []}
    now = ProjectState(name="shop", exists=True, profiles={"default": {}, "small": {"name": "small", "used_by": [], **written}})
    assert not plan_projects([now], [], declared, True)[0].changed


def test_a_declared_profile_keeps_keys_others_set_and_drops_only_its_own():
    current = {"description": "", "devices": {"theirs": {"type": "none"}, "ours": {"type": "none"}},
               "config": {"limits.cpu": "1", "limits.processes": "9",
                          MANAGED_KEY: json.dumps({"config": ["limits.cpu"], "devices": ["ours"]})}}
    declared = parse_profiles([{"name": "p", "config": {"limits.memory": "1GiB"}}])
    [plan] = plan_projects([ProjectState(name="x", exists=True, profiles={"p": current})], [], declared, True)
    wanted = plan.profiles[0].wanted
    assert wanted["devices"] == {"theirs": {"type": "none"}}
    kept = {k: v for k, v in wanted["config"].items() if k != MANAGED_KEY}
    assert kept == {"limits.processes": "9", "limits.memory": "1GiB"}


@pytest.mark.parametrize(("raw", "message"), [
    ("small", "must be a list"),
    ([{"name": "a b"}], "is not a valid LXD name"),
    ([{"name": "a"}, {"name": "a"}], "declared twice"),
    ([{"name": "a", "colour": "red"}], "unknown key"),
    ([{"name": "a", "config": {"user.mage.x": "1"}}], "managed by LXD or mage-lxd"),
    ([{"name": "a", "devices": {"mage-x": {"type": "none"}}}], "reserved"),
])
def test_bad_profile_declarations_are_refused(raw, message):
    with pytest.raises(OptionError, match=message):
        parse_profiles(raw)


@pytest.mark.parametrize(("source", "root"), [("/", True), ("//", True), ("/./", True), ("/proc/1/root", True),
                                              ("/proc/self/root/", True), ("/srv", False), ("relative", False),
                                              ("/proc/1/rootfs", False)])
def test_a_mount_of_the_hosts_root_is_seen_however_it_is_spelt(source, root):
    from ansible_collections.mage.lxd.plugins.plugin_utils.batch_checks import unsafe_settings

    found = unsafe_settings("instance 'a'", {}, {"d": {"type": "disk", "source": source, "path": "/mnt"}})
    assert bool(found) is root
