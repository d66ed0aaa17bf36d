"""Plan the whole batch, then apply: a refusal anywhere changes nothing anywhere (real LXD)."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from lxd_lab import create_project, delete_project, instance_names, lxc, query
from lxd_lab import run_module as run_any_module

pytestmark = pytest.mark.integration

PROJECT = "mage-test-batch"
BASE = {"project": PROJECT, "image": "mage/busybox", "bootstrap": False, "image_server": ""}
KEEP_ROUTE = {"name": "keep.batch.test", "path": "/", "pass": 80}


def run_module(args: dict, *extra: str) -> dict:
    return run_any_module("mage_lxd_instance", {**BASE, **args}, *extra, project=PROJECT)


@pytest.fixture(scope="module")
def project(lab):
    create_project(PROJECT)
    made = run_module({"instances": [{"name": "keep1", "config": {"user.a": "1"}},
                                     {"name": "pub1", "proxy": [KEEP_ROUTE]}]})
    assert made["changed"] is True, made
    try:
        yield PROJECT
    finally:
        delete_project(PROJECT)


def lxd_state() -> dict:
    """Everything a batch could have written: instances (config, devices, status) and profiles."""
    instances = {item["name"]: (item["config"], item["devices"], item["status"], item["profiles"])
                 for item in query(f"/1.0/instances?project={PROJECT}&recursion=1")}
    profiles = sorted(item["name"] for item in query(f"/1.0/profiles?project={PROJECT}&recursion=1"))
    return {"instances": instances, "profiles": profiles}


@pytest.fixture
def taken_port():
    """A port something on this host listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


BAD_ENTRIES = {
    "unknown image": ({"name": "bad1", "image": "no/such/image"}, "image 'no/such/image' is not a local alias"),
    "missing profile": ({"name": "bad1", "profiles": ["default", "nosuch"]}, "profile(s) 'nosuch' do not exist"),
    "route twice in one instance": ({"name": "bad1", "proxy": [{"name": "b.batch.test", "pass": 80},
                                                               {"name": "b.batch.test", "pass": 81}]},
                                    "b.batch.test/ is already routed by proxy[0] of the same instance"),
    "config LXD refuses": ({"name": "bad1", "config": {"limits.memory": "lots", "user.fine": "1"}},
                           "instance 'bad1' in project 'mage-test-batch': config limits.memory='lots': LXD refuses it"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_one_bad_instance_refuses_the_batch_and_nothing_is_written(project, case):
    bad, message = BAD_ENTRIES[case]
    before = lxd_state()
    result = run_module({"instances": [{"name": "good1"}, {"name": "keep1", "config": {"user.a": "2"}}, bad]})
    assert "instances" not in result, result  # refused as a whole: no per-instance report
    assert message in result["msg"] and "Nothing was changed." in result["msg"], result["msg"]
    assert lxd_state() == before


def test_a_route_another_instance_already_publishes_warns_and_never_refuses_the_batch(project):
    # pub1 is not in the batch, and whoever may edit it may have written its record: the declared
    # route wins in mageproxy (whatever the case of the name), and pub1 is named in a warning.
    before = lxd_state()
    result = run_module({"instances": [{"name": "bad1", "proxy": [{"name": "KEEP.Batch.Test", "path": "/", "pass": 80}]}]},
                        "--check")
    assert "Nothing was changed" not in result.get("msg", "") and result["changed"] is True, result
    warning = " ".join(result["_stderr"].split())
    assert "instance 'pub1': proxy[0] keep.batch.test/: keep.batch.test is served by declared instance 'bad1'" in warning
    assert lxd_state() == before


def test_a_taken_host_port_refuses_the_batch_before_any_change(project, taken_port):
    before = lxd_state()
    result = run_module({"instances": [{"name": "good1"}, {"name": "bad1", "nat": [
        {"extport": taken_port, "intport": 80, "listen": "127.0.0.1"}]}]})
    assert f"nat tcp-{taken_port}: 127.0.0.1:{taken_port} is already in use on this host" in result["msg"], result
    assert lxd_state() == before


def test_a_user_proxy_device_on_a_taken_port_is_refused_before_any_change(project, taken_port):
    before = lxd_state()
    result = run_module({"name": "nostart1", "devices": {"web": {
        "type": "proxy", "listen": f"tcp:127.0.0.1:{taken_port}", "connect": "tcp:127.0.0.1:80"}}})
    assert f"device web: 127.0.0.1:{taken_port} is already in use on this host" in result["msg"], result
    assert lxd_state() == before


def test_a_new_instance_that_fails_after_starting_is_removed_and_named(project):
    # No NIC (the profile's is masked): it starts, but no address comes.
    result = run_module({"name": "noaddr2", "devices": {"eth0": {"type": "none"}}, "address_timeout": 2})
    assert "has no IPv4 address after 2s" in result["msg"], result
    assert "instance 'noaddr2' in project 'mage-test-batch' did not exist before this run and was removed again" \
        in result["msg"]
    assert "noaddr2" not in instance_names(PROJECT)


@pytest.mark.parametrize(("config", "warning"), [
    ({"security.privileged": "true"}, "config security.privileged=true runs it as the host's root"),
    ({"raw.lxc": "lxc.apparmor.profile=unconfined"}, "config raw.lxc passes settings straight to LXC"),
])
def test_settings_that_weaken_isolation_warn_also_in_check_mode_and_can_be_refused(project, config, warning):
    checked = run_module({"name": "unsafe1", "config": config}, "--check")
    assert warning in " ".join(checked["_stderr"].split()) and checked["changed"] is True
    refused = run_module({"name": "unsafe1", "config": config, "allow_unsafe": False})
    assert warning in refused["msg"] and "allow_unsafe is false" in refused["msg"]
    assert "unsafe1" not in instance_names(PROJECT)


def test_two_runs_at_once_do_not_interleave(project):
    batch = {"instances": [{"name": f"twice{i}", "config": {"user.n": str(i)}} for i in range(3)], "forks": 3}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: run_module(batch), range(2)))
    assert all("msg" not in result for result in results), [result.get("msg") for result in results]
    assert sorted(result["changed"] for result in results) == [False, True]
    assert {f"twice{i}" for i in range(3)} <= set(instance_names(PROJECT))


def test_no_scratch_profile_is_left_behind(project):
    # The config check offers config to LXD as a scratch profile; it must never stay.
    run_module({"instances": [{"name": "bad2", "config": {"limits.memory": "lots"}}]})
    names = [item["name"] for item in query("/1.0/profiles?recursion=1&project=default")]
    names += [item["name"] for item in query(f"/1.0/profiles?recursion=1&project={PROJECT}")]
    assert not [name for name in names if name.startswith("mage-check-")]
    assert json.dumps(lxd_state())  # the project is still readable as a whole


def test_a_declared_profile_lxd_refuses_stops_the_batch_before_the_project_exists(lab):
    project = "mage-test-batch-prof"
    delete_project(project)
    try:
        result = run_any_module("mage_lxd_instance", {
            **BASE, "project": project, "instances": [{"name": "p1"}],
            "project_profiles": [{"name": "bad", "config": {"limits.memory": "lots"}}]})
        assert f"profile 'bad' in project '{project}': config limits.memory='lots': LXD refuses it" in result["msg"]
        assert "Nothing was changed." in result["msg"]
        assert lxc("project", "show", project, check=False).returncode != 0
    finally:
        delete_project(project)


def test_profiles_declared_with_no_instances_go_to_the_tasks_project(lab):
    project = "mage-test-batch-only"
    delete_project(project)
    try:
        made = run_any_module("mage_lxd_instance", {
            "project": project, "instances": [], "project_profiles": [{"name": "solo", "config": {"limits.cpu": "1"}}]})
        assert made["changed"] is True, made.get("msg")
        assert query(f"/1.0/profiles/solo?project={project}")["config"]["limits.cpu"] == "1"
    finally:
        delete_project(project)


def test_keys_lxd_takes_only_on_instances_are_not_refused(project):
    # image.* keys are refused on profiles, so the scratch-profile check must leave them out.
    made = run_module({"name": "imgkey1", "config": {"image.description": "mine"}})
    assert "msg" not in made, made["msg"]


def test_an_instance_may_move_its_own_nat_port_to_another_address(project):
    first = run_module({"name": "natmove1", "nat": [{"extport": 18711, "intport": 80}]})
    assert "msg" not in first, first["msg"]
    moved = run_module({"name": "natmove1", "nat": [{"extport": 18711, "intport": 80, "listen": "127.0.0.1"}]})
    assert "msg" not in moved and moved["changed"] is True, moved.get("msg")
    device = query(f"/1.0/instances/natmove1?project={PROJECT}")["devices"]["mage-nat-tcp-18711"]
    assert device["listen"] == "tcp:127.0.0.1:18711"
