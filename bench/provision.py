"""Provisioning benchmark: the mage_lxd_instance action against a parallel `lxc launch`.

For N busybox containers (20 by default), in the LXD project `mage-bench-prov`, each run measures:

- ours: `ansible-playbook` with one `mage_lxd_instance` task over the N entries (bootstrap off, wait
  for an IPv4 address on, `forks` = the parallelism below); the whole command, Ansible's own start-up
  included.
- baseline: the same N containers made with `lxc launch`, the same number at once, then polling the
  bridge's DHCP leases until every container has an address.

Every figure is the median of 3 runs; the containers are deleted (untimed) before each run. The
target is ours <= 1.3x the baseline; the script prints PASS/FAIL and exits 0 either way (a report,
not a test). Everything is deleted at the end.

    .venv/bin/python bench/provision.py             # N = 20, 10 at once
    .venv/bin/python bench/provision.py --count 40 --parallel 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_lab import BRIDGE  # the lab's bridge, from lab/lab.env

REPO = Path(__file__).resolve().parent.parent
PROJECT = "mage-bench-prov"
IMAGE = "mage/busybox"
RUNS = 3
TARGET = 1.3


def lxc(*args: str, check: bool = True) -> str:
    result = subprocess.run(["lxc", *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise SystemExit(f"lxc {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def names(count: int) -> list[str]:
    return [f"prov-{index:03d}" for index in range(count)]


def existing() -> list[str]:
    urls = json.loads(lxc("query", f"/1.0/instances?project={PROJECT}") or "[]")
    return [url.split("?")[0].rsplit("/", 1)[-1] for url in urls]


def delete_all(parallel: int) -> None:
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda name: lxc("delete", "--force", name, "--project", PROJECT), existing()))


def wait_for_leases(wanted: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        leases = json.loads(lxc("query", f"/1.0/networks/{BRIDGE}/leases?project={PROJECT}") or "[]")
        if set(wanted) <= {lease["hostname"] for lease in leases if lease.get("address")}:
            return
        time.sleep(0.05)
    raise SystemExit("baseline: not every container got an address within 120 s")


def baseline(count: int, parallel: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda name: lxc("launch", IMAGE, name, "--project", PROJECT), names(count)))
    wait_for_leases(names(count))
    return time.perf_counter() - start


def ours(count: int, parallel: int, workdir: Path) -> float:
    playbook = workdir / "provision.yml"
    entries = [{"name": name} for name in names(count)]
    playbook.write_text(json.dumps([{
        "name": "Provision", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Instances", "mage_lxd_instance": {
            "instances": entries, "project": PROJECT, "image": IMAGE, "image_server": "",
            "bootstrap": False, "forks": parallel}}],
    }]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    start = time.perf_counter()
    result = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             str(playbook)], capture_output=True, text=True, cwd=REPO, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"ours failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    if PROJECT not in lxc("project", "list", "--format", "csv"):
        lxc("project", "create", PROJECT, "-c", "features.images=false", "-c", "features.profiles=false")
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    try:
        with tempfile.TemporaryDirectory(prefix="mage-bench-prov-") as workdir:
            for run in range(RUNS):
                for label in ("baseline", "ours"):
                    delete_all(args.parallel)
                    elapsed = (baseline(args.count, args.parallel) if label == "baseline"
                               else ours(args.count, args.parallel, Path(workdir)))
                    times[label].append(elapsed)
                    print(f"run {run + 1} {label}: {elapsed:.2f} s", file=sys.stderr)
    finally:
        delete_all(args.parallel)
        lxc("project", "delete", PROJECT, check=False)
    mine, base = statistics.median(times["ours"]), statistics.median(times["baseline"])
    print("| N | parallel | ours s | lxc launch + leases s | ours/baseline |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {args.count} | {args.parallel} | {mine:.2f} | {base:.2f} | {mine / base:.2f}x |")
    print(f"{'PASS' if mine / base <= TARGET else 'FAIL'}: ours is {mine / base:.2f}x the baseline (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
