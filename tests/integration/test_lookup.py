"""The mage_lxd lookup on the lab's real LXD."""

from __future__ import annotations

import json

import pytest

from lxd_lab import create_project, delete_project, launch, project_name, run_module, wait_for_leases

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-lookup")


@pytest.fixture(scope="module")
def instances(lab):
    create_project(PROJECT)
    try:
        launch(PROJECT, "web1", config={"user.mage.proxy": json.dumps([{"name": "w.example.org", "pass": 80}])})
        launch(PROJECT, "web2")
        launch(PROJECT, "db1", start=False)
        yield wait_for_leases(PROJECT, ["web1", "web2"])
    finally:
        delete_project(PROJECT)


def debug(expression: str) -> dict:
    return run_module("ansible.builtin.debug", {"msg": expression}, project=PROJECT)


def test_one_instance_and_a_pattern_of_addresses(instances):
    web1 = debug(f"{{{{ lookup('mage_lxd', 'web1', project='{PROJECT}') }}}}")["msg"]
    assert web1["status"] == "running" and web1["address"] == instances["web1"]
    assert web1["mage"]["proxy"] == [{"name": "w.example.org", "pass": 80}]
    addresses = debug(f"{{{{ query('mage_lxd', 'web*', key='ipv4', project='{PROJECT}') }}}}")["msg"]
    assert sorted(addresses) == sorted(instances.values())
    assert debug(f"{{{{ lookup('mage_lxd', 'db1', key='status', project='{PROJECT}') }}}}")["msg"] == "stopped"


def test_unknown_instance_is_an_error_or_the_default(instances):
    failed = debug(f"{{{{ lookup('mage_lxd', 'nope', project='{PROJECT}') }}}}")
    assert f"no instance matches 'nope' in project '{PROJECT}'" in failed["msg"]
    assert debug(f"{{{{ lookup('mage_lxd', 'nope', project='{PROJECT}', default='none') }}}}")["msg"] == "none"
