"""The mage_lxd inventory against the lab's real LXD: two projects, two profiles, running and stopped."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lxd_lab import (LAB, TITLE, ansible, create_project, delete_project, inventory_list, lab_remote, launch, lxc,
                     project_name, query, wait_for_leases)
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import local_socket_path
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot
from ansible_collections.mage.lxd.plugins.plugin_utils.transport import ApiSession

pytestmark = pytest.mark.integration

PROJECT_A = project_name("mage-test-inv-a")
PROJECT_B = project_name("mage-test-inv-b")
HOSTILE_DESCRIPTION = "{{ lookup('ansible.builtin.pipe', 'touch MARKER') }}"
ROUTES = [{"name": "web1.example.org", "path": "/", "pass": 8080}]


@pytest.fixture(scope="module")
def instances(lab):
    """web1 (running, profiles default+web), db1 (stopped) in project A; web2 (Debian) in B."""
    create_project(PROJECT_A, profiles=["web"])
    create_project(PROJECT_B)
    try:
        launch(PROJECT_A, "web1", profiles=["default", "web"],
               config={"user.role": "frontend", "user.mage.proxy": json.dumps(ROUTES)})
        launch(PROJECT_A, "db1", start=False)
        launch(PROJECT_B, "web2", image="mage/debian-12")
        addresses = wait_for_leases(PROJECT_A, ["web1"]) | wait_for_leases(PROJECT_B, ["web2"])
        yield addresses
    finally:
        delete_project(PROJECT_A)
        delete_project(PROJECT_B)


def write_config(directory: Path, body: str) -> Path:
    path = directory / "mage_lxd.yml"
    path.write_text("plugin: mage_lxd\n" + textwrap.dedent(body))
    return path


def group(key: str, value: str) -> str:
    """The inventory's group name for a value (dashes become underscores)."""
    return f"{key}_{value}".replace("-", "_")


def test_list_matches_what_lxd_holds(instances, tmp_path):
    inventory = inventory_list(write_config(tmp_path, f"projects: [{PROJECT_A}, {PROJECT_B}]\n"))
    hostvars = inventory["_meta"]["hostvars"]

    assert set(hostvars) == {"web1", "db1", "web2"}
    assert sorted(inventory["lxd"]["hosts"]) == ["db1", "web1", "web2"]
    assert sorted(inventory[group("project", PROJECT_A)]["hosts"]) == ["db1", "web1"]
    assert inventory[group("project", PROJECT_B)]["hosts"] == ["web2"]
    # Two projects read: profile and network groups carry the project (a profile belongs to one).
    assert inventory[group("profile", f"{PROJECT_A}__web")]["hosts"] == ["web1"]
    assert inventory["status_stopped"]["hosts"] == ["db1"]
    assert sorted(inventory["status_running"]["hosts"]) == ["web1", "web2"]
    # So do os and release groups: they are what the instance's own image.os and image.release say.
    assert inventory[group("os", f"{PROJECT_B}__debian")]["hosts"] == ["web2"]
    assert inventory[group("release", f"{PROJECT_B}__debian_12")]["hosts"] == ["web2"]
    assert "os_debian" not in inventory
    assert sorted(inventory["type_container"]["hosts"]) == ["db1", "web1", "web2"]
    assert sorted(inventory[group("network", f"{PROJECT_A}__{LAB['MAGE_LAB_BRIDGE']}")]["hosts"]) == ["db1", "web1"]
    assert inventory[group("network", f"{PROJECT_B}__{LAB['MAGE_LAB_BRIDGE']}")]["hosts"] == ["web2"]

    for name, project in (("web1", PROJECT_A), ("db1", PROJECT_A), ("web2", PROJECT_B)):
        lxd_view = query(f"/1.0/instances/{name}?project={project}")
        host = hostvars[name]
        assert host["lxd_project"] == project
        assert host["lxd_status"] == lxd_view["status"].lower()
        assert host["lxd_profiles"] == lxd_view["profiles"]
        assert host["lxd_image_os"] == lxd_view["config"]["image.os"]
        assert host["mage_lxd_instance"] == name and host["mage_lxd_project"] == project

    # Addresses from leases equal what the instance itself reports in its state.
    for name, project in (("web1", PROJECT_A), ("web2", PROJECT_B)):
        state = query(f"/1.0/instances/{name}/state?project={project}")
        inet = [a["address"] for a in state["network"]["eth0"]["addresses"] if a["family"] == "inet"]
        assert hostvars[name]["lxd_ipv4"] == {"eth0": inet}
        assert hostvars[name]["lxd_address"] == instances[name] == hostvars[name]["ansible_host"]
    assert hostvars["db1"]["lxd_address"] == "" and "ansible_host" not in hostvars["db1"]

    assert hostvars["web1"]["lxd_mage"]["proxy"] == ROUTES
    assert hostvars["web1"]["lxd_config"]["user.role"] == "frontend"
    assert all(hostvars[name]["ansible_connection"] == "mage.lxd.mage_lxd" for name in hostvars)


def test_filters_and_constructed_groups(instances, tmp_path):
    config = write_config(tmp_path, f"""\
        projects: [{PROJECT_A}, {PROJECT_B}]
        filters:
          status: [running]
        keyed_groups:
          - key: lxd_config['user.role'] | default('none')
            prefix: role
        groups:
          web_tier: "'web' in lxd_profiles"
        compose:
          mage_short_release: lxd_image_release[:2]
        """)
    inventory = inventory_list(config)
    assert set(inventory["_meta"]["hostvars"]) == {"web1", "web2"}
    assert inventory["role_frontend"]["hosts"] == ["web1"]
    assert inventory["web_tier"]["hosts"] == ["web1"]
    assert inventory["_meta"]["hostvars"]["web2"]["mage_short_release"] == "12"


def test_a_template_read_from_lxd_is_never_evaluated(instances, tmp_path):
    marker = tmp_path / "evaluated"
    description = HOSTILE_DESCRIPTION.replace("MARKER", str(marker))
    lxc("query", "-X", "PATCH", f"/1.0/instances/web1?project={PROJECT_A}",
        "--data", json.dumps({"description": description}))
    config = write_config(tmp_path, f"projects: [{PROJECT_A}]\n")
    playbook = tmp_path / "show.yml"
    playbook.write_text(textwrap.dedent("""\
        - name: Show what LXD holds
          hosts: web1
          gather_facts: false
          tasks:
            - name: Print the description
              ansible.builtin.debug:
                msg: "description={{ lxd_description }}"
        """))
    # Extra vars outrank the inventory: debug runs on the controller, no connection needed.
    result = ansible("ansible-playbook", "-i", str(config), str(playbook), "-e", "ansible_connection=local")
    assert f"description={description}" in result.stdout
    assert not marker.exists()
    listed = json.loads(ansible("ansible-inventory", "-i", str(config), "--list").stdout)
    assert listed["_meta"]["hostvars"]["web1"]["lxd_description"] == {"__ansible_unsafe": description}


def test_group_vars_and_host_vars_override_the_connection(instances, tmp_path):
    config = write_config(tmp_path, f"projects: [{PROJECT_A}]\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "lxd.yml").write_text("ansible_connection: ssh\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "db1.yml").write_text("ansible_connection: local\n")
    web1 = json.loads(ansible("ansible-inventory", "-i", str(config), "--host", "web1").stdout)
    db1 = json.loads(ansible("ansible-inventory", "-i", str(config), "--host", "db1").stdout)
    assert web1["ansible_connection"] == "ssh"
    assert db1["ansible_connection"] == "local"


def test_graph_from_the_repo_root_lists_lab_containers_under_lxd(instances):
    graph = ansible("ansible-inventory", "--graph", "lxd").stdout
    assert "@lxd:" in graph
    for name in ("web1", "db1", "web2"):
        assert f"--{name}\n" in graph


def test_request_count_does_not_grow_with_instances(lab):
    project = project_name("mage-test-inv-count")
    create_project(project)
    try:
        counts = []
        for total in (2, 8):
            present = len(query(f"/1.0/instances?project={project}") or [])
            for index in range(present, total):
                launch(project, f"c{index}")
            wait_for_leases(project, [f"c{index}" for index in range(total)])
            session = CountingSession(lab_remote(), local_socket_path(lab_remote().url))
            api = LxdApi(lab_remote(), session=session)
            snapshot = take_snapshot(api, [project])
            assert len(snapshot["instances"]) == total
            assert all(item["addresses"] for item in snapshot["instances"])
            counts.append(session.count)
        # GET /1.0, GET /1.0/projects, the instance list, the network list, one lease list: 5 whatever the count.
        assert counts == [5, 5]
    finally:
        delete_project(project)


class CountingSession(ApiSession):
    """Counts the HTTP requests a snapshot sends."""

    count = 0

    def request(self, *args, **kwargs):
        self.count += 1
        return super().request(*args, **kwargs)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("remotes: [{name: gone, url: 'unix:/nonexistent/lxd.socket'}]\n",
         "LXD remote 'gone' (unix:/nonexistent/lxd.socket): the socket /nonexistent/lxd.socket does not exist"),
        ("remotes: [{name: gone, url: 'unix:/nonexistent/incus/unix.socket'}]\n",
         "Incus remote 'gone' (unix:/nonexistent/incus/unix.socket): the socket /nonexistent/incus/unix.socket does "
         "not exist. Fix: start Incus"),
        ("projects: [mage-test-no-such-project]\n",
         f"projects: mage-test-no-such-project not found on {TITLE} remote 'local'"),
        ("group_by: [colour]\n", "group_by"),
        ("hostname_format: '{name.__class__}'\n", "hostname_format"),
        ("remotes: [{name: r, url: 'https://127.0.0.1:1'}]\n", "an HTTPS remote needs client_cert and client_key"),
        ("remotes: [{name: r, url: 'ftp://x'}]\n", "url 'ftp://x' is neither https://"),
        ("filters: {colour: [red]}\n", "filters: unknown key(s) colour"),
    ],
)
def test_bad_input_fails_with_one_clear_error(lab, tmp_path, body, expected):
    result = ansible("ansible-inventory", "-i", str(write_config(tmp_path, body)), "--list", check=False)
    assert result.returncode != 0
    assert expected in " ".join(result.stderr.split())


def test_cache_serves_the_last_snapshot_until_flushed(lab, tmp_path):
    project = project_name("mage-test-inv-cache")
    create_project(project)
    try:
        launch(project, "cached1")
        config = write_config(tmp_path, f"""\
            projects: [{project}]
            cache: true
            cache_plugin: ansible.builtin.jsonfile
            cache_connection: {tmp_path / 'cache'}
            cache_timeout: 3600
            """)
        assert set(inventory_list(config)["_meta"]["hostvars"]) == {"cached1"}
        launch(project, "cached2")
        assert set(inventory_list(config)["_meta"]["hostvars"]) == {"cached1"}
        flushed = ansible("ansible-inventory", "-i", str(config), "--list", "--flush-cache").stdout
        assert "cached2" in flushed
    finally:
        delete_project(project)
