"""mage_lxd_instance's options on the real lab: one documented spec, Ansible's rules for values."""

from __future__ import annotations

import pytest

from lxd_lab import delete_project, lxc, query, run_module

pytestmark = pytest.mark.integration

PROJECT = "mage-test-opts"
BASE = {"project": PROJECT, "image": "mage/busybox", "image_server": ""}


@pytest.fixture(scope="module")
def project(lab):
    delete_project(PROJECT)
    try:
        yield PROJECT
    finally:
        delete_project(PROJECT)


@pytest.mark.parametrize(("args", "message"), [
    ({"name": "o1", "forks": "x"}, "argument 'forks' is of type str and we were unable to convert to int"),
    ({"name": "o1", "operation_timeout": "abc"}, "argument 'operation_timeout' is of type str"),
    ({"name": "o1", "address_timeout": ".nan"}, "address_timeout"),
    ({"name": "o1", "colour": "red"}, "colour. Supported parameters include"),
    ({"instances": [{"name": "o1", "colour": "red"}]}, "instances[0] (o1): colour. Supported parameters include"),
    ({"name": "o1", "state": "gone"}, "value of state must be one of"),
    ({"name": "o1", "ephemeral": "maybe"}, "ephemeral"),
    ({"name": "o1", "nat": [{"intport": 80}]}, "missing required arguments: extport found in nat"),
    ({"name": "o1", "forks": 0}, "forks must be 1 or more"),
])
def test_bad_values_are_refused_with_the_option_named_and_nothing_made(project, args, message):
    # The inventory reads the default project: the task's own project must not exist afterwards either.
    result = run_module("mage_lxd_instance", {**BASE, **args})
    assert "actions" not in result and "projects" not in result, result
    assert message in result["msg"] and "Traceback" not in result["msg"]
    assert lxc("project", "show", PROJECT, check=False).returncode != 0, "a refused task created the project"


def test_quoted_booleans_mean_what_they_say_and_no_data_is_lost(project):
    # -e key=no, INI inventories and templates give text: 'false' must never mean true.
    made = run_module("mage_lxd_instance", {**BASE, "name": "o2", "ephemeral": "false", "bootstrap": "no"})
    assert made["actions"] == ["created", "started"], made
    assert query(f"/1.0/instances/o2?project={PROJECT}")["ephemeral"] is False
    lxc("exec", "o2", "--project", PROJECT, "--", "sh", "-c", "echo kept > /root/data")

    other_image = {**BASE, "image": "mage/debian-12-nopython", "name": "o2", "rebuild": "no", "bootstrap": "off"}
    kept = run_module("mage_lxd_instance", other_image, project=PROJECT)
    assert kept["changed"] is False and "set rebuild: true to recreate it" in " ".join(kept["_stderr"].split())
    assert lxc("exec", "o2", "--project", PROJECT, "--", "cat", "/root/data").stdout == "kept\n"
    lxc("stop", "o2", "--project", PROJECT)
    assert "o2" in lxc("list", "--project", PROJECT, "-f", "csv", "-c", "n").stdout
