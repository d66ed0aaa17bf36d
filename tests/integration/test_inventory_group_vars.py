"""The connection variables the inventory sets once on a group: on the lab's server, through
`ansible-inventory --list`, every host resolves to exactly the variables the plan gives it alone,
with a group_vars file, a second source on the same default group and a keyed group named like
another project's group."""

from __future__ import annotations

import json
import textwrap

import pytest

from lxd_lab import (CLI, ansible, create_project, delete_project, lab_remote, launch, lxc, project_name,
                     strip_unsafe, wait_for_leases)
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import InventoryOptions, plan_inventory
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote, local_socket_path
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot

pytestmark = pytest.mark.integration

PROJECT_A = project_name("mage-test-invgv-a")
PROJECT_B = project_name("mage-test-invgv-b")
GROUP_B = "project_" + PROJECT_B.replace("-", "_")
# Named to sort after the project groups: of two groups of one depth, Ansible takes the value of
# the later name, so a project wrongly put on this group would win over the project groups.
DEFAULT_GROUP = "zlxd"
# group_vars/all.yml next to the sources: a playbook's own lxd_project (as inventory/group_vars/all.yml
# sets it) must not replace any host's, and its own variable reaches every host.
ALL_YML = {"lxd_project": "declared-by-the-playbook", "declared": "yes"}


@pytest.fixture(scope="module")
def projects(lab):
    """gv-web1 (running) and gv-db1 in project A, whose tenant set user.role to project B's group name;
    gv-app1 in project B (names of their own: Incus refuses a DNS name another project uses on the bridge)."""
    create_project(PROJECT_A)
    create_project(PROJECT_B)
    try:
        launch(PROJECT_A, "gv-web1", config={"user.role": GROUP_B.removeprefix("project_")})
        launch(PROJECT_A, "gv-db1", start=False)
        launch(PROJECT_B, "gv-app1", start=False)
        wait_for_leases(PROJECT_A, ["gv-web1"])
        yield
    finally:
        delete_project(PROJECT_A)
        delete_project(PROJECT_B)


def expected_hostvars(remote: Remote, options: InventoryOptions) -> dict[str, dict]:
    """{host: variables} as the plan gives each host on its own (what every host held before
    variables went on groups), with the group_vars file's under them."""
    snapshot = take_snapshot(LxdApi(remote), list(options.projects))
    plan = plan_inventory([snapshot], {remote.name: remote}, options)
    return {host.name: json.loads(json.dumps({**ALL_YML, "ansible_connection": "mage.lxd.mage_lxd",
                                              **host.variables}))
            for host in plan.hosts}


def test_every_host_resolves_to_its_own_variables(projects, tmp_path):
    socket = local_socket_path(lab_remote().url)
    # Two sources of one server on the same default group: each spells the socket its own way, so
    # the one read second cannot put its address on the group the first one's hosts are in.
    first = Remote(name="local", url=f"unix:{socket}")
    second = Remote(name="again", url=socket)
    (tmp_path / "a.mage_lxd.yml").write_text(textwrap.dedent(f"""\
        plugin: mage.lxd.mage_lxd
        remotes: [{{name: local, url: "unix:{socket}"}}]
        projects: [{PROJECT_A}, {PROJECT_B}]
        default_group: {DEFAULT_GROUP}
        keyed_groups:
          - key: lxd_config['user.role'] | default('none')
            prefix: project
        """))
    (tmp_path / "b.mage_lxd.yml").write_text(textwrap.dedent(f"""\
        plugin: mage.lxd.mage_lxd
        remotes: [{{name: again, url: "{socket}"}}]
        projects: [{PROJECT_B}]
        default_group: {DEFAULT_GROUP}
        hostname_format: "{{remote}}.{{name}}"
        """))
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(json.dumps(ALL_YML))
    listed = json.loads(ansible("ansible-inventory", "-i", str(tmp_path), "--list").stdout)
    expected = {**expected_hostvars(first, InventoryOptions(default_group=DEFAULT_GROUP, projects=(PROJECT_A, PROJECT_B))),
                **expected_hostvars(second, InventoryOptions(default_group=DEFAULT_GROUP, projects=(PROJECT_B,),
                                                              hostname_format="{remote}.{name}"))}
    assert set(expected) == {"gv-web1", "gv-db1", "gv-app1", "again.gv-app1"}
    assert strip_unsafe(listed["_meta"]["hostvars"]) == expected
    # The tenant's keyed group is project B's group, which carries B's project: gv-web1 holds its own.
    assert "gv-web1" in listed[GROUP_B]["hosts"]
    assert strip_unsafe(listed["_meta"]["hostvars"]["gv-web1"]["mage_lxd_project"]) == PROJECT_A
    exported = strip_unsafe(json.loads(ansible("ansible-inventory", "-i", str(tmp_path), "--list", "--export").stdout))
    # What went on groups: the first source's remote on its default group, each project on its group;
    # the second source added nothing to the default group (its project would be project A's hosts' too).
    assert exported[DEFAULT_GROUP]["vars"] == {"ansible_connection": "mage.lxd.mage_lxd", "mage_lxd_remote": "local",
                                       "mage_lxd_url": f"unix:{socket}"}
    assert exported[GROUP_B]["vars"] == {"mage_lxd_project": PROJECT_B}
    own = exported["_meta"]["hostvars"]
    assert "mage_lxd_url" not in own["gv-app1"] and own["again.gv-app1"]["mage_lxd_url"] == socket
    assert own["gv-web1"]["mage_lxd_project"] == PROJECT_A and "mage_lxd_project" not in own["gv-db1"]


def test_a_host_reached_through_the_group_variables_answers(projects, tmp_path):
    source = tmp_path / "mage_lxd.yml"
    socket = local_socket_path(lab_remote().url)
    source.write_text(f"plugin: mage.lxd.mage_lxd\nremotes: [{{name: local, url: 'unix:{socket}'}}]\n"
                      f"projects: [{PROJECT_A}]\n")
    result = ansible("ansible", "-i", str(source), "gv-web1", "-m", "ansible.builtin.raw", "-a", "cat /etc/hostname")
    assert "gv-web1" in result.stdout
    assert lxc("list", "--project", PROJECT_A, "--format", "csv", "-c", "n").stdout.split() == ["gv-db1", "gv-web1"], CLI
