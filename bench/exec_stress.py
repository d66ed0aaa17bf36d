"""Exec stress benchmark: how often does the mage_lxd exec path fail under concurrency, and how long
does one short exec take?

Two measurements, both against the lab's real LXD (its Incus with MAGE_TEST_SERVER=incus), in the
project `mage-bench-conn-stress` (containers stress-1 .. stress-5, image mage/debian-12, created
when missing, deleted at the end unless --keep):

- threads: `InstanceChannel.exec` called directly from --threads threads (5), --execs in all
  (2000), spread over the containers. Half the commands read a small stdin (`cat`), half ignore it
  (`true` with a stdin payload: the case where LXD closes the stdin stream first). Reports the
  failures (by exception type and message) and the per-exec latency (median, p95).
- ansible: one ansible-playbook run, forks 5, over the 5 containers, mixing pipelined modules
  (command), raw and file transfers (copy of a small file, fetch), about --ansible-execs execs in
  all (5000). Reports the failed/unreachable task count from the recap and the wall time.

It is a report, not a test: it exits 0 unless the setup itself fails. Smaller versions are in
tests/integration/test_connection.py (a thousand direct execs from five threads; a play under five
forks).

    .venv/bin/python bench/exec_stress.py                    # both
    .venv/bin/python bench/exec_stress.py --only threads --execs 1600 --threads 4
    MAGE_TEST_SERVER=incus .venv/bin/python bench/exec_stress.py   # the same on the lab's Incus
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from lxd_lab import (ansible, create_project, delete_project, exec_stress_playbook, lab_remote, launch, lxc,  # noqa: E402
                     recap, wait_for_leases)

from ansible_collections.mage.lxd.plugins.plugin_utils.channel import InstanceChannel  # noqa: E402

PROJECT = "mage-bench-conn-stress"
HOSTS = [f"stress-{index}" for index in range(1, 6)]
# Execs one round of the stress playbook's loops costs per host with pipelining on (counted with
# -vvv over one round); only used to choose the number of rounds, the report counts the real ones.
EXECS_PER_ROUND = 8


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"stress: {message}", file=sys.stderr, flush=True)


def ensure_containers() -> None:
    """The project and its five containers, running, with a lease (reused when --keep left them)."""
    if lxc("project", "show", PROJECT, check=False).returncode != 0:
        create_project(PROJECT)
    present = lxc("list", "--project", PROJECT, "-c", "n", "-f", "csv").stdout.split()
    for name in HOSTS:
        if name not in present:
            launch(PROJECT, name, image="mage/debian-12")
    lxc("start", *HOSTS, "--project", PROJECT, check=False)
    wait_for_leases(PROJECT, HOSTS, timeout=120)


def one_exec(channel: InstanceChannel, index: int) -> None:
    """A short command; odd ones leave their stdin unread, so LXD closes it while we send."""
    if index % 2:
        code, out, _ = channel.exec(["true"], stdin=b"x" * 4096)
        assert code == 0, code
    else:
        code, out, _ = channel.exec(["cat"], stdin=b"hello %d" % index)
        assert (code, out) == (0, b"hello %d" % index), (code, out)


def run_threads(execs: int, threads: int) -> None:
    """Direct channel execs from `threads` threads; print failures and latency."""
    failures: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(execs))

    def worker(number: int) -> None:
        channel = InstanceChannel.connect(lab_remote(), PROJECT, HOSTS[number % len(HOSTS)])
        for index in counter:
            started = time.perf_counter()
            try:
                one_exec(channel, index)
            except BaseException as exc:  # every failure counts, whatever its type
                with lock:
                    failures[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(number,)) for number in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    print(f"threads: {execs} execs from {threads} threads in {wall:.1f} s: {sum(failures.values())} failures; "
          f"latency median {1000 * statistics.median(latencies):.1f} ms, "
          f"p95 {1000 * latencies[int(0.95 * len(latencies))]:.1f} ms")
    for message, count in failures.most_common():
        print(f"  {count} x {message}")


def write_inventory(workdir: Path, pipelining: bool = True) -> Path:
    """A static inventory of the five hosts through mage_lxd, named by ansible_host."""
    inventory = workdir / "hosts.ini"
    lines = ["[stress]"] + [f"s{name} ansible_host={name}" for name in HOSTS]
    lines += ["[stress:vars]", "ansible_connection=mage_lxd", f"ansible_mage_lxd_project={PROJECT}",
              "ansible_python_interpreter=/usr/bin/python3", f"ansible_pipelining={pipelining}"]
    inventory.write_text("\n".join(lines) + "\n")
    return inventory


def run_ansible(execs: int) -> None:
    """One stress playbook run; print failed/unreachable counts and the wall time."""
    rounds = max(1, execs // (EXECS_PER_ROUND * len(HOSTS)))
    with tempfile.TemporaryDirectory(prefix="mage-stress-") as tmp:
        workdir = Path(tmp)
        playbook = exec_stress_playbook(workdir, "stress", commands=rounds, transfers=rounds)
        started = time.perf_counter()
        # -vvv makes the connection log every exec and file transfer, which are counted below.
        result = ansible("ansible-playbook", "-i", str(write_inventory(workdir)), str(playbook), "--forks", "5",
                         "-vvv", check=False)
        wall = time.perf_counter() - started
    counts = recap(result.stdout)
    failed = sum(host.get("failed", 0) + host.get("unreachable", 0) for host in counts.values())
    execs = result.stdout.count("mage_lxd: exec in ")
    transfers = result.stdout.count("mage_lxd: put ") + result.stdout.count("mage_lxd: fetch ")
    print(f"ansible: {execs} execs and {transfers} file transfers ({rounds} rounds over {len(HOSTS)} hosts, "
          f"forks 5) in {wall:.1f} s: {failed} failed/unreachable tasks, exit {result.returncode}")
    if failed or result.returncode:
        print("\n".join(line for line in result.stdout.splitlines() if "FAILED" in line or "UNREACHABLE" in line))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("threads", "ansible"))
    parser.add_argument("--execs", type=int, default=2000, help="direct execs (threads)")
    parser.add_argument("--threads", type=int, default=5)
    parser.add_argument("--ansible-execs", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the project and containers")
    args = parser.parse_args()
    os.chdir(REPO)
    ensure_containers()
    try:
        if args.only in (None, "threads"):
            run_threads(args.execs, args.threads)
        if args.only in (None, "ansible"):
            run_ansible(args.ansible_execs)
    finally:
        if not args.keep:
            delete_project(PROJECT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
