"""A hostile tenant against the connection, its bounds, its output and the batch lock: someone who is
root inside one container (or may edit its config), or another local user of the controller.

Each test attacks one promise of the README's trust model and asserts what the operator sees:
/etc/shadow in the instance, the task's status and message, the run's output, how long it took.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.channel import InstanceChannel
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import ExecError
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import local_socket_path

from lxd_lab import (CLI, REPO, VENV_BIN, ansible, create_project, delete_project, lab_remote, launch, lxc,
                     project_name, wait_for_leases)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-tconn-plugin")
BATCH_PROJECT = project_name("mage-test-tconn-batch")
VICTIM = "tconn1"
# Root inside the container: plants links to /etc/shadow under every name a put may use in app's
# fresh temporary directories, and keeps flipping app's link `baitdir` (atomic renames) between app's
# own directory and /etc, so a fetch of baitdir/shadow is stat-ed as app's file and may be
# transferred from /etc. (LXD's files API refuses a link as the last component, "is a symlink", but
# follows links in the components before it, as root.)
RACER = textwrap.dedent("""\
    import os, time
    os.chdir("/home/app")
    tmp = "/home/app/.ansible/tmp"
    while True:
        for name in os.listdir(tmp) if os.path.isdir(tmp) else []:
            for planted in (".source", ".source.txt", "source"):
                try:
                    os.symlink("/etc/shadow", os.path.join(tmp, name, planted))
                except OSError:
                    pass
        for _ in range(50):
            for target in ("realdir", "/etc"):
                os.symlink(target, "baitdir.new")
                os.rename("baitdir.new", "baitdir")
                time.sleep(0.0005)
    """)


def in_victim(script: str, check: bool = True) -> str:
    return lxc("exec", VICTIM, "--project", PROJECT, "--", "sh", "-c", script, check=check).stdout


@pytest.fixture(scope="module")
def victim(lab):
    """A Debian container with an unprivileged user `app`, and root's racer script in it."""
    create_project(PROJECT)
    try:
        launch(PROJECT, VICTIM, image="mage/debian-12")
        wait_for_leases(PROJECT, [VICTIM])
        in_victim("useradd -m -s /bin/sh app && mkdir /home/app/realdir && echo readable-by-app > /home/app/realdir/shadow"
                  " && chown -R app /home/app/realdir")
        lxc("file", "push", "-", f"{VICTIM}/root/racer.py", "--project", PROJECT, stdin=RACER)
        yield
    finally:
        delete_project(PROJECT)


@pytest.fixture()
def inventory(victim, tmp_path):
    path = tmp_path / "inv" / "mage_lxd.yml"
    path.parent.mkdir()
    path.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    return path


@pytest.fixture()
def racer(victim):
    """Root inside the container racing every transfer of app's, for the test's length."""
    process = subprocess.Popen([CLI, "exec", VICTIM, "--project", PROJECT, "--", "timeout", "120", "python3", "/root/racer.py"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while "baitdir" not in in_victim("ls /home/app"):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.2)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)
        in_victim("for p in /proc/[0-9]*; do grep -q racer \"$p/cmdline\" 2>/dev/null && kill \"${p#/proc/}\"; done; "
                  "rm -f /home/app/baitdir /home/app/baitdir.new", check=False)


def adhoc(inventory: Path, module: str, args: str, *extra: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    """One ad-hoc task on the victim; (its result from the tree callback, the run)."""
    tree = Path(tempfile.mkdtemp(prefix="mage-tconn-"))
    try:
        run = ansible("ansible", "-i", str(inventory), VICTIM, "-m", module, "-a", args, "-t", str(tree), *extra,
                      env={"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}, check=False)
        result = json.loads((tree / VICTIM).read_text()) if (tree / VICTIM).exists() else {}
    finally:
        shutil.rmtree(tree)
    return result, run


def shadow() -> str:
    return in_victim("stat -c '%U:%G %a %s' /etc/shadow; sha256sum /etc/shadow")


def test_a_link_planted_in_the_users_temp_dir_never_turns_a_copy_into_a_write_of_etc_shadow(inventory, racer, tmp_path):
    before = shadow()
    payload = tmp_path / "payload.txt"
    payload.write_text("tenant-payload\n")
    for attempt in range(3):
        result, run = adhoc(inventory, "ansible.builtin.copy", f"src={payload} dest=/home/app/payload{attempt}.txt",
                            "-u", "app")
        assert shadow() == before, f"/etc/shadow was changed by a copy as app:\n{run.stdout[-2000:]}"
        if result.get("failed") or result.get("msg"):
            # Refused with app's own rights, naming the instance, and the host still reachable.
            assert result.get("unreachable") is not True, result
            assert f"instance '{VICTIM}'" in result["msg"] and "as user 'app'" in result["msg"], result
            assert "Permission denied" in result["msg"] and "Fix:" in result["msg"], result
        else:
            assert in_victim(f"cat /home/app/payload{attempt}.txt") == "tenant-payload\n"
    assert "tenant-payload" not in in_victim("cat /etc/shadow")


def test_a_path_through_a_link_that_flips_is_never_fetched_as_root(inventory, racer, tmp_path):
    # stat sees app's own file, the transfer may meet /etc/shadow: read as app, that is refused.
    secret = in_victim("cat /etc/shadow")
    for attempt in range(12):
        adhoc(inventory, "ansible.builtin.fetch", f"src=/home/app/baitdir/shadow dest={tmp_path}/got{attempt} flat=true",
              "-u", "app")
        got = tmp_path / f"got{attempt}"
        assert not got.exists() or got.read_text() in ("readable-by-app\n",), "the controller received /etc/shadow"
    assert secret == in_victim("cat /etc/shadow")


def test_root_still_writes_through_the_files_api(victim, tmp_path):
    # The fast path is kept for root: no exec for its puts.
    channel = InstanceChannel.connect(lab_remote(), PROJECT, VICTIM)
    source = tmp_path / "root.txt"
    source.write_text("root's\n")
    lines = []
    channel.log = lines.append
    channel.put_file(str(source), "/root/root.txt")
    assert not any("exec" in line for line in lines), lines
    assert in_victim("cat /root/root.txt") == "root's\n"


def test_a_users_file_put_and_fetched_as_that_user_keeps_every_byte_its_mode_and_owner(victim, tmp_path):
    channel = InstanceChannel.connect(lab_remote(), PROJECT, VICTIM)
    app = channel.lookup_user("app")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024 + 17))
    source.chmod(0o640)
    channel.put_file(str(source), "/home/app/big.bin", app)
    assert in_victim("stat -c '%a %U %G %s' /home/app/big.bin").split() == ["640", "app", "app", str(20 * 1024 * 1024 + 17)]
    channel.fetch_file("/home/app/big.bin", str(tmp_path / "back.bin"), app)
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert not (tmp_path / "back.bin.part").exists()


def test_huge_stdin_a_command_never_reads_is_cut_off_at_command_timeout(victim):
    channel = InstanceChannel.connect(lab_remote(), PROJECT, VICTIM, command_timeout=3)
    outcome: list[BaseException | tuple] = []

    def run():
        try:
            outcome.append(channel.exec(["sleep", "300"], stdin=b"x" * (64 * 1024 * 1024)))
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the exec still hangs 60s after a command_timeout of 3s (stdin was never read)"
    assert time.monotonic() - started < 30
    error = outcome[0]
    assert isinstance(error, ExecError) and error.timed_out, error
    assert f"instance '{VICTIM}'" in str(error) and "within 3s" in str(error) and "command_timeout" in str(error)
    assert "sleep 300" not in in_victim("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\000' ' '")


def run_bounded(action, seconds: float) -> tuple[BaseException | object | None, float]:
    """(what `action` returned or raised, how long it took); None when still running after `seconds`."""
    outcome: list[BaseException | object] = []

    def run():
        try:
            outcome.append(action())
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    return (outcome[0] if outcome else None), time.monotonic() - started


def test_a_stop_command_the_instance_makes_hang_is_given_up_after_its_limit(victim):
    # Root inside replaces tr, which the stop command reads every process's environment with.
    in_victim("mv /usr/bin/tr /usr/bin/tr.real && printf '#!/bin/sh\\nexec sleep 1000\\n' > /usr/bin/tr"
              " && chmod 755 /usr/bin/tr")
    try:
        channel = InstanceChannel.connect(lab_remote(), PROJECT, VICTIM, command_timeout=3)
        error, took = run_bounded(lambda: channel.exec(["sleep", "61"]), 120)
        assert error is not None, "still waiting for the stop command 120s after a command_timeout of 3s"
        assert isinstance(error, ExecError) and took < 60, (error, took)
        message = str(error)
        assert f"instance '{VICTIM}'" in message and "could not be stopped" in message, message
        assert "within its limit of 30s" in message and "Fix: stop the processes with MAGE_LXD_EXEC_ID=" in message
    finally:
        in_victim("mv -f /usr/bin/tr.real /usr/bin/tr; for p in /proc/[0-9]*; do "
                  "grep -qa -e 'sleep.1000' -e 'sleep.61' \"$p/cmdline\" 2>/dev/null && kill \"${p#/proc/}\"; done",
                  check=False)


def test_output_beyond_max_output_stops_the_command_and_fails_the_task(inventory):
    result, run = adhoc(inventory, "ansible.builtin.raw", "head -c 30000000 /dev/zero; echo never-seen",
                        "-e", "ansible_mage_lxd_max_output=1000000")
    assert result.get("unreachable") is not True, result
    message = result.get("msg", "")
    assert f"instance '{VICTIM}'" in message and "more than 1000000 bytes" in message, run.stdout[-2000:]
    assert "ansible_mage_lxd_max_output" in message and "Fix:" in message
    assert "stdout" not in result, "output beyond the limit reached the task's result"
    # Within the limit, output is whole.
    small, _ = adhoc(inventory, "ansible.builtin.raw", "head -c 300000 /dev/zero | tr '\\000' a",
                     "-e", "ansible_mage_lxd_max_output=1000000")
    assert small["stdout"].count("a") == 300000


SECRETS = ("env-Secret-4711", "cloud-Secret-0815", "vendor-Secret-2342", "profile-Secret-1703")


def test_diff_and_vvv_show_that_a_secret_changed_never_its_value(lab, tmp_path):
    create_project(BATCH_PROJECT)
    try:
        inventory = tmp_path / "inv" / "mage_lxd.yml"
        inventory.parent.mkdir()
        inventory.write_text(f"plugin: mage_lxd\nprojects: [{BATCH_PROJECT}]\n")
        playbook = tmp_path / "secrets.yml"
        outputs = []
        for round_ in ("old", "new"):
            playbook.write_text(textwrap.dedent(f"""\
                - name: An instance with secrets in its config
                  hosts: localhost
                  connection: local
                  gather_facts: false
                  tasks:
                    - name: Converge
                      mage.lxd.mage_lxd_instance:
                        name: secrets1
                        project: {BATCH_PROJECT}
                        image: mage/busybox
                        state: stopped
                        project_profiles:
                          - name: secrets
                            config:
                              environment.api_token: "{SECRETS[3]}-{round_}"
                        config:
                          environment.db_password: "{SECRETS[0]}-{round_}"
                          user.user-data: "#cloud-config\\npassword: {SECRETS[1]}-{round_}"
                          user.vendor-data: "#cloud-config\\npassword: {SECRETS[2]}-{round_}"
                """))
            run = ansible("ansible-playbook", "-i", str(inventory), str(playbook), "--diff", "-vvv", check=False)
            assert run.returncode == 0, run.stdout[-3000:]
            outputs.append(run.stdout + run.stderr)
        listed = ansible("ansible-inventory", "-i", str(inventory), "--list", "-vvv")
        outputs.append(listed.stdout + listed.stderr)
        for text in outputs:
            for secret in SECRETS:
                assert secret not in text, text[-3000:]
        # The second run's diff says each secret changed, in a profile too; the inventory that each is set.
        assert outputs[1].count("(secret, not shown; changed)") >= 3, outputs[1][-3000:]
        assert '"environment.api_token": "(secret, not shown; changed)"' in outputs[1], outputs[1][-3000:]
        assert "(secret, not shown)" in outputs[2]
        # What LXD holds is the declared value.
        config = json.loads(lxc("query", f"/1.0/instances/secrets1?project={BATCH_PROJECT}").stdout)["config"]
        assert config["environment.db_password"] == f"{SECRETS[0]}-new"
        profile = json.loads(lxc("query", f"/1.0/profiles/secrets?project={BATCH_PROJECT}").stdout)["config"]
        assert profile["environment.api_token"] == f"{SECRETS[3]}-new"
    finally:
        delete_project(BATCH_PROJECT)


# The lab's socket spelled so that no run of anyone else's shares its lock: the old lock file of the
# usual spelling was made by root's first run (0644) and is out of another user's reach now; this
# one is fresh, as that one was on a new controller.
SOCKET = local_socket_path(os.environ.get("MAGE_LXD_URL", ""))
SOCKET_SPELLED = f"{os.path.dirname(SOCKET)}//{os.path.basename(SOCKET)}"


def old_lock_path() -> str:
    """Where versions before the trust model kept the batch lock for SOCKET_SPELLED."""
    return f"/tmp/mage-lxd-{hashlib.sha256(SOCKET_SPELLED.encode()).hexdigest()[:16]}.lock"


def hold_as_nobody(path: str) -> subprocess.Popen[bytes]:
    """Another local user creates `path` (if it can) and holds an exclusive flock on it."""
    holder = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(300)", path],
        stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    return holder


def converge_nothing(env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """A batch that takes the lock and changes nothing (an absent instance stays absent); one that
    waits for the lock raises subprocess.TimeoutExpired after 90s (the old wait was 600s)."""
    started = time.monotonic()
    args = json.dumps({"name": "tconn-never", "project": BATCH_PROJECT, "state": "absent",
                       "url": f"unix:{SOCKET_SPELLED}"})
    run = subprocess.run([str(VENV_BIN / "ansible"), "-i", "localhost,", "localhost", "-c", "local", "-m",
                          "mage.lxd.mage_lxd_instance", "-a", args], capture_output=True, text=True, timeout=90,
                         cwd=REPO, env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **(env or {})})
    return run, time.monotonic() - started


def test_a_lock_another_local_user_holds_never_blocks_the_run(lab, tmp_path):
    # The lock file older versions used, made first by another local user, who holds it.
    path = old_lock_path()
    holder = hold_as_nobody(path)
    # And a runtime directory another user made, with a mage-lxd directory it holds a lock in.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    runtime.chmod(0o1777)
    (runtime / "mage-lxd").mkdir()
    (runtime / "mage-lxd").chmod(0o777)
    os.chown(runtime, 65534, 65534)
    os.chown(runtime / "mage-lxd", 65534, 65534)
    try:
        for env in (None, {"XDG_RUNTIME_DIR": str(runtime)}):
            try:
                run, took = converge_nothing(env)
            except subprocess.TimeoutExpired:
                pytest.fail("the run waited for a lock another user holds")
            assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
            assert took < 60, f"the run took {took:.0f}s"
        assert not any((runtime / "mage-lxd").iterdir()), "a lock was made in another user's directory"
        # The lock we use is ours alone.
        ours = Path.home() / ".cache" / "mage-lxd"
        assert ours.is_dir() and (ours.stat().st_mode & 0o777) == 0o700 and ours.stat().st_uid == os.getuid()
    finally:
        holder.terminate()
        holder.wait(10)
        if os.path.exists(path) and os.stat(path).st_uid == 65534:
            os.unlink(path)
