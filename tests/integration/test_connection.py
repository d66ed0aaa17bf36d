"""The mage_lxd connection on the lab's real containers: modules, files, users, become, failures."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.channel import InstanceChannel
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import RemoteError

from lxd_lab import (LAB, ON_INCUS, ansible, create_project, delete_project, exec_stress_playbook, lab_remote, launch,
                     lxc, project_name, recap, wait_for_leases)
from test_inventory_https import SERVER_CERT, fingerprint, make_certificate, trust_certificate

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-conn-plugin")  # not mage-test-conn: other branches ran their copy of this file
PW_PASSWORD = "pw-Secret-4711"
ROOT_PASSWORD = "root-Secret-0815"
RUNNING = ["connp1", "connp2"]


@pytest.fixture(scope="module")
def containers(lab):
    """Two Debian containers (user `app` with passwordless sudo), one stopped, one without python."""
    create_project(PROJECT)
    try:
        for name in RUNNING:
            launch(PROJECT, name, image="mage/debian-12")
        launch(PROJECT, "connp-stopped", image="mage/busybox", start=False)
        launch(PROJECT, "connp-nopy", image="mage/debian-12-nopython")
        wait_for_leases(PROJECT, [*RUNNING, "connp-nopy"])
        for name in RUNNING:
            lxc("exec", name, "--project", PROJECT, "--", "sh", "-c",
                "useradd -m -s /bin/sh app && echo 'app ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/app")
            # `pw` needs its password for sudo; root has one for su.
            lxc("exec", name, "--project", PROJECT, "--", "sh", "-c",
                f"useradd -m -s /bin/sh pw && printf 'pw:{PW_PASSWORD}\\nroot:{ROOT_PASSWORD}\\n' | chpasswd"
                " && echo 'pw ALL=(ALL) ALL' > /etc/sudoers.d/pw")
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
    stopped = hosts["connp-stopped"]
    assert stopped.get("unreachable") is True
    assert f"instance 'connp-stopped' in project '{PROJECT}'" in stopped["msg"]
    assert "is not running" in stopped["msg"] and "Fix: start it" in stopped["msg"]
    # Printed once: ansible-core must not append the same message again as the error's cause.
    assert stopped["msg"].count("is not running") == 1, stopped["msg"]


def test_without_python_raw_works_and_ping_says_how_to_bootstrap(inventory):
    raw = adhoc(inventory, "connp-nopy", "ansible.builtin.raw", "echo raw-ok")["connp-nopy"]
    assert raw["rc"] == 0 and "raw-ok" in raw["stdout"]
    ping = adhoc(inventory, "connp-nopy", "ansible.builtin.ping")["connp-nopy"]
    assert ping.get("rc") == 127 and "ping" not in ping, ping
    assert "python is not installed in instance 'connp-nopy'" in json.dumps(ping)
    assert "mage_lxd_instance" in json.dumps(ping)


def test_setup_gathers_facts_from_inside(inventory):
    result = adhoc(inventory, "connp1", "ansible.builtin.setup", "gather_subset=min")["connp1"]
    assert "ansible_facts" in result, result
    facts = result["ansible_facts"]
    assert facts["ansible_distribution"] == "Debian"
    assert facts["ansible_hostname"] == "connp1"


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
    copied = adhoc(inventory, "connp1", "ansible.builtin.copy", f"src={source} dest=/root/big.bin mode=preserve")
    assert copied["connp1"].get("changed") is True, copied
    remote_sum = adhoc(inventory, "connp1", "ansible.builtin.stat", "path=/root/big.bin checksum_algorithm=sha256")
    stat = remote_sum["connp1"]["stat"]
    assert stat["checksum"] == sha256(source)
    assert stat["mode"] == "0751"
    fetched = adhoc(inventory, "connp1", "ansible.builtin.fetch", f"src=/root/big.bin dest={tmp_path}/back/ flat=true")
    assert fetched["connp1"].get("changed") is True, fetched
    assert sha256(tmp_path / "back" / "big.bin") == sha256(source)


def test_unicode_paths_survive_a_round_trip(inventory, tmp_path):
    source = tmp_path / "ünï cødé.txt"
    source.write_text("héllo\n")
    adhoc(inventory, "connp1", "ansible.builtin.copy", f"src='{source}' dest='/tmp/ünï cødé.txt'")
    fetched = adhoc(inventory, "connp1", "ansible.builtin.fetch", f"src='/tmp/ünï cødé.txt' dest={tmp_path}/u/ flat=true")
    assert fetched["connp1"]["changed"] is True, fetched
    assert (tmp_path / "u" / "ünï cødé.txt").read_text() == "héllo\n"


def test_command_as_a_non_root_user_and_become_to_root(inventory, tmp_path):
    whoami = adhoc(inventory, "connp1", "ansible.builtin.command", "id -un", "-u", "app")["connp1"]
    assert whoami["stdout"] == "app"
    source = tmp_path / "mine.txt"
    source.write_text("for app\n")
    owned = adhoc(inventory, "connp1", "ansible.builtin.copy", f"src={source} dest=/home/app/mine.txt", "-u", "app")
    assert owned["connp1"]["owner"] == "app"
    became = adhoc(inventory, "connp1", "ansible.builtin.command", "id -un", "-u", "app", "--become")["connp1"]
    assert became["stdout"] == "root"
    su = adhoc(inventory, "connp1", "ansible.builtin.command", "id -un", "--become", "--become-method", "su",
               "--become-user", "app")["connp1"]
    assert su["stdout"] == "app"


def test_a_missing_instance_is_named(inventory):
    result = adhoc(inventory, "connp1", "ansible.builtin.ping", "", "-e", "ansible_mage_lxd_instance=conn-gone")["connp1"]
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
              hosts: connp1,connp2
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
        for name in ("connp1", "connp2"):
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


def static_inventory(tmp_path: Path, *lines: str) -> Path:
    """An INI inventory of hosts reached through mage_lxd in the test project."""
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(["[lab]", *lines, "[lab:vars]", "ansible_connection=mage_lxd",
                                 f"ansible_mage_lxd_project={PROJECT}"]) + "\n")
    return path


def test_ansible_host_names_the_instance_in_a_static_inventory(containers, tmp_path):
    hosts = static_inventory(tmp_path, "web ansible_host=connp2", "connp1")
    result = adhoc(hosts, "lab", "ansible.builtin.command", "hostname")
    assert result["web"]["stdout"] == "connp2"
    assert result["connp1"]["stdout"] == "connp1"
    # mage_lxd_instance still wins over ansible_host (the inventory sets both: address and name).
    hosts = static_inventory(tmp_path, "web ansible_host=10.0.0.1 mage_lxd_instance=connp1")
    assert adhoc(hosts, "web", "ansible.builtin.command", "hostname")["web"]["stdout"] == "connp1"


def module_transfers(inventory: Path, env: dict[str, str], *extra: str) -> int:
    """How many files the connection put for one ping (0 when the module was pipelined)."""
    result = ansible("ansible", "-i", str(inventory), "connp1", "-m", "ansible.builtin.ping", "-vvv", *extra,
                     env=env, check=False)
    assert "pong" in result.stdout, result.stdout[-2000:]
    return result.stdout.count("mage_lxd: put ")


@pytest.mark.parametrize(("env", "extra", "pipelined"), [
    ({}, (), True),
    ({"ANSIBLE_PIPELINING": "False"}, (), False),
    ({"ANSIBLE_PIPELINING": "False", "ANSIBLE_MAGE_LXD_PIPELINING": "True"}, (), True),
    ({}, ("-e", "ansible_pipelining=false"), False),
    ({"ANSIBLE_PIPELINING": "True"}, ("-e", "ansible_pipelining=false", "-e", "ansible_mage_lxd_pipelining=true"), True),
])
def test_ansibles_pipelining_setting_applies_and_ours_overrides_it(inventory, env, extra, pipelined):
    assert (module_transfers(inventory, env, *extra) == 0) is pipelined


def test_an_exec_lxd_refuses_for_its_arguments_fails_the_task_not_the_host(containers, tmp_path):
    hosts = static_inventory(tmp_path, "connp1")
    playbook = tmp_path / "long.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - name: A command longer than the kernel takes
          hosts: connp1
          gather_facts: false
          tasks:
            - name: Too long
              ansible.builtin.raw: "echo {'x' * 200_000}"
              ignore_errors: true
              register: long
            - name: The play goes on
              ansible.builtin.raw: echo still-here
              register: after
            - name: Check
              ansible.builtin.assert:
                that:
                  - long is failed
                  - after.stdout is search('still-here')
        """))
    result = ansible("ansible-playbook", "-i", str(hosts), str(playbook), check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "UNREACHABLE" not in result.stdout
    assert "argument list too long" in result.stdout and "did not run" in result.stdout


def test_command_timeout_stops_the_command_in_the_instance_and_fails_the_task(containers, tmp_path):
    hosts = static_inventory(tmp_path, "connp1 ansible_mage_lxd_command_timeout=3")
    result = adhoc(hosts, "connp1", "ansible.builtin.raw", "sleep 47; echo finished")["connp1"]
    # A task failure (the tree callback records no "failed" for a raised error), not UNREACHABLE.
    assert result.get("unreachable") is not True and "stdout" not in result, result
    assert "did not finish within 3s; it was stopped" in result["msg"], result
    left = lxc("exec", "connp1", "--project", PROJECT, "--", "sh", "-c",
               "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\000' ' '").stdout
    assert "sleep 47" not in left


def test_a_hostile_instance_is_still_reached_as_itself(containers, tmp_path):
    # Its own config tries to name another instance, project, host and connection.
    hostile = {"user.mage.lxd_instance": "connp2", "user.mage.lxd_project": "default",
               "user.mage.mage_lxd_instance": "connp2", "user.mage.ansible_host": "connp2",
               "user.mage.ansible_connection": "local", "user.mage.ansible_mage_lxd_instance": "connp2",
               "user.mage.ansible_python_interpreter": "/bin/false"}
    for key, value in hostile.items():
        lxc("config", "set", "connp1", key, value, "--project", PROJECT)
    try:
        path = tmp_path / "mage_lxd.yml"
        path.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
        result = adhoc(path, "connp1", "ansible.builtin.command", "hostname")["connp1"]
        assert result["stdout"] == "connp1", result
    finally:
        for key in hostile:
            lxc("config", "unset", "connp1", key, "--project", PROJECT)


# The checks of ansible-core's generic connection test (test/integration/targets/connection),
# written again here for mage_lxd: unicode raw, unicode file names and content copied and
# fetched, wait_for_connection, reset_connection (plain and with a templated connection), and no
# connection variable in verbose output.
GENERIC_PLAY = """\
- name: Generic connection checks
  hosts: lab
  gather_facts: false
  serial: 1
  vars:
    local_dir: "{local_tmp}/{{{{ inventory_hostname }}}}-汉语"
    remote_dir: /tmp/mage-generic-汉语
  tasks:
    - name: Raw with a unicode argument and output
      ansible.builtin.raw: echo 汉语
      register: command
    - name: Raw output came back and raw counts as a change
      ansible.builtin.assert:
        that:
          - "'汉语' in command.stdout"
          - command is changed
    - name: A local file with a unicode name and content
      delegate_to: localhost
      ansible.builtin.lineinfile:
        path: "{{{{ local_dir }}}}/汉语.txt"
        create: true
        line: 汉语
        mode: "0644"
    - name: No remote file yet
      ansible.builtin.file:
        path: "{{{{ remote_dir }}}}"
        state: absent
    - name: A remote directory with a unicode name
      ansible.builtin.file:
        path: "{{{{ remote_dir }}}}"
        state: directory
        mode: "0755"
    - name: Copy the unicode file in
      ansible.builtin.copy:
        src: "{{{{ local_dir }}}}/汉语.txt"
        dest: "{{{{ remote_dir }}}}/汉语.txt"
        mode: "0644"
    - name: Fetch it back
      ansible.builtin.fetch:
        src: "{{{{ remote_dir }}}}/汉语.txt"
        dest: "{{{{ local_dir }}}}/back.txt"
        flat: true
    - name: The content survived both ways
      ansible.builtin.assert:
        that: lookup('ansible.builtin.file', local_dir + '/back.txt') == '汉语'
    - name: Remove the remote directory
      ansible.builtin.file:
        path: "{{{{ remote_dir }}}}"
        state: absent
    - name: Wait for the connection
      ansible.builtin.wait_for_connection:
        timeout: 30
    - name: Reset the connection
      ansible.builtin.meta: reset_connection
    - name: Still reachable after a reset
      ansible.builtin.ping:

- name: Reset with a templated connection
  hosts: lab
  gather_facts: false
  vars:
    ansible_connection: "{{{{ 'mage_lxd' }}}}"
  tasks:
    - name: Reset the connection
      ansible.builtin.meta: reset_connection
    - name: Reachable
      ansible.builtin.ping:
"""


@pytest.mark.parametrize("pipelining", ["True", "False"])
def test_ansible_cores_generic_connection_checks_pass(containers, tmp_path, pipelining):
    hosts = static_inventory(tmp_path, "first ansible_host=connp1", "second ansible_host=connp2")
    playbook = tmp_path / "generic.yml"
    playbook.write_text(GENERIC_PLAY.format(local_tmp=tmp_path))
    env = {"ANSIBLE_PIPELINING": pipelining}
    result = ansible("ansible-playbook", "-i", str(hosts), str(playbook), env=env, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    # Every task of both plays ran (the two meta tasks are not counted).
    assert recap(result.stdout)["first"]["failed"] == 0 and recap(result.stdout)["second"]["ok"] == 12
    verbose = ansible("ansible", "-i", str(hosts), "lab", "-m", "ansible.builtin.set_fact", "-a", "testing=value",
                      "-v", env=env)
    assert "ansible_host" not in verbose.stdout


def test_become_with_a_password_sudo_and_su(inventory):
    sudo = ansible("ansible", "-i", str(inventory), "connp1", "-m", "ansible.builtin.command", "-a", "id -un",
                   "-u", "pw", "--become", "-e", f"ansible_become_password={PW_PASSWORD}", "-vvv", check=False)
    assert sudo.returncode == 0, sudo.stdout[-3000:]
    assert "| CHANGED | rc=0 >>\nroot" in sudo.stdout
    assert PW_PASSWORD not in sudo.stdout + sudo.stderr
    su = adhoc(inventory, "connp1", "ansible.builtin.command", "id -un", "-u", "app", "--become", "--become-method",
               "su", "-e", f"ansible_become_password={ROOT_PASSWORD}")["connp1"]
    assert su.get("stdout") == "root", su


def test_become_password_where_none_is_needed_is_accepted(inventory):
    # app may sudo without a password; a password set for every host must not break it.
    result = adhoc(inventory, "connp1", "ansible.builtin.command", "id -un", "-u", "app", "--become",
                   "-e", "ansible_become_password=unused")["connp1"]
    assert result.get("stdout") == "root", result


@pytest.mark.parametrize("method", ["sudo", "su"])
def test_a_wrong_become_password_fails_clearly_without_hanging(inventory, method):
    user = "pw" if method == "sudo" else "app"
    started = time.monotonic()
    result = ansible("ansible", "-i", str(inventory), "connp1", "-m", "ansible.builtin.command", "-a", "id -un",
                     "-u", user, "--become", "--become-method", method, "-e", "ansible_become_password=wrong-Pass-99",
                     check=False)
    assert time.monotonic() - started < 60
    assert result.returncode != 0
    assert "instance 'connp1'" in result.stdout and "password" in result.stdout, result.stdout[-2000:]
    assert "UNREACHABLE" not in result.stdout
    assert "wrong-Pass-99" not in result.stdout + result.stderr


def test_a_thousand_short_execs_from_five_threads_never_fail(containers):
    # The smaller in-suite version of bench/exec_stress.py. Half the commands leave their stdin
    # unread, so LXD closes that stream while it is being sent: the race an exec client must survive.
    failures: list[str] = []
    counter = iter(range(1000))

    done: list[int] = []

    def worker(number: int) -> None:
        try:
            channel = InstanceChannel.connect(lab_remote(), PROJECT, RUNNING[number % 2])
        except BaseException as exc:  # a thread that cannot even connect is a failure too
            failures.append(f"connect: {type(exc).__name__}: {exc}")
            return
        for index in counter:
            try:
                if index % 2:
                    assert channel.exec(["true"], stdin=b"x" * 4096)[0] == 0
                else:
                    assert channel.exec(["cat"], stdin=b"%d" % index)[:2] == (0, b"%d" % index)
            except BaseException as exc:  # every failure counts, whatever its type
                failures.append(f"{type(exc).__name__}: {exc}")
            else:
                done.append(index)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(done) == 1000  # no thread died quietly


def test_modules_raw_and_file_transfers_under_five_forks_never_fail(containers, tmp_path):
    hosts = static_inventory(tmp_path, *(f"s{index} ansible_host={RUNNING[index % 2]}" for index in range(5)))
    playbook = exec_stress_playbook(tmp_path, "lab", commands=8, transfers=4)
    result = ansible("ansible-playbook", "-i", str(hosts), str(playbook), "--forks", "5", check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    counts = recap(result.stdout)
    assert len(counts) == 5 and all(host["failed"] == 0 and host["unreachable"] == 0 for host in counts.values())
    assert len(list((tmp_path / "back").iterdir())) == 20


def test_command_timeout_also_stops_a_command_run_with_a_become_password(containers, tmp_path):
    hosts = static_inventory(tmp_path, "connp1 ansible_mage_lxd_command_timeout=4 ansible_user=pw")
    result = ansible("ansible", "-i", str(hosts), "connp1", "-m", "ansible.builtin.raw", "-a", "sleep 53",
                     "--become", "-e", f"ansible_become_password={PW_PASSWORD}", check=False)
    assert "did not finish within 4s; it was stopped" in result.stdout, result.stdout[-2000:]
    assert "UNREACHABLE" not in result.stdout
    left = lxc("exec", "connp1", "--project", PROJECT, "--", "sh", "-c",
               "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\\\000' ' '").stdout
    assert "sleep 53" not in left
