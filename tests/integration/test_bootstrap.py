"""Bootstrap on mage/debian-12-nopython: python comes from a package source the test provides.

The lab bridge has no way out, so the test builds a small apt repository of python3 and what it
depends on (downloaded once through this host's own apt sources, cached), copies it into the
container and points apt at it. Nothing in the container reaches beyond this machine.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from lxd_lab import ansible, create_project, delete_project, lxc, project_name, run_module, wait_for_leases

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-boot")
REPO_DIR = Path("/var/cache/mage-lxd/python-repo")


def _write_packages_index(directory: Path) -> None:
    """An apt `Packages` index for the .deb files in `directory` (what dpkg-scanpackages writes)."""
    stanzas = []
    for deb in sorted(directory.glob("*.deb")):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
        data = deb.read_bytes()
        stanzas.append(control.rstrip("\n") + f"\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    (directory / "Packages").write_text("\n".join(stanzas))


@pytest.fixture(scope="session")
def python_repo() -> Path:
    """python3 and its dependency closure as a flat apt repository (built once, then cached)."""
    if (REPO_DIR / "Packages").exists():
        return REPO_DIR
    REPO_DIR.mkdir(parents=True, exist_ok=True)
    depends = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", "python3"],
        capture_output=True, text=True, check=True).stdout
    packages = sorted({line.strip() for line in depends.splitlines() if line and not line[0].isspace()
                       and not line.startswith("<")})
    subprocess.run(["apt-get", "download", "-q", *packages], cwd=REPO_DIR, check=True, capture_output=True)
    _write_packages_index(REPO_DIR)
    return REPO_DIR


@pytest.fixture(scope="module")
def bare_container(lab, python_repo):
    """A running container without python whose only apt source is the local repository."""
    create_project(PROJECT)
    try:
        lxc("launch", "mage/debian-12-nopython", "boot1", "--project", PROJECT)
        wait_for_leases(PROJECT, ["boot1"])
        lxc("file", "push", "-r", str(python_repo), "boot1/srv/", "--project", PROJECT)
        lxc("exec", "boot1", "--project", PROJECT, "--", "sh", "-c",
            "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && "
            f"echo 'deb [trusted=yes] file:/srv/{python_repo.name} ./' > /etc/apt/sources.list.d/local.list")
        yield "boot1"
    finally:
        delete_project(PROJECT)


def test_bootstrap_installs_python_once_and_then_reports_nothing(bare_container, tmp_path):
    assert lxc("exec", bare_container, "--project", PROJECT, "--", "sh", "-c", "command -v python3",
               check=False).returncode != 0
    args = {"name": bare_container, "project": PROJECT, "image": "mage/debian-12-nopython", "image_server": ""}
    first = run_module("mage_lxd_instance", args, project=PROJECT)
    assert first["changed"] is True
    # Adopting an instance made elsewhere records what the plugin manages, hence "reconfigured".
    assert first["actions"] == ["reconfigured", "installed python with apt-get"]
    assert first["python"] == "/usr/bin/python3"
    second = run_module("mage_lxd_instance", args, project=PROJECT)
    assert second["changed"] is False and second["python"] == "/usr/bin/python3"
    # And now Ansible manages it through the mage_lxd connection.
    (tmp_path / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    ping = ansible("ansible", "-i", str(tmp_path / "mage_lxd.yml"), bare_container, "-m", "ansible.builtin.ping")
    assert '"ping": "pong"' in ping.stdout


def test_without_a_package_manager_the_error_says_what_to_do(lab):
    project = project_name("mage-test-boot-bb")
    create_project(project)
    try:
        result = run_module("mage_lxd_instance", {"name": "nopm1", "project": project, "image": "mage/busybox",
                                                  "image_server": ""}, project=project)
        assert "actions" not in result
        assert "has no python and none of the package managers mage-lxd knows" in result["msg"]
        assert "bootstrap: false" in result["msg"]
    finally:
        delete_project(project)
