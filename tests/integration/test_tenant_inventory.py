"""A hostile tenant against the mage_lxd inventory, on the lab's real server.

The tenant may create instances and profiles in its own project and set any config on them
(`lxc config set`). The operator reads its own project and the tenant's. Each test asserts what
the operator sees: hosts and groups, where `ansible localhost` runs, warnings, and that
mage_lxd_instance still converges.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from lxd_lab import CLI, ansible, create_project, delete_project, inventory_list, launch, lxc, project_name, query
from lxd_lab import run_module

pytestmark = pytest.mark.integration

OPS = project_name("mage-test-tinv-ops")
TENANT = project_name("mage-test-tinv-tenant")
# Valid LXD project names (LXD refuses "_") that sanitize to one group name.
SHOP_DOT = project_name("mage-test-tinv-shop.prod")
SHOP_DASH = project_name("mage-test-tinv-shop-prod")
PROJECTS = (OPS, TENANT, SHOP_DOT, SHOP_DASH)
# About a kilobyte of brackets: it raised RecursionError in every inventory run.
NESTED = "[" * 600 + "]" * 600
# Deeper than Python's json decoder itself can go (RecursionError, not ValueError).
TOO_DEEP = "[" * 5000 + "]" * 5000
BASE = {"project": OPS, "image": "mage/busybox", "bootstrap": False, "image_server": ""}


def group(*parts: str) -> str:
    """The inventory's group name (dashes and dots become underscores)."""
    return "_".join(parts).replace("-", "_").replace(".", "_")


@pytest.fixture(scope="module")
def tenancy(lab):
    """Operator: db1 (profile db) and web in OPS. Tenant: localhost (running), web and tenant1 with
    its own profile db (root disk only: no NIC, so LXD's per-bridge DNS names do not refuse `web`),
    and nested JSON on tenant1. One instance in each of the shop.prod / shop-prod projects."""
    for project in PROJECTS:
        create_project(project)
    try:
        lxc("profile", "create", "db", "--project", OPS)
        lxc("profile", "create", "db", "--project", TENANT)
        lxc("profile", "device", "add", "db", "root", "disk", "path=/", f"pool={lab['MAGE_LAB_POOL']}",
            "--project", TENANT)
        launch(OPS, "db1", profiles=["default", "db"], start=False)
        launch(OPS, "web", start=False)
        launch(TENANT, "localhost")
        launch(TENANT, "web", profiles=["db"], start=False)
        launch(TENANT, "tenant1", profiles=["db"], start=False,
               config={"user.mage.proxy": NESTED, "user.mage.note": "kept"})
        launch(SHOP_DOT, "shop1", start=False)
        launch(SHOP_DASH, "shop2", start=False)
        yield
    finally:
        for project in PROJECTS:
            delete_project(project)


def write_config(directory: Path, body: str = "") -> Path:
    """The operator's inventory: OPS and the tenant's projects, nothing else (no group_vars)."""
    path = directory / "inventory" / "mage_lxd.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("plugin: mage_lxd\n" + f"projects: [{', '.join(json.dumps(p) for p in PROJECTS)}]\n"
                    + textwrap.dedent(body))
    return path


def warnings(result) -> str:
    return " ".join(result.stderr.split())


def test_an_instance_named_localhost_is_never_the_controller(tenancy, tmp_path):
    config = write_config(tmp_path)
    listed = ansible("ansible-inventory", "-i", str(config), "--list")
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert "localhost" not in hostvars and "db1" in hostvars
    # Still the operator's to manage, under a name that is not the controller's.
    assert hostvars[f"{TENANT}.localhost"]["mage_lxd_instance"] == {"__ansible_unsafe": "localhost"}
    assert ("mage_lxd inventory: the host name 'localhost' (hostname_format '{name}') is the controller's (plays on "
            "localhost, and tasks delegated to it, would run in the instance): instance 'localhost' in project "
            f"'{TENANT}' on 'local' is the host '{TENANT}.localhost'. Fix: set hostname_format to '{{project}}.{{name}}'"
            ) in warnings(listed)
    graph = ansible("ansible-inventory", "-i", str(config), "--graph").stdout
    assert "|--localhost" not in graph and f"|--{TENANT}.localhost" in graph

    # Ad hoc and in a play, localhost is the controller: a directory only the controller has is there,
    # and no lxd_project of the tenant's steers it (site.yml and teardown.yml read that one).
    adhoc = ansible("ansible", "-i", str(config), "localhost", "-m", "ansible.builtin.raw",
                    "-a", f"test -d {tmp_path} && echo on-the-controller")
    assert "on-the-controller" in adhoc.stdout
    steered = ansible("ansible", "-i", str(config), "localhost", "-m", "ansible.builtin.debug",
                      "-a", "msg={{ lxd_project | default('none') }}")
    assert '"msg": "none"' in steered.stdout
    playbook = tmp_path / "delegate.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: {group("project", OPS)}
          gather_facts: false
          tasks:
            - ansible.builtin.raw: test -d {tmp_path} && echo delegated-to-the-controller
              delegate_to: localhost
              run_once: true
              changed_when: false
              register: seen
            - ansible.builtin.debug:
                msg: "{{{{ seen.stdout | trim }}}}"
              run_once: true
        """))
    assert "delegated-to-the-controller" in ansible("ansible-playbook", "-i", str(config), str(playbook)).stdout


def test_a_tenants_instance_named_like_the_operators_takes_no_host(tenancy, tmp_path):
    listed = ansible("ansible-inventory", "-i", str(write_config(tmp_path)), "--list")
    inventory = json.loads(listed.stdout)
    hostvars = inventory["_meta"]["hostvars"]
    assert "web" not in hostvars
    assert hostvars[f"{OPS}.web"]["lxd_project"] == {"__ansible_unsafe": OPS}
    assert hostvars[f"{TENANT}.web"]["lxd_project"] == {"__ansible_unsafe": TENANT}
    assert sorted(inventory[group("project", OPS)]["hosts"]) == ["db1", f"{OPS}.web"]
    assert ("the host name 'web' (hostname_format '{name}') would be given to more than one instance (they would "
            f"be one host): instance 'web' in project '{OPS}' on 'local' is the host '{OPS}.web'; instance 'web' in "
            f"project '{TENANT}' on 'local' is the host '{TENANT}.web'.") in warnings(listed)

    hostvars = inventory_list(write_config(tmp_path, 'hostname_format: "{project}.{name}"\n'))["_meta"]["hostvars"]
    assert {f"{OPS}.web", f"{TENANT}.web", f"{TENANT}.localhost", f"{OPS}.db1"} <= set(hostvars)


def test_a_tenants_profile_db_joins_no_group_of_the_operators(tenancy, tmp_path):
    inventory = inventory_list(write_config(tmp_path))
    assert inventory[group("profile", OPS, "_db")]["hosts"] == ["db1"]
    assert sorted(inventory[group("profile", TENANT, "_db")]["hosts"]) == [f"{TENANT}.web", "tenant1"]
    assert "profile_db" not in inventory
    operator_groups = {name for name, body in inventory.items() if "db1" in body.get("hosts", [])}
    shared = {name for name in operator_groups if "tenant1" in inventory[name].get("hosts", [])}
    # What both are, by the server's own account, and nothing that names a profile or project, nor
    # the os and release their own image.os and image.release config claim (both say busybox).
    assert shared <= {"lxd", "status_stopped", "type_container"}
    assert sorted(inventory[group("os", OPS, "_busybox")]["hosts"]) == ["db1", f"{OPS}.web"]

    # One project read: plain profile groups, as before.
    single = tmp_path / "single"
    single.mkdir()
    (single / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{OPS}]\n")
    assert inventory_list(single / "mage_lxd.yml")["profile_db"]["hosts"] == ["db1"]


def test_projects_whose_names_sanitize_alike_share_no_group(tenancy, tmp_path):
    listed = ansible("ansible-inventory", "-i", str(write_config(tmp_path)), "--list")
    inventory = json.loads(listed.stdout)
    shared_name = group("project", SHOP_DASH)
    assert shared_name not in inventory
    assert {"shop1", "shop2"} <= set(inventory["_meta"]["hostvars"])
    assert (f"group '{shared_name}' would hold project '{SHOP_DASH}' and project '{SHOP_DOT}'; it is left out for "
            f"instance 'shop1' in project '{SHOP_DOT}' on 'local', instance 'shop2' in project '{SHOP_DASH}' on "
            "'local' (group_by). Fix: rename one of them") in warnings(listed)


def test_nested_json_drops_only_that_record(tenancy, tmp_path):
    config = write_config(tmp_path)
    listed = ansible("ansible-inventory", "-i", str(config), "--list")
    hostvars = json.loads(listed.stdout)["_meta"]["hostvars"]
    assert {"db1", "tenant1", "shop1", "shop2"} <= set(hostvars)
    assert hostvars["tenant1"]["lxd_mage"] == {"note": {"__ansible_unsafe": "kept"}}
    assert (f"instance 'tenant1' in project '{TENANT}' on 'local': user.mage.proxy nests more than 32 levels deep, "
            "so it is left out of lxd_mage (the rest of the inventory is unaffected). Fix: correct or remove it "
            f"({CLI} config unset tenant1 user.mage.proxy --project {TENANT}).") in warnings(listed)
    assert ansible("ansible-inventory", "-i", str(config), "--graph").returncode == 0


def test_mage_lxd_instance_converges_beside_nested_records(tenancy):
    # The neighbour's routes and the instance's own user.mage.managed, set by hand.
    lxc("config", "set", "db1", "user.mage.proxy", TOO_DEEP, "--project", OPS)
    lxc("config", "set", "web", "user.mage.managed", TOO_DEEP, "--project", OPS)
    lxc("config", "set", "web", "user.note", "set by hand", "--project", OPS)
    route = {"name": "web.tinv.test", "path": "/", "pass": 80}
    declared = {**BASE, "name": "web", "proxy": [route]}
    result = run_module("mage.lxd.mage_lxd_instance", declared, project=OPS)
    assert not result.get("failed"), result.get("msg")
    config = query(f"/1.0/instances/web?project={OPS}")["config"]
    assert json.loads(config["user.mage.proxy"]) == [route] and config["user.note"] == "set by hand"

    # A string where mage-lxd writes a list of the keys it set: none of them is taken for its own.
    lxc("config", "set", "web", "user.mage.managed", '{"config": "user.note"}', "--project", OPS)
    result = run_module("mage.lxd.mage_lxd_instance", declared, project=OPS)
    assert not result.get("failed"), result.get("msg")
    assert query(f"/1.0/instances/web?project={OPS}")["config"]["user.note"] == "set by hand"


def test_the_inventory_cache_is_private(tenancy, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o755)  # what ansible-core's cache plugin makes
    config = write_config(tmp_path, f"cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {cache}\n")
    for _ in range(2):  # written, then read from the cache
        assert "db1" in inventory_list(config)["_meta"]["hostvars"]
        files = list(cache.iterdir())
        assert files and stat.S_IMODE(cache.stat().st_mode) == 0o700
        assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    refused = ansible("ansible-inventory", "-i", str(write_config(
        tmp_path, f"cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {shared}\n")),
        "--list", check=False)
    assert refused.returncode != 0 and list(shared.iterdir()) == []
    assert f"cache_connection '{shared}' is shared (mode 1777)" in warnings(refused)
