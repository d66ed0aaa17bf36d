"""site.yml and teardown.yml agree on mageproxy's project without being told (the role's default).

Only `lxd_project` is set: site.yml makes mageproxy there, a rerun changes nothing, and
teardown.yml with teardown_mageproxy=true deletes it from there, leaving the project empty.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from lxd_lab import REPO, ansible, create_project, delete_project, launch, lxc, project_name, query, recap_changed

pytestmark = pytest.mark.integration

PROJECT = "mage-test-px-site"
PROXY = "px-site-proxy"
TENANT = project_name("mage-test-px-site-tenant")


@pytest.fixture
def inventory(lab, tmp_path):
    create_project(PROJECT)
    path = tmp_path / "inventory"
    (path / "group_vars").mkdir(parents=True)
    (path / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    (path / "group_vars" / "all.yml").write_text(textwrap.dedent(f"""\
        lxd_project: {PROJECT}
        mageproxy_name: {PROXY}
        lxd_provisioning_image_server: ""
        lxd_provisioning_inventory:
          - name: px-site-a
            image: mage/busybox
            bootstrap: false
            proxy: [{{name: a.px-site.test, pass: 80}}]
        """))
    try:
        yield path
    finally:
        delete_project(PROJECT)


def names() -> list[str]:
    return sorted(url.split("?")[0].rsplit("/", 1)[-1] for url in query(f"/1.0/instances?project={PROJECT}") or [])


def test_site_then_teardown_use_one_project_for_mageproxy(inventory):
    first = ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "site.yml"), check=False)
    assert first.returncode == 0, first.stdout[-3000:]
    assert names() == ["px-site-a", PROXY]
    again = ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "site.yml"), check=False)
    assert again.returncode == 0 and set(recap_changed(again.stdout).values()) == {0}, again.stdout[-3000:]
    down = ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "teardown.yml"),
                   "-e", json.dumps({"teardown_mageproxy": True}), check=False)
    assert down.returncode == 0, down.stdout[-3000:]
    assert names() == []


def test_a_tenants_instance_named_like_mageproxy_never_steers_what_mageproxy_publishes(inventory, lab):
    # The tenant, who may only create instances in its own project, names one like the operator's
    # mageproxy (no NIC: LXD refuses one name twice on a bridge) and publishes a route there. The
    # operator reads both projects; its mageproxy does not exist yet, so the inventory's host of that
    # name is the tenant's, with the tenant's lxd_project.
    create_project(TENANT)
    try:
        lxc("profile", "device", "remove", "default", "eth0", "--project", TENANT)
        launch(TENANT, PROXY, start=False)
        launch(TENANT, "px-evil", config={"user.mage.proxy": '[{"name": "evil.px-site.test", "pass": 80}]'})
        (inventory / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}, {TENANT}]\n")
        run = ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "site.yml"), check=False)
        assert run.returncode == 0, run.stdout[-3000:]
        assert names() == ["px-site-a", PROXY]
        sites = lxc("exec", PROXY, "--project", PROJECT, "--", "cat", "/etc/nginx/conf.d/mage-sites.conf").stdout
        assert "a.px-site.test" in sites and "evil.px-site.test" not in sites, sites
    finally:
        delete_project(TENANT)
