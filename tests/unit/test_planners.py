"""The pure planners on plain data: what an instance, its state, a profile, a batch's routes and a
NAT rule's network forwards need."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.batch_checks import route_check
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.nat import NatRule, plan_forwards
from ansible_collections.mage.lxd.plugins.plugin_utils.projects import ProfileSpec, desired_profile
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import (
    MANAGED_KEY, NAT_KEY, PROXY_KEY, InstanceFacts, plan_instance, state_steps)

IMAGE = {"type": "image", "alias": "mage/debian-12"}


def _current(status: str = "Running", config: dict | None = None, devices: dict | None = None,
             profiles: list | None = None) -> dict:
    # The shape GET /1.0/instances/NAME answers with (the parts the planner reads).
    return {"name": "web1", "status": status, "profiles": profiles or ["default"], "ephemeral": False,
            "config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:01", **(config or {})}, "devices": devices or {}}


def test_a_new_instance_is_created_stopped_then_started():
    spec = parse_spec({"name": "web1", "image": "mage/debian-12", "config": {"limits.cpu": "1"}})
    plan = plan_instance(spec, InstanceFacts(current=None, image_source=IMAGE))
    assert plan.create == {"name": "web1", "type": "container", "source": IMAGE, "ephemeral": False,
                           "config": {"limits.cpu": "1", MANAGED_KEY: '{"config":["limits.cpu"],"devices":[]}'},
                           "devices": {}, "profiles": ["default"]}
    assert (plan.delete, plan.update) == (False, None)
    assert plan.state_steps == [("started", {"action": "start"}, "Running")]
    assert plan.result.actions == ["created", "started"] and plan.result.status == "running"
    assert plan.result.diff["before"] == {"state": "absent"}


def test_an_instance_as_declared_plans_no_write():
    spec = parse_spec({"name": "web1", "image": "mage/debian-12"})
    current = _current(config={MANAGED_KEY: '{"config":[],"devices":[]}'})
    plan = plan_instance(spec, InstanceFacts(current=current, etag='"e1"'))
    assert (plan.create, plan.update, plan.delete, plan.state_steps) == (None, None, False, [])
    assert not plan.result.changed and plan.result.status == "running"


def test_a_reconfigured_instance_keeps_what_others_set_and_drops_what_it_set_before():
    spec = parse_spec({"name": "web1", "image": "mage/debian-12", "config": {"limits.memory": "1GiB"},
                       "proxy": [{"name": "web1.example.org", "pass": 8080}]})
    current = _current(config={"limits.cpu": "2", "user.owner": "ops", "boot.autostart": "true",
                               MANAGED_KEY: '{"config":["limits.cpu"],"devices":[]}'})
    plan = plan_instance(spec, InstanceFacts(current=current))
    config = plan.update["config"]
    assert "limits.cpu" not in config  # ours before, no longer declared
    assert config["user.owner"] == "ops" and config["boot.autostart"] == "true"  # someone else's
    assert config["limits.memory"] == "1GiB"
    assert json.loads(config[PROXY_KEY]) == [{"name": "web1.example.org", "pass": 8080}]
    assert NAT_KEY not in config
    assert plan.result.actions == ["reconfigured"]


def test_a_secret_is_masked_in_the_diff_but_written():
    spec = parse_spec({"name": "web1", "image": "mage/debian-12", "config": {"environment.db_password": "hunter2"}})
    plan = plan_instance(spec, InstanceFacts(current=_current(config={MANAGED_KEY: '{"config":[],"devices":[]}'})))
    assert plan.update["config"]["environment.db_password"] == "hunter2"
    assert "hunter2" not in json.dumps(plan.result.diff)


def test_a_rebuild_deletes_then_creates_and_an_absent_instance_is_deleted():
    spec = parse_spec({"name": "web1", "image": "mage/debian-12", "rebuild": "yes"})
    plan = plan_instance(spec, InstanceFacts(current=_current(), image_source=IMAGE, image_differs=True))
    assert plan.delete and plan.create["source"] == IMAGE
    assert plan.result.actions[:2] == ["rebuilt (image changed)", "created"]
    gone = plan_instance(parse_spec({"name": "web1", "state": "absent"}), InstanceFacts(current=_current()))
    assert gone.delete and gone.create is None and gone.result.status == "absent"
    assert plan_instance(parse_spec({"name": "web1", "state": "absent"}), InstanceFacts(current=None)).delete is False


def test_an_image_that_moved_on_is_kept_with_a_warning_unless_rebuild():
    spec = parse_spec({"name": "web1", "image": "mage/debian-12", "rebuild": "no"})
    plan = plan_instance(spec, InstanceFacts(current=_current(config={MANAGED_KEY: '{"config":[],"devices":[]}'}),
                                             image_differs=True))
    assert not plan.delete and plan.create is None
    assert any("set rebuild: true" in warning for warning in plan.result.warnings)


@pytest.mark.parametrize(("state", "status", "steps"), [
    ("started", "Running", []),
    ("started", "Stopped", [("started", "start")]),
    ("started", "Frozen", [("unfrozen", "unfreeze")]),
    ("stopped", "Running", [("stopped", "stop")]),
    ("stopped", "Stopped", []),
    ("restarted", "Running", [("restarted", "restart")]),
    ("restarted", "Stopped", [("restarted", "start")]),
    ("restarted", "Frozen", [("unfrozen", "unfreeze"), ("restarted", "restart")]),
    ("frozen", "Stopped", [("started", "start"), ("frozen", "freeze")]),
    ("frozen", "Running", [("frozen", "freeze")]),
    ("frozen", "Frozen", []),
])
def test_state_steps_go_from_any_status_to_any_state(state, status, steps):
    assert [(label, body["action"]) for label, body, _after in state_steps(state, status)] == steps


def test_a_stop_is_bounded_and_the_last_step_says_the_status_after():
    steps = state_steps("stopped", "Running")
    assert steps[-1][1]["timeout"] > 0 and steps[-1][2] == "Stopped"


def test_a_new_profile_records_what_it_manages():
    spec = ProfileSpec(name="web", description="web servers", config={"limits.cpu": "2"},
                       devices={"data": {"type": "disk", "path": "/srv", "source": "/srv/web"}})
    assert desired_profile(spec, None) == {
        "description": "web servers", "config": {"limits.cpu": "2", MANAGED_KEY: '{"config":["limits.cpu"],"devices":["data"]}'},
        "devices": {"data": {"type": "disk", "path": "/srv", "source": "/srv/web"}}}


def test_a_profile_keeps_what_others_set_and_its_description():
    spec = ProfileSpec(name="web", config={"limits.memory": "1GiB"})
    current = {"name": "web", "description": "set by ops",
               "config": {"limits.cpu": "2", "user.note": "ops", MANAGED_KEY: '{"config":["limits.cpu"],"devices":["old"]}'},
               "devices": {"old": {"type": "nic"}, "eth1": {"type": "nic", "network": "other"}}}
    wanted = desired_profile(spec, current)
    assert wanted["description"] == "set by ops"
    assert wanted["config"] == {"user.note": "ops", "limits.memory": "1GiB",
                                MANAGED_KEY: '{"config":["limits.memory"],"devices":[]}'}
    assert wanted["devices"] == {"eth1": {"type": "nic", "network": "other"}}
    # An unreadable record (edited by hand) manages nothing: nothing of the user's is dropped.
    edited = desired_profile(spec, {**current, "config": {"limits.cpu": "2", MANAGED_KEY: "{not json"}})
    assert edited["config"]["limits.cpu"] == "2"


def test_declared_routes_that_clash_refuse_the_batch():
    refusals, warnings = route_check([("web1", [{"name": "a.example.org", "pass": 80}]),
                                      ("web2", [{"name": "a.example.org", "pass": 80}])], [])
    assert len(refusals) == 1 and "is already routed by instance 'web1': proxy[0]" in refusals[0]
    assert warnings == []


def test_a_record_on_a_declared_name_is_warned_about_and_never_refuses():
    declared = [("web1", [{"name": "a.example.org", "pass": 80}])]
    refusals, warnings = route_check(declared, [("old", [{"name": "a.example.org", "path": "/x", "pass": 80}])])
    assert refusals == [] and len(warnings) == 1
    assert warnings[0].startswith("instance 'old': proxy[0] a.example.org/x: a.example.org is served by declared "
                                  "instance 'web1'")
    # A broken record elsewhere is not this batch's to judge, and another name is no clash.
    assert route_check(declared, [("junk", [{"name": "b.example.org", "pass": "x"}])]) == ([], [])
    assert route_check(declared, [("other", [{"name": "b.example.org", "pass": 80}])]) == ([], [])


TAG = "mage-lxd:shop/web1"
RULE = NatRule(extport=8080, intport=80, intif="magebr0", backend="forward", listen="10.99.0.1")
LISTEN = {"tcp-8080": "10.99.0.1"}
TARGETS = {"tcp-8080": "10.187.32.10"}
OURS = {"description": f"{TAG}:tcp-8080", "protocol": "tcp", "listen_port": "8080", "target_port": "80",
        "target_address": "10.187.32.10"}


def test_a_first_forward_is_made_for_the_listen_address():
    writes = plan_forwards(TAG, [RULE], TARGETS, LISTEN, "", {"magebr0": []})
    assert writes == [("post", "networks/magebr0/forwards",
                       {"listen_address": "10.99.0.1", "description": "mage-lxd", "ports": [OURS]}, None)]


def test_forwards_as_wanted_need_no_write_and_other_ports_are_kept():
    theirs = {"description": "ops:ssh", "protocol": "tcp", "listen_port": "2222", "target_port": "22",
              "target_address": "10.187.32.11"}
    listed = {"magebr0": [{"listen_address": "10.99.0.1", "description": "by hand", "config": {},
                           "ports": [theirs, OURS]}]}
    assert plan_forwards(TAG, [RULE], TARGETS, LISTEN, "", listed) == []
    moved = plan_forwards(TAG, [RULE], {"tcp-8080": "10.187.32.12"}, LISTEN, "", listed)
    assert moved == [("put", "networks/magebr0/forwards/10.99.0.1",
                      {"description": "by hand", "config": {}, "ports": [theirs, OURS | {"target_address": "10.187.32.12"}]},
                      None)]


def test_a_forward_left_empty_is_deleted_only_when_we_made_it():
    ours = {"magebr0": [{"listen_address": "10.99.0.1", "description": "mage-lxd", "ports": [OURS]}]}
    assert plan_forwards(TAG, [], TARGETS, LISTEN, "", ours) == [
        ("delete", "networks/magebr0/forwards/10.99.0.1", None, None)]
    made_by_hand = {"magebr0": [{"listen_address": "10.99.0.1", "description": "by hand", "ports": [OURS]}]}
    assert plan_forwards(TAG, [], TARGETS, LISTEN, "", made_by_hand)[0][0] == "put"


def test_on_a_cluster_ours_go_on_the_instances_member_and_leave_the_old_one():
    listed = {"magebr0": [{"listen_address": "10.99.0.1", "description": "mage-lxd", "location": "m1",
                           "ports": [OURS]}]}
    writes = plan_forwards(TAG, [RULE], TARGETS, LISTEN, "m2", listed, clustered=True)
    assert writes == [("delete", "networks/magebr0/forwards/10.99.0.1", None, {"target": "m1"}),
                      ("post", "networks/magebr0/forwards",
                       {"listen_address": "10.99.0.1", "description": "mage-lxd", "ports": [OURS]}, {"target": "m2"})]


def test_a_forward_rule_without_a_listen_address_is_refused():
    with pytest.raises(OptionError, match="nat tcp-8080 with backend forward needs listen or extif"):
        plan_forwards(TAG, [RULE], TARGETS, {}, "", {"magebr0": []})
