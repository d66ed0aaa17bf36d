"""Connection benchmark: the mage_lxd connection plugin against community.general.lxd and local.

What it measures, for each number N of running Debian containers (10 and 30 by default), as the
wall-clock time of one ad-hoc `ansible all -m ansible.builtin.ping` over all N hosts:

- ours: the project's venv (.venv) with the repo's ansible.cfg (cwd is the repo), the mage_lxd
  inventory (a `mage_lxd.yml` with `plugin: mage_lxd` and `projects: [mage-bench-conn]`) and so the
  mage_lxd connection, which talks to LXD's API over the unix socket, pipelining on (its default).
- cg pipelining / cg no-pipelining: community.general.lxd, which runs the `lxc` binary for every
  exec, from a separate virtualenv (bench/.venv-cg, PyPI's `ansible` 12.x, which bundles
  community.general and uses ansible-core 2.19) with a minimal config of its own, so the repo's
  ansible.cfg plays no part. A static INI inventory lists the N containers with
  ansible_connection=community.general.lxd, ansible_lxd_project=mage-bench-conn and
  ansible_lxd_remote=local; pipelining is switched with ANSIBLE_PIPELINING=True / False.
- local floor: the same number of made-up hosts with ansible_connection=local (static INI
  inventory, ansible_python_interpreter = the project venv's python), run like ours (project venv,
  repo ansible.cfg, cwd the repo), pipelining on (ANSIBLE_PIPELINING=True) as ours is. What
  ansible-core itself costs for N pings with no container in the way.

The same four also run a 20-task playbook (copy, template, command and stat, into a directory of
each host's own) over 10 hosts: the median of 3 timed runs after a warm-up, with the failed or
unreachable tasks of every run reported (a baseline's failures are reported, not fatal).

Held equal across all four: forks = 5 (Ansible's default, passed as --forks 5), no facts (an
ad-hoc ping gathers none), and the Python interpreter is set so no command pays for interpreter
discovery: /usr/bin/python3 in the containers (for ours as the extra var
`-e ansible_python_interpreter=/usr/bin/python3`, for community.general as an inventory variable),
the venv's python for the local floor. ANSIBLE_* variables of the calling shell are not passed on.

Each command runs once untimed first (warm-up; ours and the floor must print SUCCESS with "pong"
for every one of the N hosts, else the host's error is printed and the run stops; a baseline's
failed hosts are printed and it is measured anyway, its failures counted per run in the report),
then 3 timed runs (exit status 0 required of ours and the floor); every figure is the median of those 3 (time.perf_counter around the subprocess). The
timed runs go in rounds (ours, cg pipelining, cg no-pipelining, local floor; three times), so a
drift in the machine's load is shared by all four. Measuring at each N starts once systemd has
finished booting in every container and the CPU is at least 85% idle (or after 90 s, with a
warning: another workload on the machine makes every figure noisy). A run that gives no answer
in 120 s counts as hung: it is killed with all its processes (Ansible's workers and what they
run), redone (twice at most), and listed at the end of the report.

Targets, checked at every N, printed as PASS/FAIL lines; the script exits 0 either way, it is a
report, not a test:
- ours is faster than community.general with pipelining;
- ours takes at most 1.1x the local floor.

Setup. Everything happens in the LXD project `mage-bench-conn` (created with features.images=false
and features.profiles=false, so it uses the default project's images and default profile: root
disk on the lab pool, eth0 on the lab bridge). Containers (image mage/debian-12) are named
conn-001, conn-002, ...; they are launched 4 at a time, each `lxc` command with a timeout, and what
is missing is retried; the set grows from one size to the next instead of being recreated, and each
size is measured once every container has its IPv4 lease. At the end the containers and the project
are deleted (also after an error, Ctrl-C or SIGTERM) unless --keep is given; a kept project is
reused by the next run. Nothing outside the project is touched.

Host limit. systemd in each Debian container holds about 6 inotify instances, all charged to the
host's root (the creator of every container's user namespace), so all containers share
fs.inotify.max_user_instances; with Debian's default of 128 only about 20 such containers boot (the
others' systemd exits at once: "Too many open files"). The script warns before launching when the
limit looks too low; raise it for the run with `sysctl -w fs.inotify.max_user_instances=1024`.

On Incus (MAGE_BENCH_SERVER=incus): the lab's Incus (lab/incus.sh), the project
mage-bench-conn-inc, and community.general.incus (which runs the `incus` binary for every exec,
ansible_incus_project/ansible_incus_remote) from bench/.venv-cg-incus (PyPI's `ansible` 13.x, on a
Python >= 3.12 found on PATH or under ~/.pyenv). Ours and theirs use the same Incus in the same run.

Run it as root, from anywhere, with the project's venv and the lab up (lab/up.sh):

    .venv/bin/python bench/connection.py               # N = 10 and 30
    .venv/bin/python bench/connection.py --sizes 5 20  # other sizes
    .venv/bin/python bench/connection.py --keep        # leave mage-bench-conn and its containers
    MAGE_BENCH_SERVER=incus .venv/bin/python bench/connection.py   # on Incus, against community.general.incus

Progress goes to stderr, the results table to stdout. The first run creates bench/.venv-cg
(a few minutes); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import bench_lab
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from bench_lab import (CG_PLUGIN, ON_INCUS, OUR_BIN, REPO, SOCKET, container_names, format_samples, log, lxc,
                       our_inventory, parallel,
                       project_instances)

PROJECT = bench_lab.bench_project_name("mage-bench-conn")
IMAGE = "mage/debian-12"
CONTAINER_PYTHON = "/usr/bin/python3"
FORKS = 5
RUNS = 3
LAUNCH_WORKERS = 4
LXC_TIMEOUT = 300  # seconds; an lxc command still waiting then is killed (and its work redone)
RUN_TIMEOUT = 120  # seconds for one ansible run (they take ~10 s); past it, the run counts as hung
HUNG_RETRIES = 2  # a hung run is killed and redone, at most this many times per command and N
SETTLE_IDLE = 0.85  # measuring starts once the machine's CPU is this idle (over 2 s) ...
SETTLE_TIMEOUT = 90  # ... or after this many seconds, with a warning
INOTIFY_PER_CONTAINER = 6  # inotify instances systemd holds in one running mage/debian-12 container
TARGET_OURS_OVER_CG = 1.0  # ours must take less than community.general with pipelining
TARGET_OURS_OVER_FLOOR = 1.1  # issue 12: at most 1.1x the local floor
BENCH = bench_lab.BenchProject(project=PROJECT, prefix="conn", image=IMAGE, workers=LAUNCH_WORKERS,
                               lxc_timeout=LXC_TIMEOUT)


# --- the LXD project and its containers ---------------------------------------------------------


def prepare_containers(api: LxdApi, count: int) -> None:
    """bench_lab.ensure_containers for conn-001..conn-COUNT, then wait for their boot and a calm CPU.

    Before launching, warn when the inotify limit looks too low; when the launch rounds do not get
    every container running, the error ends with the console log of one that stopped.
    """
    check_inotify_room(api, count)
    bench_lab.ensure_containers(api, BENCH, count, explain=stopped_console)
    wait_for_boot(count)
    wait_for_idle_cpu()


def wait_for_boot(count: int) -> None:
    """Wait until systemd has finished booting in every container.

    A DHCP lease comes early in a Debian boot; the rest (units, nginx) still uses CPU for a while,
    and would slow down whichever command is measured first.
    """
    started = time.perf_counter()

    def booted(name: str) -> str | None:
        answers = []
        for _ in range(3):  # an answer can come back empty (lxc exec losing the output); ask again
            result = lxc("exec", name, "--project", PROJECT, "--", "systemctl", "is-system-running", "--wait",
                         timeout=LXC_TIMEOUT, check=False)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return None
            error = result.stderr.strip()
            answers.append(f"'{state}' (exit {result.returncode}{', ' + error if error else ''})")
        return f"{name}: systemd did not report a finished boot: {'; '.join(answers)}"

    for problem in filter(None, parallel(booted, container_names(BENCH, count), LAUNCH_WORKERS)):
        log(problem)
    log(f"systemd booted in all {count} containers ({time.perf_counter() - started:.1f} s)")


def cpu_idle_fraction(seconds: float) -> float:
    """Share of the machine's CPU time spent idle over the next `seconds` (from /proc/stat)."""
    def sample() -> list[int]:
        return [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    before = sample()
    time.sleep(seconds)
    delta = [after - first for after, first in zip(sample(), before)]
    return (delta[3] + delta[4]) / max(1, sum(delta))  # idle + iowait


def wait_for_idle_cpu() -> None:
    """Wait (at most SETTLE_TIMEOUT) until the machine is mostly idle, so runs start from calm."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (idle := cpu_idle_fraction(2)) < SETTLE_IDLE and time.monotonic() < deadline:
        pass
    if idle < SETTLE_IDLE:
        log(f"warning: the CPU is still {100 * (1 - idle):.0f}% busy after {SETTLE_TIMEOUT} s "
            "(another workload?); timings will be noisy")
    else:
        log(f"CPU {100 * idle:.0f}% idle; measuring")


def inotify_instances_in_use() -> int:
    """Open inotify instances on the whole machine (containers included), counted by their fds."""
    used = 0
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            used += sum(1 for fd in fd_dir.iterdir() if os.readlink(fd) == "anon_inode:inotify")
        except OSError:
            continue  # the process ended, or a fd closed while being read
    return used


def check_inotify_room(api: LxdApi, count: int) -> None:
    """Warn when the containers still to start would pass fs.inotify.max_user_instances.

    systemd in each Debian container opens about INOTIFY_PER_CONTAINER inotify instances, and every
    container's are charged to the user that created its user namespace (root on the host), so all
    containers and root's own processes share one limit. Past it, systemd exits at boot ("Failed to
    allocate manager object: Too many open files"): `lxc launch` succeeds, the container stops.
    """
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    running = sum(1 for status in project_instances(api, BENCH).values() if status == "Running")
    needed = inotify_instances_in_use() + INOTIFY_PER_CONTAINER * max(0, count - running)
    if needed > limit:
        log(f"warning: about {needed} inotify instances needed for {count} containers, "
            f"fs.inotify.max_user_instances is {limit}; containers past it stop at boot. "
            "Fix: sysctl -w fs.inotify.max_user_instances=1024")


def stopped_console(commands: list[tuple[str, ...]]) -> str:
    """The end of the console log of the first container that had to be started again."""
    for command in commands:
        if command[0] == "start":
            console = lxc("console", command[1], "--project", PROJECT, "--show-log", timeout=LXC_TIMEOUT,
                          check=False)
            tail = "\n".join((console.stdout or console.stderr).strip().splitlines()[-8:])
            return f"\n{command[1]} stopped after starting; the end of its console log:\n{tail}"
    return ""


# --- measurements -------------------------------------------------------------------------------


class Hung(RuntimeError):
    """An ansible run gave no answer in RUN_TIMEOUT seconds; it and its processes were killed."""


def process_table() -> dict[int, tuple[int, str, str]]:
    """{pid: (parent pid, start time, command line)} of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        table[int(stat.parent.name)] = (int(fields[1]), fields[19], cmdline.strip())
    return table


def process_tree(root: int) -> dict[int, tuple[str, str]]:
    """{pid: (start time, command line)} of `root` and all its descendants.

    Ansible's workers start sessions of their own (setsid), so a process group kill misses them
    and what they run (lxc); they are found by parentage instead.
    """
    table = process_table()
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree[pid] = table[pid][1:]
            todo.extend(child for child, (parent, _, _) in table.items() if parent == pid)
    return tree


def kill_tree(tree: dict[int, tuple[str, str]]) -> None:
    """SIGTERM, then SIGKILL, each process of `tree` that is still the same process (start time)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        table = process_table()
        alive = [pid for pid, (start, _) in tree.items() if pid in table and table[pid][1] == start]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)


# The ad-hoc (minimal) callback prints one `HOST | STATUS => {json}` block per host.
RESULT_LINE = re.compile(r"^(\S+) \| ([A-Z!]+) => ", re.MULTILINE)


def parse_results(stdout: str) -> dict[str, tuple[str, object]]:
    """{host: (status, result)} from the minimal callback's output."""
    decoder = json.JSONDecoder()
    results = {}
    for match in RESULT_LINE.finditer(stdout):
        try:
            result, _ = decoder.raw_decode(stdout, match.end())
        except json.JSONDecodeError:
            result = stdout[match.end():match.end() + 500]
        results[match.group(1)] = (match.group(2), result)
    return results


class PingCommand:
    """One `ansible all -m ansible.builtin.ping` command line with its environment."""

    def __init__(self, label: str, binary: Path, source: Path, config: Path, cwd: Path,
                 extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None,
                 baseline: bool = False):
        self.label = label
        # A baseline's failed hosts are part of its result (reported, not fatal); ours must not fail.
        self.baseline = baseline
        self.failures: list[int] = []
        self.args = [str(binary), "all", "-i", str(source), "-m", "ansible.builtin.ping",
                     "--forks", str(FORKS), *extra_args]
        self.cwd = cwd
        # The calling shell's ANSIBLE_* settings would apply to some commands and not others.
        base = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        self.env = {**base, "ANSIBLE_CONFIG": str(config), "ANSIBLE_NOCOLOR": "1",
                    "ANSIBLE_FORCE_COLOR": "0",
                    # A source that fails to parse must fail the command, not give an empty inventory.
                    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1", **(extra_env or {})}
        self.stderr_seen: set[str] = set()

    def describe(self) -> str:
        settings = " ".join(f"{key}={value}" for key, value in self.env.items()
                            if key.startswith("ANSIBLE_") and key not in ("ANSIBLE_NOCOLOR", "ANSIBLE_FORCE_COLOR"))
        return f"cd {self.cwd} && {settings} {' '.join(self.args)}"

    def run(self) -> subprocess.CompletedProcess:
        """Run the command once; raise Hung (after killing its whole process tree) past RUN_TIMEOUT."""
        process = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            tree = process_tree(process.pid)
            # What the workers were waiting for: their children (e.g. an `lxc exec` that never returns).
            waiting = [command for pid, (_, command) in tree.items()
                       if pid != process.pid and not command.startswith(self.args[0].rsplit("/", 1)[0])]
            kill_tree(tree)
            process.communicate()
            raise Hung(f"{self.label}: no answer in {RUN_TIMEOUT} s, killed {len(tree)} processes; "
                       f"still running then: {'; '.join(c[:200] for c in waiting) or 'only ansible itself'}") from None
        except BaseException:
            kill_tree(process_tree(process.pid))  # Ctrl-C or SIGTERM: leave nothing behind
            raise
        return subprocess.CompletedProcess(self.args, process.returncode, stdout, stderr)

    def report_stderr(self, stderr: str) -> None:
        """Log what the command printed on stderr (warnings, tracebacks), once per distinct text."""
        text = stderr.strip()
        if text and text not in self.stderr_seen:
            self.stderr_seen.add(text)
            lines = text.splitlines()
            shown = "\n".join(lines[:40]) + (f"\n... ({len(lines) - 40} more lines)" if len(lines) > 40 else "")
            log(f"{self.label} printed on stderr:\n{shown}")

    def check_hosts(self, hosts: list[str]) -> None:
        """Run once untimed; fail, printing each failed host's error, unless every host said pong
        (a baseline's failures are logged and it is measured anyway)."""
        log(f"{self.label}: {self.describe()}")
        self.failures = []
        result = self.run()
        self.report_stderr(result.stderr)
        found = parse_results(result.stdout)
        problems = []
        for host in hosts:
            status, answer = found.get(host, ("MISSING", None))
            if status != "SUCCESS" or not isinstance(answer, dict) or answer.get("ping") != "pong":
                detail = json.dumps(answer, indent=2)[:3000] if answer is not None else "no result printed"
                problems.append(f"{host} | {status}: {detail}")
        unexpected = sorted(set(found) - set(hosts))
        if unexpected:
            problems.append(f"unexpected hosts: {', '.join(unexpected[:10])}")
        if (problems or result.returncode != 0) and self.baseline:
            log(f"{self.label}: warm-up: {len(problems)} hosts without pong (a baseline: measured anyway):\n"
                + "\n".join(problems[:3]))
            return
        if problems or result.returncode != 0:
            raise RuntimeError(
                f"{self.label}: warm-up run exited {result.returncode}, {len(problems)} problems:\n"
                + "\n".join(problems[:10])
                + ("" if problems else f"\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"))
        log(f"{self.label}: all {len(hosts)} hosts answered pong")

    def timed(self) -> float:
        started = time.perf_counter()
        result = self.run()
        elapsed = time.perf_counter() - started
        self.report_stderr(result.stderr)
        failed = sum(1 for status, _ in parse_results(result.stdout).values() if status != "SUCCESS")
        self.failures.append(failed)
        if result.returncode != 0 and not self.baseline:
            raise RuntimeError(f"{self.label}: timed run exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return elapsed


# The 20-task playbook: copy, template, command and stat, five of each, into a directory of each
# host's own (the local floor's hosts all write to this machine).
PLAYBOOK_HOSTS = 10
PLAYBOOK_FAILURES: dict[str, list[int]] = {}  # failed/unreachable tasks per timed run, per command
PLAYBOOK = """\
- name: Twenty tasks
  hosts: all
  gather_facts: false
  vars:
    base: /tmp/mage-bench-play/{{ inventory_hostname }}
  tasks:
    - name: Directory
      ansible.builtin.file:
        path: "{{ base }}"
        state: directory
        mode: "0755"
""" + "".join(f"""\
    - name: Copy {n}
      ansible.builtin.copy:
        content: "copy {n} {{{{ inventory_hostname }}}}\\n"
        dest: "{{{{ base }}}}/copy-{n}.txt"
        mode: "0644"
    - name: Template {n}
      ansible.builtin.template:
        src: "{{{{ playbook_dir }}}}/bench.j2"
        dest: "{{{{ base }}}}/template-{n}.txt"
        mode: "0644"
    - name: Command {n}
      ansible.builtin.command: cat {{{{ base }}}}/copy-{n}.txt
      changed_when: false
    - name: Stat {n}
      ansible.builtin.stat:
        path: "{{{{ base }}}}/template-{n}.txt"
""" for n in range(1, 5)) + """\
    - name: Copy 5
      ansible.builtin.copy:
        content: "copy 5\\n"
        dest: "{{ base }}/copy-5.txt"
        mode: "0644"
    - name: Template 5
      ansible.builtin.template:
        src: "{{ playbook_dir }}/bench.j2"
        dest: "{{ base }}/template-5.txt"
        mode: "0644"
    - name: Command 5
      ansible.builtin.command: cat {{ base }}/copy-5.txt
      changed_when: false
"""


class PlaybookCommand(PingCommand):
    """`ansible-playbook` of the 20-task playbook, same environment rules as the ping command."""

    def __init__(self, label: str, binary: Path, source: Path, config: Path, cwd: Path, playbook: Path,
                 extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None):
        super().__init__(label, binary, source, config, cwd, extra_args, extra_env)
        self.args = [str(binary), "-i", str(source), str(playbook), "--forks", str(FORKS), *extra_args]

    def check_hosts(self, hosts: list[str]) -> None:
        """Run once untimed; log (never stop on) hosts with a failed or unreachable task, since a
        baseline's own failures (community.general's `lxc exec` losing output) are part of the result."""
        log(f"{self.label}: {self.describe()}")
        self.failures = []
        bad = self.failed_tasks(self.run())
        log(f"{self.label}: warm-up: {bad} failed or unreachable tasks over {len(hosts)} hosts")

    def failed_tasks(self, result: subprocess.CompletedProcess) -> int:
        """Failed plus unreachable tasks in the recap (the failures are logged)."""
        self.report_stderr(result.stderr)
        recap = re.findall(r"^\S+\s+: ok=\d+ .*unreachable=(\d+)\s+failed=(\d+)", result.stdout, re.MULTILINE)
        for line in re.findall(r"^(?:fatal|failed): .*$", result.stdout, re.MULTILINE)[:3]:
            log(f"{self.label}: {line[:400]}")
        return sum(int(unreachable) + int(failed) for unreachable, failed in recap) if recap else -1

    def timed(self) -> float:
        started = time.perf_counter()
        result = self.run()
        elapsed = time.perf_counter() - started
        self.failures.append(self.failed_tasks(result))
        return elapsed


def write_playbook_commands(tmp: Path, commands: dict[str, PingCommand]) -> dict[str, PingCommand]:
    """The four playbook commands: the ping commands' inventories, configs and settings."""
    playbook = tmp / "twenty.yml"
    playbook.write_text(PLAYBOOK)
    (tmp / "bench.j2").write_text("host {{ inventory_hostname }}\n")
    return {key: PlaybookCommand(command.label, Path(command.args[0]).with_name("ansible-playbook"),
                                 Path(command.args[3]), Path(command.env["ANSIBLE_CONFIG"]), command.cwd, playbook,
                                 tuple(command.args[8:]),
                                 {k: v for k, v in command.env.items() if k == "ANSIBLE_PIPELINING"})
            for key, command in commands.items()}


def write_inventories(tmp: Path, count: int) -> None:
    """The static inventories for N hosts (community.general's and the local floor's), in `tmp`."""
    lines = ["[bench]", *container_names(BENCH, count), "",
             "[bench:vars]",
             f"ansible_connection={CG_PLUGIN}",
             # community.general.incus reads ansible_incus_*, its lxd plugin ansible_lxd_*.
             f"ansible_{'incus' if ON_INCUS else 'lxd'}_project={PROJECT}",
             f"ansible_{'incus' if ON_INCUS else 'lxd'}_remote=local",
             f"ansible_python_interpreter={CONTAINER_PYTHON}", ""]
    (tmp / "cg-hosts.ini").write_text("\n".join(lines))
    lines = ["[floor]", *local_names(count), "",
             "[floor:vars]",
             "ansible_connection=local",
             f"ansible_python_interpreter={OUR_BIN / 'python'}", ""]
    (tmp / "local-hosts.ini").write_text("\n".join(lines))


def local_names(count: int) -> list[str]:
    return [f"floor-{i:03d}" for i in range(1, count + 1)]


def write_commands(tmp: Path, cg_venv: Path) -> dict[str, PingCommand]:
    """The four ansible commands, their sources and configs in `tmp`."""
    ours = tmp / "mage_lxd.yml"
    ours.write_text(our_inventory(PROJECT))
    cg_config = tmp / "ansible-cg.cfg"
    cg_config.write_text("[defaults]\nretry_files_enabled = False\n\n[inventory]\nenable_plugins = ini\n")
    repo_config = REPO / "ansible.cfg"
    cg_ansible = cg_venv / "bin" / "ansible"
    return {
        "ours": PingCommand("ours (mage_lxd)", OUR_BIN / "ansible", ours, repo_config, REPO,
                            extra_args=("-e", f"ansible_python_interpreter={CONTAINER_PYTHON}")),
        "cg_pipe": PingCommand(f"{CG_PLUGIN}, pipelining", cg_ansible, tmp / "cg-hosts.ini", cg_config,
                               tmp, extra_env={"ANSIBLE_PIPELINING": "True"}, baseline=True),
        "cg_nopipe": PingCommand(f"{CG_PLUGIN}, no pipelining", cg_ansible, tmp / "cg-hosts.ini",
                                 cg_config, tmp, extra_env={"ANSIBLE_PIPELINING": "False"}, baseline=True),
        "local": PingCommand("local floor", OUR_BIN / "ansible", tmp / "local-hosts.ini", repo_config, REPO,
                             extra_env={"ANSIBLE_PIPELINING": "True"}),
    }


LABELS = {"ours": "ours", "cg_pipe": "cg pipelining", "cg_nopipe": "cg no-pipelining", "local": "local floor"}
HANGS: list[str] = []  # every hung run, for the report
PING_FAILURES: dict[int, dict[str, list[int]]] = {}  # hosts without SUCCESS per timed run, per N and command


def redo_if_hung(function):
    """function(), redone up to HUNG_RETRIES times when the ansible run hangs."""
    for attempt in range(HUNG_RETRIES + 1):
        try:
            return function()
        except Hung as error:
            HANGS.append(str(error))
            log(f"{error}{'; redoing the run' if attempt < HUNG_RETRIES else ''}")
    raise RuntimeError(f"ansible run hung {HUNG_RETRIES + 1} times in a row, giving up")


def measure(commands: dict[str, PingCommand], count: int) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Warm up and check every command, then time them in RUNS rounds of one run each.

    Rounds (ours, cg, cg, local, ours, ...) rather than 3 runs in a row per command, so a drift
    in the machine's load spreads over all commands instead of landing on one.
    """
    for key, command in commands.items():
        hosts = local_names(count) if key == "local" else container_names(BENCH, count)
        redo_if_hung(lambda: command.check_hosts(hosts))
    samples: dict[str, list[float]] = {key: [] for key in commands}
    for round_number in range(1, RUNS + 1):
        for key, command in commands.items():
            samples[key].append(redo_if_hung(command.timed))
        log(f"N={count} round {round_number}: "
            + ", ".join(f"{LABELS[key]} {samples[key][-1]:.3f} s" for key in commands))
    medians = {key: statistics.median(values) for key, values in samples.items()}
    for key, command in commands.items():
        log(f"N={count} {command.label}: {format_samples(samples[key])} (median {medians[key]:.3f} s)")
    return medians, samples


# --- report -------------------------------------------------------------------------------------


def print_report(results: dict[int, dict[str, float]], samples: dict[int, dict[str, list[float]]]) -> None:
    print(f"{bench_lab.SERVER}: `ansible all -m ansible.builtin.ping`, forks {FORKS}, median of {RUNS} runs "
          f"(seconds), against {CG_PLUGIN}")
    print()
    print("| N | ours s | cg pipelining s | cg no-pipelining s | local floor s | ours/cg-pipelining | ours/local |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for count, r in sorted(results.items()):
        print(f"| {count} | {r['ours']:.3f} | {r['cg_pipe']:.3f} | {r['cg_nopipe']:.3f} | {r['local']:.3f} "
              f"| {r['ours'] / r['cg_pipe']:.2f}x | {r['ours'] / r['local']:.2f}x |")
    print()
    for count, r in sorted(results.items()):
        ratio = r["ours"] / r["cg_pipe"]
        print(f"{'PASS' if ratio < TARGET_OURS_OVER_CG else 'FAIL'}: at N={count} ours takes {ratio:.2f}x "
              f"community.general with pipelining (target: faster, below 1x)")
        overhead = r["ours"] / r["local"]
        print(f"{'PASS' if overhead <= TARGET_OURS_OVER_FLOOR else 'FAIL'}: at N={count} ours takes "
              f"{overhead:.2f}x the local floor (target: at most {TARGET_OURS_OVER_FLOOR:g}x)")
    print()
    print("runs (s):")
    for count in sorted(samples):
        for key, label in LABELS.items():
            print(f"  N={count} {label}: {format_samples(samples[count][key])}")
    print("\nhosts without SUCCESS per timed run (a baseline's count in its figures; ours must be 0):")
    for count in sorted(PING_FAILURES):
        for key, label in LABELS.items():
            print(f"  N={count} {label}: {PING_FAILURES[count].get(key, [])}")
    if HANGS:
        print(f"\nhung runs (killed after {RUN_TIMEOUT} s and redone; not in the figures above):")
        for hang in HANGS:
            print(f"  {hang}")


def print_playbook_report(r: dict[str, float], samples: dict[str, list[float]]) -> None:
    """The 20-task playbook's medians and ratios (a report; no target of its own)."""
    print(f"\n20-task playbook (copy, template, command, stat) over {PLAYBOOK_HOSTS} hosts, forks {FORKS}, "
          f"median of {RUNS} runs (seconds)\n")
    print("| ours s | cg pipelining s | cg no-pipelining s | local floor s | ours/cg-pipelining | ours/local |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {r['ours']:.3f} | {r['cg_pipe']:.3f} | {r['cg_nopipe']:.3f} | {r['local']:.3f} "
          f"| {r['ours'] / r['cg_pipe']:.2f}x | {r['ours'] / r['local']:.2f}x |")
    for key, label in LABELS.items():
        print(f"  {label}: {format_samples(samples[key])}; failed or unreachable tasks per timed run: "
              f"{PLAYBOOK_FAILURES.get(key, [])}")


def main() -> int:
    options = bench_lab.parse_options(__doc__.split("\n\n")[0], [10, 30], PROJECT)
    bench_lab.exit_on_sigterm()
    started = time.perf_counter()
    cg_venv = bench_lab.cg_venv()
    api = bench_lab.lab_api()
    results, samples = {}, {}
    try:
        bench_lab.ensure_project(BENCH)
        with tempfile.TemporaryDirectory(prefix="mage-bench-conn-") as tmp:
            commands = write_commands(Path(tmp), cg_venv)
            playbooks = write_playbook_commands(Path(tmp), commands)
            for count in sorted(set(options.sizes) | {PLAYBOOK_HOSTS}):
                log(f"N={count}: preparing containers")
                prepare_containers(api, count)
                write_inventories(Path(tmp), count)
                if count in options.sizes:
                    results[count], samples[count] = measure(commands, count)
                    PING_FAILURES[count] = {key: list(command.failures) for key, command in commands.items()}
                if count == PLAYBOOK_HOSTS:
                    play_results, play_samples = measure(playbooks, count)
                    PLAYBOOK_FAILURES.update({key: command.failures for key, command in playbooks.items()})
    finally:
        bench_lab.finish(api, BENCH, options.keep)
    print_report(results, samples)
    print_playbook_report(play_results, play_samples)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
