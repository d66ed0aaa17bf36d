"""From nothing: the README's demo with its project deleted, site.yml into a project that never
existed, and projects and profiles declared through mage_lxd_instance alone."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.request

import pytest

from lxd_lab import REPO, ansible, delete_project, instance_names, lxc, project_name, query, recap_changed, run_module

pytestmark = pytest.mark.integration

DEMO_PROJECT = "mage-demo"
# image_server "": local aliases only, so no test ever makes LXD reach an outside image server.
BASE = {"image": "mage/busybox", "bootstrap": False, "image_server": ""}


def project_exists(name: str) -> bool:
    return lxc("project", "show", name, check=False).returncode == 0


def run_demo() -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "MAGE_LXD_"))}
    return subprocess.run([str(REPO / "run"), "demo"], capture_output=True, text=True, env=env, check=False,
                          timeout=900)


def answer_after(output: str, prompt: str) -> str:
    """The line the demo printed right after `$ curl ...` line `prompt`."""
    lines = output.splitlines()
    for index, line in enumerate(lines[:-1]):
        if line.startswith("$ curl") and prompt in line:
            return lines[index + 1]
    raise AssertionError(f"the demo printed no '{prompt}' request:\n{output[-3000:]}")


@pytest.mark.lxd_only(reason="the demo's project and NAT port (mage-demo, 127.0.0.1:8081) are the LXD lab's; beside a "
                       "running LXD demo, Incus would share its cgroup names and port (README: the demo on Incus)")
def test_the_readme_demo_runs_from_a_deleted_project_and_twice_changes_nothing(lab):
    delete_project(DEMO_PROJECT)
    try:
        first = run_demo()
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        assert answer_after(first.stdout, "Host: app1.mage.test") == "Hello from app1, through mageproxy"
        assert answer_after(first.stdout, "Host: app2.mage.test") == "Hello from app2, through mageproxy"
        assert answer_after(first.stdout, "Host: nobody.mage.test") == "503"
        assert answer_after(first.stdout, "http://127.0.0.1:8081/") == "Hello from app1, through mageproxy"
        config = query(f"/1.0/projects/{DEMO_PROJECT}")["config"]
        assert config["features.images"] == "false" and config["features.profiles"] == "true"

        second = run_demo()
        assert second.returncode == 0, second.stdout[-4000:]
        assert set(recap_changed(second.stdout)) == {"localhost", "mageproxy", "app1", "app2"}
        assert set(recap_changed(second.stdout).values()) == {0}, second.stdout[-4000:]
    finally:
        delete_project(DEMO_PROJECT)


@pytest.fixture
def fresh_site(tmp_path, lab):
    """Declarations for site.yml in a project name that has never existed (random, so truly new)."""
    project = project_name(f"mage-test-fresh-{secrets.token_hex(3)}")
    declarations = {
        "lxd_project": project,
        "mageproxy_project": project,
        "mageproxy_name": "mage-test-fresh-px",
        "lxd_provisioning_image_server": "",
        "lxd_provisioning_profiles": [{"name": "fresh-small", "config": {"limits.memory": "256MiB"}}],
        "lxd_provisioning_inventory": [{
            "name": "mage-test-fresh-web", "image": "mage/debian-12", "profiles": ["default", "fresh-small"],
            "proxy": [{"name": "fresh.mage.test", "path": "/", "pass": 80}],
        }],
    }
    variables = tmp_path / "fresh.json"
    variables.write_text(json.dumps(declarations))
    try:
        yield project, variables
    finally:
        delete_project(project)


def test_site_yml_into_a_project_that_never_existed_checks_creates_and_converges(fresh_site):
    project, variables = fresh_site
    checked = ansible("ansible-playbook", "playbooks/site.yml", "--check", "--diff", "-e", f"@{variables}", check=False)
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert f"project {project}" in checked.stdout and "fresh-small" in checked.stdout
    assert recap_changed(checked.stdout)["localhost"] >= 1
    assert not project_exists(project), "--check created the project"

    first = ansible("ansible-playbook", "playbooks/site.yml", "-e", f"@{variables}", check=False)
    assert first.returncode == 0, first.stdout[-4000:]
    assert instance_names(project) == ["mage-test-fresh-px", "mage-test-fresh-web"]
    web = query(f"/1.0/instances/mage-test-fresh-web?project={project}")
    assert web["status"] == "Running" and web["expanded_config"]["limits.memory"] == "256MiB"
    proxy_address = next(
        a["address"] for a in query(f"/1.0/instances/mage-test-fresh-px/state?project={project}")["network"]["eth0"]["addresses"]
        if a["family"] == "inet")
    request = urllib.request.Request(f"http://{proxy_address}/", headers={"Host": "fresh.mage.test"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    second = ansible("ansible-playbook", "playbooks/site.yml", "-e", f"@{variables}", check=False)
    assert second.returncode == 0, second.stdout[-4000:]
    assert set(recap_changed(second.stdout).values()) == {0}, second.stdout[-4000:]


@pytest.fixture
def missing_project(lab):
    project = project_name(f"mage-test-nothere-{secrets.token_hex(3)}")
    try:
        yield project
    finally:
        delete_project(project)


def test_create_project_false_refuses_a_missing_project_by_name_and_changes_nothing(missing_project):
    result = run_module("mage_lxd_instance", {**BASE, "name": "nothere1", "project": missing_project,
                                              "create_project": "no"})
    assert "projects" not in result, result  # refused: no report of anything done
    assert f"project '{missing_project}' does not exist, and create_project is false" in result["msg"]
    assert not project_exists(missing_project)


def test_a_profile_nobody_made_refuses_the_whole_batch_before_any_change(missing_project):
    result = run_module("mage_lxd_instance", {**BASE, "project": missing_project, "instances": [
        {"name": "nothere1"}, {"name": "nothere2", "profiles": ["default", "nowhere"]}]})
    assert "projects" not in result, result  # refused: no report of anything done
    assert "instance 'nothere2'" in result["msg"] and "'nowhere'" in result["msg"]
    assert "project_profiles" in result["msg"]
    assert not project_exists(missing_project)


def test_declared_profiles_converge_with_check_diff_and_keep_what_others_set(missing_project):
    declared = [{"name": "decl", "description": "declared", "config": {"limits.cpu": "1"},
                 "devices": {"scratch": {"type": "disk", "source": "/tmp", "path": "/mnt/scratch"}}}]
    args = {**BASE, "project": missing_project, "project_profiles": declared,
            "instances": [{"name": "decl1", "profiles": ["default", "decl"]}]}
    checked = run_module("mage_lxd_instance", args, "--check", "--diff")
    assert checked["changed"] is True and not project_exists(missing_project)
    # LXD makes a new project's default profile empty; it is then filled with the root disk and NIC.
    assert checked["projects"][0]["actions"] == ["created project", "updated profile default", "created profile decl"]
    assert checked["instances"][0]["actions"] == ["created", "started"]

    made = run_module("mage_lxd_instance", args)
    assert made["changed"] is True and "failed" not in made, made.get("msg")
    assert query(f"/1.0/instances/decl1?project={missing_project}")["status"] == "Running"
    assert run_module("mage_lxd_instance", args)["changed"] is False

    # Someone else adds a key; we change ours and drop a device: theirs stays, ours follows.
    lxc("profile", "set", "decl", "limits.processes", "500", "--project", missing_project)
    declared[0]["config"] = {"limits.cpu": "2"}
    declared[0]["devices"] = {}
    changed = run_module("mage_lxd_instance", args, "--diff")
    assert changed["projects"][0]["actions"] == ["updated profile decl"]
    profile = query(f"/1.0/profiles/decl?project={missing_project}")
    assert profile["config"]["limits.cpu"] == "2" and profile["config"]["limits.processes"] == "500"
    assert "scratch" not in profile["devices"]
    assert run_module("mage_lxd_instance", args)["changed"] is False

