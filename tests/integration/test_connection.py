"""The mage_lxd connection on the lab's real containers: modules, files, users, become, failures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from mage_lxd.channel import InstanceChannel
from mage_lxd.errors import RemoteError
from lxd_lab import (LAB, ON_INCUS, ansible, create_project, delete_project, lab_remote, launch, lxc, project_name,
                     wait_for_leases)
from test_inventory_https import SERVER_CERT, fingerprint, make_certificate, trust_certificate

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-conn")
RUNNING = ["conn1", "conn2"]


@pytest.fixture(scope="module")
def containers(lab):
    """Two Debian containers (user `app` with passwordless sudo), one stopped, one without python."""
    create_project(PROJECT)
    try:
        for name in RUNNING:
            launch(PROJECT, name, image="mage/debian-12")
        launch(PROJECT, "conn-stopped", image="mage/busybox", start=False)
        launch(PROJECT, "conn-nopy", image="mage/debian-12-nopython")
        wait_for_leases(PROJECT, [*RUNNING, "conn-nopy"])
        for name in RUNNING:
            lxc("exec", name, "--project", PROJECT, "--", "sh", "-c",
                "useradd -m -s /bin/sh app && echo 'app ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/app")
        yield
    finally:
        delete_project(PROJECT)


@pytest.fixture(scope="module")
def inventory(containers, tmp_path_factory):
    path = tmp_path_factory.mktemp("inv") / "mage_lxd.yml"
    path.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    return path


def adhoc(inventory: Path, pattern: str, module: str, args: str = "", *extra: str) -> dict[str, dict]:
    """Run an ad-hoc module; return {host: result} as written by ansible-core's tree callback."""
    tree = Path(tempfile.mkdtemp(prefix="mage-adhoc-"))
    result = ansible("ansible", "-i", str(inventory), pattern, "-m", module, "-a", args, "-t", str(tree), *extra,
                     env={"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}, check=False)
    hosts = {path.name: json.loads(path.read_text()) for path in tree.iterdir()}
    shutil.rmtree(tree)
    if not hosts:
        raise AssertionError(f"no result from ansible:\n{result.stdout}\n{result.stderr}")
    return hosts


def test_ping_reaches_running_containers_and_names_the_stopped_one(inventory):
    hosts = adhoc(inventory, "lxd", "ansible.builtin.ping")
    for name in RUNNING:
        assert hosts[name]["ping"] == "pong", hosts[name]
    stopped = hosts["conn-stopped"]
    assert stopped.get("unreachable") is True
    assert f"instance 'conn-stopped' in project '{PROJECT}'" in stopped["msg"]
    assert "is not running" in stopped["msg"] and "Fix: start it" in stopped["msg"]


def test_without_python_raw_works_and_ping_says_how_to_bootstrap(inventory):
    raw = adhoc(inventory, "conn-nopy", "ansible.builtin.raw", "echo raw-ok")["conn-nopy"]
    assert raw["rc"] == 0 and "raw-ok" in raw["stdout"]
    ping = adhoc(inventory, "conn-nopy", "ansible.builtin.ping")["conn-nopy"]
    assert ping.get("rc") == 127 and "ping" not in ping, ping
    assert "python is not installed in instance 'conn-nopy'" in json.dumps(ping)
    assert "mage_lxd_instance" in json.dumps(ping)


def test_setup_gathers_facts_from_inside(inventory):
    result = adhoc(inventory, "conn1", "ansible.builtin.setup", "gather_subset=min")["conn1"]
    assert "ansible_facts" in result, result
    facts = result["ansible_facts"]
    assert facts["ansible_distribution"] == "Debian"
    assert facts["ansible_hostname"] == "conn1"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_copy_and_fetch_50_mib_keep_every_byte_and_the_mode(inventory, tmp_path):
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        handle.write(os.urandom(50 * 1024 * 1024))
    source.chmod(0o751)
    copied = adhoc(inventory, "conn1", "ansible.builtin.copy", f"src={source} dest=/root/big.bin mode=preserve")
    assert copied["conn1"].get("changed") is True, copied
    remote_sum = adhoc(inventory, "conn1", "ansible.builtin.stat", "path=/root/big.bin checksum_algorithm=sha256")
    stat = remote_sum["conn1"]["stat"]
    assert stat["checksum"] == sha256(source)
    assert stat["mode"] == "0751"
    fetched = adhoc(inventory, "conn1", "ansible.builtin.fetch", f"src=/root/big.bin dest={tmp_path}/back/ flat=true")
    assert fetched["conn1"].get("changed") is True, fetched
    assert sha256(tmp_path / "back" / "big.bin") == sha256(source)


def test_unicode_paths_survive_a_round_trip(inventory, tmp_path):
    source = tmp_path / "ünï cødé.txt"
    source.write_text("héllo\n")
    adhoc(inventory, "conn1", "ansible.builtin.copy", f"src='{source}' dest='/tmp/ünï cødé.txt'")
    fetched = adhoc(inventory, "conn1", "ansible.builtin.fetch", f"src='/tmp/ünï cødé.txt' dest={tmp_path}/u/ flat=true")
    assert fetched["conn1"]["changed"] is True, fetched
    assert (tmp_path / "u" / "ünï cødé.txt").read_text() == "héllo\n"


def test_command_as_a_non_root_user_and_become_to_root(inventory, tmp_path):
    whoami = adhoc(inventory, "conn1", "ansible.builtin.command", "id -un", "-u", "app")["conn1"]
    assert whoami["stdout"] == "app"
    source = tmp_path / "mine.txt"
    source.write_text("for app\n")
    owned = adhoc(inventory, "conn1", "ansible.builtin.copy", f"src={source} dest=/home/app/mine.txt", "-u", "app")
    assert owned["conn1"]["owner"] == "app"
    became = adhoc(inventory, "conn1", "ansible.builtin.command", "id -un", "-u", "app", "--become")["conn1"]
    assert became["stdout"] == "root"
    su = adhoc(inventory, "conn1", "ansible.builtin.command", "id -un", "--become", "--become-method", "su",
               "--become-user", "app")["conn1"]
    assert su["stdout"] == "app"


def test_become_with_a_password_is_refused_not_hung(inventory):
    result = adhoc(inventory, "conn1", "ansible.builtin.command", "id -un", "-u", "app", "--become",
                   "-e", "ansible_become_password=secret")["conn1"]
    assert "stdout" not in result
    assert "needs a password, which the LXD exec API cannot type" in result["msg"]


def test_a_missing_instance_is_named(inventory):
    result = adhoc(inventory, "conn1", "ansible.builtin.ping", "", "-e", "ansible_mage_lxd_instance=conn-gone")["conn1"]
    assert result.get("unreachable") is True
    assert "instance 'conn-gone'" in result["msg"] and "does not exist" in result["msg"]


def test_the_same_playbook_over_https_with_a_client_certificate(inventory, tmp_path):
    cert, key = make_certificate(tmp_path, "mage-test-conn")
    trust_certificate(cert)
    try:
        source = tmp_path / "over-https.bin"
        source.write_bytes(os.urandom(3 * 1024 * 1024))
        playbook = tmp_path / "https.yml"
        playbook.write_text(textwrap.dedent(f"""\
            - name: Everything over HTTPS
              hosts: conn1,conn2
              gather_facts: false
              vars:
                ansible_mage_lxd_url: https://{LAB['MAGE_LAB_HTTPS_ADDRESS']}
                ansible_mage_lxd_client_cert: {cert}
                ansible_mage_lxd_client_key: {key}
                ansible_mage_lxd_server_cert: {SERVER_CERT}
              tasks:
                - name: Ping
                  ansible.builtin.ping:
                - name: Copy
                  ansible.builtin.copy:
                    src: {source}
                    dest: /root/over-https.bin
                    mode: "0600"
                - name: Fetch
                  ansible.builtin.fetch:
                    src: /root/over-https.bin
                    dest: {tmp_path}/back/{{{{ inventory_hostname }}}}.bin
                    flat: true
                - name: Command as app with become
                  ansible.builtin.command: id -un
                  become: true
                  remote_user: app
                  register: who
                  changed_when: false
                - name: Check
                  ansible.builtin.assert:
                    that: who.stdout == 'root'
            """))
        result = ansible("ansible-playbook", "-i", str(inventory), str(playbook), "-vvv", check=False)
        assert result.returncode == 0, result.stdout[-3000:]
        assert f"https://{LAB['MAGE_LAB_HTTPS_ADDRESS']}" in result.stdout
        for name in ("conn1", "conn2"):
            assert sha256(tmp_path / "back" / f"{name}.bin") == sha256(source)
    finally:
        lxc("config", "trust", "remove", fingerprint(cert), check=False)


def test_a_command_that_exits_without_reading_its_stdin_still_reports_its_exit_code(containers):
    # As python missing does under a pipelined module: the stream closes while stdin is being sent.
    channel = InstanceChannel.connect(lab_remote(), PROJECT, RUNNING[0])
    for _ in range(3):
        assert channel.exec(["sh", "-c", "exit 3"], stdin=b"x" * (16 * 1024 * 1024))[0] == 3


def test_a_file_put_through_the_connection_keeps_its_mode_and_owner(containers, tmp_path):
    # The files API sets mode and owner from headers; a server ignoring the ones sent (Incus >= 7.2
    # given X-LXD-*) would leave root:root 0644, so the container's own stat decides.
    channel = InstanceChannel.connect(lab_remote(), PROJECT, RUNNING[0])
    assert channel.api.kind.title == ("Incus" if ON_INCUS else "LXD")
    assert all(name.startswith(channel.api.kind.file_header_prefix) for name in channel.file_headers(0o644, 0, 0))
    source = tmp_path / "script.sh"
    source.write_text("#!/bin/sh\necho kept\n")
    source.chmod(0o751)
    channel.put_file(str(source), "/home/app/script.sh", channel.lookup_user("app"))
    stat = lxc("exec", RUNNING[0], "--project", PROJECT, "--", "stat", "-c", "%a %U %G", "/home/app/script.sh")
    assert stat.stdout.split() == ["751", "app", "app"]
    channel.write_small_file("/root/small.conf", b"x=1\n", mode=0o600)
    stat = lxc("exec", RUNNING[0], "--project", PROJECT, "--", "stat", "-c", "%a %U %G", "/root/small.conf")
    assert stat.stdout.split() == ["600", "root", "root"]
    assert channel.read_small_file("/root/small.conf") == b"x=1\n"
    with pytest.raises(RemoteError, match="is a directory, not a file"):
        channel.read_small_file("/root")
