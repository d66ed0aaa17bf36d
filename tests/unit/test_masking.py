"""Secret config values never reach output: diffs show that a key changed, the inventory that it is set."""

from __future__ import annotations

import json

from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import InventoryOptions, host_variables
from ansible_collections.mage.lxd.plugins.plugin_utils.masking import HIDDEN, HIDDEN_CHANGED, masked_diff
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import InstanceFacts, plan_instance
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote

SECRETS = {"environment.db_password": "hunter2-old", "user.user-data": "#cloud-config\npassword: cloud-old",
           "cloud-init.user-data": "#cloud-config\nchpasswd: {list: 'root:ci-old'}"}


def test_a_changed_secret_shows_as_changed_an_unchanged_one_as_hidden_and_others_as_they_are():
    before = {"config": {"environment.A": "a1", "environment.B": "b", "limits.cpu": "1"}, "state": "running"}
    after = {"config": {"environment.A": "a2", "environment.B": "b", "environment.C": "c", "limits.cpu": "2"}}
    shown_before, shown_after = masked_diff(before, after)
    assert shown_before == {"config": {"environment.A": HIDDEN, "environment.B": HIDDEN, "limits.cpu": "1"},
                            "state": "running"}
    assert shown_after["config"] == {"environment.A": HIDDEN_CHANGED, "environment.B": HIDDEN,
                                     "environment.C": HIDDEN, "limits.cpu": "2"}
    assert masked_diff({"state": "absent"}, after)[0] == {"state": "absent"}


def test_an_instance_plan_diff_holds_no_secret_value_old_or_new():
    spec = parse_spec({"name": "web1", "project": "p", "config": {
        "environment.db_password": "hunter2-new", "user.user-data": "#cloud-config\npassword: cloud-new"}}, {})
    current = {"name": "web1", "status": "Running", "config": dict(SECRETS), "devices": {}, "profiles": ["default"]}
    plan = plan_instance(spec, InstanceFacts(current=current, etag="", location="", listen={}, image_source=None))
    text = json.dumps(plan.result.as_dict())
    for secret in ("hunter2", "cloud-old", "cloud-new", "ci-old"):
        assert secret not in text, text
    assert plan.result.diff["after"]["config"]["environment.db_password"] == HIDDEN_CHANGED
    assert plan.update["config"]["environment.db_password"] == "hunter2-new"  # what is written is the real value


def test_the_inventory_shows_that_a_secret_is_set_not_its_value():
    instance = {"name": "web1", "status": "Running", "config": {**SECRETS, "user.role": "frontend"},
                "expanded_config": {**SECRETS, "user.role": "frontend"}, "profiles": [], "location": "none",
                "state": {"network": {}}, "type": "container", "project": "default", "expanded_devices": {}}
    variables = host_variables(instance, Remote(), InventoryOptions())
    assert variables["lxd_config"]["user.role"] == "frontend"
    assert variables["lxd_config"]["environment.db_password"] == HIDDEN
    assert "hunter2" not in json.dumps(variables) and "ci-old" not in json.dumps(variables)
