"""Plan the whole batch, then apply: a refusal anywhere changes nothing anywhere (real LXD)."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from lxd_lab import create_project, delete_project, instance_names, query
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
    # pub1 is not in the batch: what it already publishes counts, whatever the case of the name.
    "route of another instance": ({"name": "bad1", "proxy": [{"name": "KEEP.Batch.Test", "path": "/", "pass": 80}]},
                                  "instance 'pub1': proxy[0] keep.batch.test/ is already routed by instance 'bad1'"),
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


def test_a_taken_host_port_refuses_the_batch_before_any_change(project, taken_port):
    before = lxd_state()
    result = run_module({"instances": [{"name": "good1"}, {"name": "bad1", "nat": [
        {"extport": taken_port, "intport": 80, "listen": "127.0.0.1"}]}]})
    assert f"nat tcp-{taken_port}: 127.0.0.1:{taken_port} is already in use on this host" in result["msg"], result
    assert lxd_state() == before


def test_a_new_instance_that_cannot_start_is_removed_and_named(project, taken_port):
    # LXD accepts the definition and only fails at start: its own proxy device's port is taken.
    result = run_module({"name": "nostart1", "devices": {"web": {
        "type": "proxy", "listen": f"tcp:127.0.0.1:{taken_port}", "connect": "tcp:127.0.0.1:80"}}})
    assert "instance 'nostart1' in project 'mage-test-batch' did not exist before this run and was removed again" \
        in result["msg"], result
    assert "nostart1" not in instance_names(PROJECT)


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
