"""site.yml, teardown.yml and the seed's role interface, end to end on the lab."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lxd_lab import (LAB, ON_INCUS, REPO, ansible, create_project, delete_project, instance_names, lxc, project_name,
                     query, recap_changed)

pytestmark = pytest.mark.integration

SEED_PROJECT = project_name("mage-test-seed")
SITE_PROJECT = project_name("mage-test-site")
# Its own port on the Incus pass, so the two passes may run side by side.
SITE_NAT_PORT = 18185 if ON_INCUS else 18085
SITE_PROXY = "mage-test-site-px"



@pytest.fixture
def seed_project(lab):
    """A project with its own images, where the seed's ubuntu/xenial/amd64 is a local alias."""
    delete_project(SEED_PROJECT)
    lxc("project", "create", SEED_PROJECT, "-c", "features.images=true", "-c", "features.profiles=false")
    fingerprint = query("/1.0/images/aliases/mage/debian-12")["target"]
    lxc("image", "copy", fingerprint, "local:", "--target-project", SEED_PROJECT, "--alias", "ubuntu/xenial/amd64")
    try:
        yield SEED_PROJECT
    finally:
        delete_project(SEED_PROJECT)


def run_seed(playbook: Path, project: str) -> object:
    # image_server "": the alias must be found locally, nothing is ever pulled from outside.
    return ansible("ansible-playbook", str(playbook), "-e", f"lxd_provisioning_project={project}",
                   "-e", "lxd_provisioning_image_server=", "-e", "seed_extif=lo",
                   "-e", f"seed_intif={LAB['MAGE_LAB_BRIDGE']}", check=False)


def test_the_seed_as_written_fails_before_any_change(seed_project, tmp_path):
    as_written = tmp_path / "test-lxd.yml"
    as_written.write_text((REPO / "playbooks" / "test-lxd.yml").read_text().replace("ubu-test-1", "ubu_test_1"))
    result = run_seed(as_written, seed_project)
    assert result.returncode != 0
    message = " ".join(result.stdout.split())
    assert "instance name 'ubu_test_1' is not valid in LXD" in message and "Use 'ubu-test-1' instead." in message
    assert instance_names(seed_project) == []


def test_the_fixed_seed_runs_through_the_role_and_twice_changes_nothing(seed_project):
    first = run_seed(REPO / "playbooks" / "test-lxd.yml", seed_project)
    assert first.returncode == 0, first.stdout[-3000:]
    assert instance_names(seed_project) == ["ubu-test-1", "ubu-test-2"]
    config = query(f"/1.0/instances/ubu-test-1?project={seed_project}")["config"]
    assert json.loads(config["user.mage.proxy"])[0]["pass"] == 8080
    assert json.loads(config["user.mage.nat"])[0]["extport"] == 8080
    devices = query(f"/1.0/instances/ubu-test-2?project={seed_project}")["devices"]
    assert devices["mage-mount-sys-fs-cgroup"]["readonly"] == "true"
    second = run_seed(REPO / "playbooks" / "test-lxd.yml", seed_project)
    assert second.returncode == 0 and recap_changed(second.stdout) == {"localhost": 0}, second.stdout[-3000:]


@pytest.fixture
def site_inventory(lab, tmp_path):
    create_project(SITE_PROJECT)
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{SITE_PROJECT}]\n")
    (inventory / "group_vars" / "all.yml").write_text(textwrap.dedent(f"""\
        lxd_project: {SITE_PROJECT}
        mageproxy_project: {SITE_PROJECT}
        mageproxy_name: {SITE_PROXY}
        lxd_provisioning_image_server: ""
        lxd_provisioning_inventory:
          - name: site-a
            image: mage/busybox
            bootstrap: false
            nat: [{{extport: {SITE_NAT_PORT}, intport: 80, listen: 127.0.0.1}}]
            proxy: [{{name: a.site.test, pass: 80}}]
          - name: site-b
            image: mage/busybox
            bootstrap: false
            proxy: [{{name: b.site.test, pass: 80}}]
        """))
    try:
        yield inventory
    finally:
        delete_project(SITE_PROJECT)


def test_site_then_rerun_then_teardown(site_inventory):
    site = REPO / "playbooks" / "site.yml"
    first = ansible("ansible-playbook", "-i", str(site_inventory), str(site), check=False)
    assert first.returncode == 0, first.stdout[-3000:]
    assert instance_names(SITE_PROJECT) == sorted(["site-a", "site-b", SITE_PROXY])
    conf = lxc("exec", SITE_PROXY, "--project", SITE_PROJECT, "--", "cat", "/etc/nginx/conf.d/mage-sites.conf").stdout
    assert "server_name a.site.test;" in conf and "server_name b.site.test;" in conf

    again = ansible("ansible-playbook", "-i", str(site_inventory), str(site), check=False)
    assert again.returncode == 0 and set(recap_changed(again.stdout).values()) == {0}, again.stdout[-3000:]

    down = ansible("ansible-playbook", "-i", str(site_inventory), str(REPO / "playbooks" / "teardown.yml"), check=False)
    assert down.returncode == 0, down.stdout[-3000:]
    assert instance_names(SITE_PROJECT) == [SITE_PROXY]
    conf = lxc("exec", SITE_PROXY, "--project", SITE_PROJECT, "--", "cat", "/etc/nginx/conf.d/mage-sites.conf").stdout
    assert "a.site.test" not in conf and "b.site.test" not in conf
