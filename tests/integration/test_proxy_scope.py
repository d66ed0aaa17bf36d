"""mageproxy per project: two projects, each with its own proxy and the same host name.

With the inventory reading every project (as the default `projects: ["*"]` does), each proxy
serves the routes of its own project only, so the two never clash.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lxd_lab import REPO, ansible, create_project, delete_project, lxc, run_module, wait_for_leases

pytestmark = pytest.mark.integration

BACKEND = Path(__file__).resolve().parent / "backend_server.py"
# Instance names are unique per bridge across projects, so each carries its project's letter.
PROJECTS = {"mage-test-px-scope-a": "a", "mage-test-px-scope-b": "b"}
ROUTE = [{"name": "same.example.test", "path": "/", "pass": 8080}]


@pytest.fixture(scope="module")
def two_projects(lab, tmp_path_factory):
    inventory = tmp_path_factory.mktemp("px-scope-inv") / "mage_lxd.yml"
    inventory.write_text(f"plugin: mage_lxd\nprojects: [{', '.join(PROJECTS)}]\n")
    try:
        for project, letter in PROJECTS.items():
            create_project(project)
            web = f"px-s{letter}-web"
            run_module("mage_lxd_instance", {"name": web, "project": project, "image": "mage/debian-12",
                                             "image_server": "", "proxy": ROUTE}, project=project)
            lxc("file", "push", str(BACKEND), f"{web}/srv/backend_server.py", "--project", project)
            lxc("exec", web, "--project", project, "--", "sh", "-c",
                f"setsid -f python3 /srv/backend_server.py {web} 8080 >/dev/null 2>&1")
        yield inventory
    finally:
        for project in PROJECTS:
            delete_project(project)


def apply_proxy(inventory: Path, project: str) -> subprocess.CompletedProcess[str]:
    return ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "proxy.yml"),
                   "-e", f"mageproxy_project={project}", "-e", f"mageproxy_name=px-s{PROJECTS[project]}-proxy",
                   check=False)


def request(address: str, host: str) -> str:
    return subprocess.run(["curl", "-s", "-m", "5", "-H", f"Host: {host}", f"http://{address}/"],
                          capture_output=True, text=True).stdout


def test_each_project_serves_its_own_route_for_the_same_name(two_projects):
    for project, letter in PROJECTS.items():
        result = apply_proxy(two_projects, project)
        assert result.returncode == 0, result.stdout[-3000:]
    for project, letter in PROJECTS.items():
        address = wait_for_leases(project, [f"px-s{letter}-proxy"])[f"px-s{letter}-proxy"]
        assert request(address, "same.example.test").startswith(f"backend=px-s{letter}-web ")


def test_a_proxy_given_both_projects_refuses_the_clash_naming_both(two_projects):
    both = '{"mageproxy_projects": ["mage-test-px-scope-a", "mage-test-px-scope-b"]}'
    result = ansible("ansible-playbook", "-i", str(two_projects), str(REPO / "playbooks" / "proxy.yml"),
                     "-e", "mageproxy_project=mage-test-px-scope-a", "-e", "mageproxy_name=px-sa-proxy",
                     "-e", both, "-e", '{"mageproxy_strict_instances": []}', check=False)
    # Neither was declared by this run: the second is left out with a warning naming both.
    assert result.returncode == 0, result.stdout[-3000:]
    warning = " ".join(result.stderr.split())
    assert "instance 'px-sb-web': proxy[0] same.example.test/ is already routed by instance 'px-sa-web'" in warning
    address = wait_for_leases("mage-test-px-scope-a", ["px-sa-proxy"])["px-sa-proxy"]
    assert request(address, "same.example.test").startswith("backend=px-sa-web ")
