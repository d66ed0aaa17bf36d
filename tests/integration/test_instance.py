"""The mage_lxd_instance action on the lab's real LXD: lifecycle, idempotence, check mode, errors."""

from __future__ import annotations

import pytest

from lxd_lab import create_project, delete_project, instance_names, lxc, project_name, query
from lxd_lab import run_module as run_any_module

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-inst")
# image_server "": local aliases only, so no test ever makes LXD reach an outside image server.
BASE = {"project": PROJECT, "image": "mage/busybox", "bootstrap": False, "image_server": ""}


@pytest.fixture(scope="module")
def project(lab):
    create_project(PROJECT, profiles=["web", "nonic"])
    lxc("profile", "device", "add", "nonic", "root", "disk", "path=/", f"pool={lab['MAGE_LAB_POOL']}", "--project", PROJECT)
    try:
        yield PROJECT
    finally:
        delete_project(PROJECT)


def run_module(module: str, args: dict, *extra: str) -> dict:
    return run_any_module(module, args, *extra, project=PROJECT)


def instance(name: str) -> dict:
    return query(f"/1.0/instances/{name}?project={PROJECT}")


def test_create_start_stop_delete_and_a_second_run_changes_nothing(project):
    created = run_module("mage_lxd_instance", {**BASE, "name": "life1"})
    assert created["changed"] is True and created["actions"] == ["created", "started"]
    assert created["status"] == "running" and created["address"].startswith("10.")
    assert created["add_host"]["host_vars"]["ansible_connection"] == "mage.lxd.mage_lxd"
    assert instance("life1")["status"] == "Running"

    again = run_module("mage_lxd_instance", {**BASE, "name": "life1"})
    assert again["changed"] is False and again["actions"] == []

    stopped = run_module("mage_lxd_instance", {**BASE, "name": "life1", "state": "stopped"})
    assert stopped["changed"] is True and stopped["actions"] == ["stopped"]
    assert instance("life1")["status"] == "Stopped"
    assert run_module("mage_lxd_instance", {**BASE, "name": "life1", "state": "stopped"})["changed"] is False

    frozen = run_module("mage_lxd_instance", {**BASE, "name": "life1", "state": "frozen"})
    assert frozen["actions"] == ["started", "frozen"] and instance("life1")["status"] == "Frozen"
    restarted = run_module("mage_lxd_instance", {**BASE, "name": "life1", "state": "restarted"})
    assert restarted["changed"] is True and instance("life1")["status"] == "Running"

    deleted = run_module("mage_lxd_instance", {**BASE, "name": "life1", "state": "absent"})
    assert deleted["changed"] is True and "life1" not in instance_names(PROJECT)
    gone = run_module("mage_lxd_instance", {**BASE, "name": "life1", "state": "absent"})
    assert gone["changed"] is False and "msg" not in gone, gone.get("msg")


def test_check_mode_reports_and_changes_nothing(project):
    planned = run_module("mage_lxd_instance", {**BASE, "name": "check1"}, "--check", "--diff")
    assert planned["changed"] is True and planned["actions"] == ["created", "started"]
    assert "check1" not in instance_names(PROJECT)

    run_module("mage_lxd_instance", {**BASE, "name": "check1", "config": {"user.a": "1"}})
    before = instance("check1")["config"]
    planned = run_module("mage_lxd_instance", {**BASE, "name": "check1", "config": {"user.a": "2"},
                                               "state": "stopped"}, "--check", "--diff")
    assert planned["changed"] is True and planned["actions"] == ["reconfigured", "stopped"]
    assert '-        "user.a": "1"' in planned["_stdout"] and '+        "user.a": "2"' in planned["_stdout"]
    assert instance("check1")["config"] == before and instance("check1")["status"] == "Running"


def test_removed_keys_go_and_keys_set_by_others_stay(project):
    run_module("mage_lxd_instance", {**BASE, "name": "keys1", "config": {"user.a": "1", "user.b": "2"},
                                     "devices": {"data": {"type": "disk", "source": "/tmp", "path": "/mnt/tmp"}}})
    lxc("config", "set", "keys1", "user.foreign=kept", "--project", PROJECT)
    result = run_module("mage_lxd_instance", {**BASE, "name": "keys1", "config": {"user.a": "1"}})
    assert result["changed"] is True and result["actions"] == ["reconfigured"]
    config = instance("keys1")["config"]
    assert config["user.a"] == "1" and "user.b" not in config
    assert config["user.foreign"] == "kept"
    assert any(key.startswith("volatile.") for key in config)
    assert "data" not in instance("keys1")["devices"]
    assert run_module("mage_lxd_instance", {**BASE, "name": "keys1", "config": {"user.a": "1"}})["changed"] is False


def test_profiles_are_compared_in_order(project):
    run_module("mage_lxd_instance", {**BASE, "name": "prof1", "profiles": ["default", "web"]})
    same = run_module("mage_lxd_instance", {**BASE, "name": "prof1", "profiles": ["default", "web"]})
    assert same["changed"] is False
    swapped = run_module("mage_lxd_instance", {**BASE, "name": "prof1", "profiles": ["web", "default"]})
    assert swapped["changed"] is True and instance("prof1")["profiles"] == ["web", "default"]


def test_no_address_fails_within_the_timeout_and_says_what_it_has(project):
    result = run_module("mage_lxd_instance", {**BASE, "name": "noaddr1", "profiles": ["nonic"], "address_timeout": 3})
    assert "actions" not in result, result  # failed: no per-instance report
    assert f"instance 'noaddr1' in project '{PROJECT}' has no IPv4 address after 3s" in result["msg"]
    assert "it has: no network interface" in result["msg"] and "wait_for_address: none" in result["msg"]


def test_a_list_is_converged_together(project):
    entries = [{"name": f"many{index}"} for index in range(4)]
    result = run_module("mage_lxd_instance", {**BASE, "instances": entries, "forks": 4})
    assert result["changed"] is True
    assert sorted(item["name"] for item in result["instances"]) == [f"many{i}" for i in range(4)]
    assert all(item["status"] == "running" and item["address"] for item in result["instances"])
    assert run_module("mage_lxd_instance", {**BASE, "instances": entries})["changed"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "ubu_test_1"}, "instance name 'ubu_test_1' is not valid in LXD"),
        ({"name": "ubu_test_1"}, "Use 'ubu-test-1' instead."),
        ({"name": "bad1", "nat": [{"extport": 70000}]}, "nat[0].extport: 70000 is out of range"),
        ({"name": "bad1", "nat": [{"extport": 80, "backend": "iptables", "extif": "nosuch0", "intif": "magebr0"}]},
         "nat interface 'nosuch0' does not exist on this host"),
        ({"name": "bad1", "image": "no/such/image"}, "image 'no/such/image' is not a local alias in project"),
        ({"name": "bad1", "proxy": ["/sys/fs/cgroup:/sys/fs/cgroup:ro"]}, "It looks like a mount: put it under 'mounts'"),
        ({"instances": [{"name": "dup1", "nat": [{"extport": 8080}]}, {"name": "dup2", "nat": [{"extport": 8080}]}]},
         f"nat tcp/8080 is already claimed by instance 'dup1' (project {PROJECT})"),
        ({"name": "bad1", "config": {"volatile.x": "1"}}, "config key 'volatile.x' is managed by LXD"),
    ],
)
def test_bad_input_is_refused_before_any_change(project, args, message):
    before = instance_names(PROJECT)
    result = run_module("mage_lxd_instance", {**BASE, **args})
    assert "actions" not in result, result  # failed: no per-instance report
    assert message in result["msg"]
    assert instance_names(PROJECT) == before
