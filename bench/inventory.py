"""Inventory benchmark: the mage_lxd inventory plugin against community.general.lxd.

What it measures, for each number N of running busybox containers (50 and 250 by default):

- raw snapshot: the two API requests the mage_lxd plugin is built on, made from Python over the
  unix socket (GET /1.0/instances?recursion=1 and GET /1.0/networks/BRIDGE/leases), JSON decoding
  included. The floor for any plugin that reads LXD.
- ours: `.venv/bin/ansible-inventory -i mage_lxd.yml --list` (plugin mage_lxd), with the repo's
  ansible.cfg.
- bare startup: the same command on an empty inventory: what ansible-inventory costs by itself.
- community.general: `ansible-inventory -i lxd.yml --list` with community.general.lxd, run from a
  separate virtualenv (bench/.venv-cg, PyPI's `ansible` 12.x, which bundles community.general and
  uses ansible-core 2.19) and a minimal config of its own, so the repo's ansible.cfg plays no part.

Every figure is the median wall-clock time of 3 runs (time.perf_counter around the request or the
subprocess). Each ansible command runs once more, untimed, before its timed runs: that run checks
it lists all N hosts and warms the file cache.

Targets, checked at the largest N (250 by default), printed as PASS/FAIL lines; the script exits 0
either way, it is a report, not a test:
- ours is at least 5x faster than community.general;
- ours takes at most 1.5x (bare startup + raw snapshot).

Setup. Everything happens in the LXD project `mage-bench` (created with features.images=false and
features.profiles=false, so it uses the default project's images and default profile: root disk on
the lab pool, eth0 on the lab bridge). Containers are named bench-001, bench-002, ...; the set grows
from one size to the next instead of being recreated, and each size is measured once every
container has its DHCP lease. At the end the containers and the project are deleted (also after an
error, Ctrl-C or SIGTERM) unless --keep is given; a kept project is reused by the next run.
Nothing outside the project is touched.

On Incus (MAGE_BENCH_SERVER=incus): the lab's Incus (lab/incus.sh), the project mage-bench-inc, and
community.general.incus (which runs the `incus` binary) from bench/.venv-cg-incus: PyPI's `ansible`
13.x, the first with community.general 12 (its incus inventory), which needs Python >= 3.12 (found
on PATH or under ~/.pyenv). Ours and theirs read the same Incus in the same run.

Run it as root, from anywhere, with the project's venv and the lab up (lab/up.sh):

    .venv/bin/python bench/inventory.py                 # N = 50 and 250
    .venv/bin/python bench/inventory.py --sizes 20 100  # other sizes
    .venv/bin/python bench/inventory.py --keep          # leave mage-bench and its containers
    MAGE_BENCH_SERVER=incus .venv/bin/python bench/inventory.py   # on Incus, against community.general.incus

Progress goes to stderr, the results table to stdout. The first run creates bench/.venv-cg
(a few minutes); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import bench_lab
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import LxdApi
from bench_lab import (BRIDGE, CG_PLUGIN, ON_INCUS, OUR_BIN, REPO, SOCKET, container_names, format_samples, log,
                       our_inventory)

PROJECT = bench_lab.bench_project_name("mage-bench")
IMAGE = "mage/busybox"
RUNS = 3
LAUNCH_WORKERS = 8
LXC_TIMEOUT = 120  # seconds; an lxc command still waiting then is killed (and its work redone)
INVENTORY_TIMEOUT = 900  # seconds for one ansible-inventory run
TARGET_CG_OVER_OURS = 5.0
TARGET_OURS_OVER_FLOOR = 1.5
BENCH = bench_lab.BenchProject(project=PROJECT, prefix="bench", image=IMAGE, workers=LAUNCH_WORKERS,
                               lxc_timeout=LXC_TIMEOUT)


# --- measurements -------------------------------------------------------------------------------


def raw_snapshot(api: LxdApi, count: int) -> float:
    """Seconds for the instances (recursion=1) and leases requests, JSON decoding included."""
    started = time.perf_counter()
    instances = api.get("instances", {"recursion": "1", "project": PROJECT})
    api.get(f"networks/{BRIDGE}/leases", {"project": PROJECT})
    elapsed = time.perf_counter() - started
    if len(instances) != count:
        raise RuntimeError(f"raw snapshot read {len(instances)} instances, expected {count}")
    return elapsed


class InventoryCommand:
    """One `ansible-inventory -i SOURCE --list` command line with its environment."""

    def __init__(self, label: str, binary: Path, source: Path, config: Path, cwd: Path):
        self.label = label
        self.args = [str(binary), "-i", str(source), "--list"]
        self.cwd = cwd
        self.env = {**os.environ, "ANSIBLE_CONFIG": str(config), "ANSIBLE_NOCOLOR": "1",
                    # A source that fails to parse must fail the command, not give an empty inventory.
                    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"}

    def run(self, stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess:
        result = subprocess.run(self.args, cwd=self.cwd, env=self.env, stdout=stdout,
                                stderr=subprocess.PIPE, text=True, check=False, timeout=INVENTORY_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{self.label}: {' '.join(self.args)} exited {result.returncode}:\n"
                               f"{result.stderr.strip()}")
        return result

    def timed(self) -> float:
        started = time.perf_counter()
        self.run()
        return time.perf_counter() - started

    def check_hosts(self, count: int) -> None:
        """Run once untimed; fail unless it lists exactly the N bench containers."""
        inventory = json.loads(self.run(stdout=subprocess.PIPE).stdout)
        hostvars = inventory.get("_meta", {}).get("hostvars", {})
        hosts = {host for group, data in inventory.items() if group != "_meta"
                 for host in data.get("hosts", [])} | set(hostvars)
        expected = set(container_names(BENCH, count))
        if hosts != expected:
            raise RuntimeError(f"{self.label} listed {len(hosts)} hosts, expected {count}; "
                               f"missing {sorted(expected - hosts)[:5]}, unexpected {sorted(hosts - expected)[:5]}")
        with_address = sum(1 for host in hosts if hostvars.get(host, {}).get("ansible_host"))
        log(f"{self.label} lists {len(hosts)} hosts, {with_address} with ansible_host")


def cg_source(tmp: Path) -> Path:
    """community.general's inventory source for the bench project on this server."""
    if ON_INCUS:
        # Its file name must end in incus.yml; host_fqdn false names hosts as ours does.
        cg = tmp / "incus.yml"
        cg.write_text(f"plugin: {CG_PLUGIN}\nremotes: ['local:{PROJECT}']\nhost_fqdn: false\n")
        return cg
    cg = tmp / "lxd.yml"
    # `state` is left out: its default (none) keeps every state; `ALL` is not one of its choices.
    cg.write_text(f"plugin: {CG_PLUGIN}\nurl: unix:{SOCKET}\nproject: {PROJECT}\n")
    return cg


def write_sources(tmp: Path, cg_venv: Path) -> dict[str, InventoryCommand]:
    """The inventory sources and configs of the three ansible commands, in `tmp`."""
    ours = tmp / "mage_lxd.yml"
    ours.write_text(our_inventory(PROJECT))
    empty = tmp / "empty.yml"
    empty.write_text("all: {}\n")
    cg = cg_source(tmp)
    cg_config = tmp / "ansible-cg.cfg"
    cg_config.write_text(f"[inventory]\nenable_plugins = {CG_PLUGIN}\n")
    repo_config = REPO / "ansible.cfg"
    return {
        "ours": InventoryCommand("ours (mage_lxd)", OUR_BIN / "ansible-inventory", ours, repo_config, REPO),
        "bare": InventoryCommand("bare startup", OUR_BIN / "ansible-inventory", empty, repo_config, REPO),
        "cg": InventoryCommand(CG_PLUGIN, cg_venv / "bin" / "ansible-inventory", cg, cg_config, tmp),
    }


def measure(api: LxdApi, commands: dict[str, InventoryCommand], count: int) -> dict[str, float]:
    result = {}
    result["raw"], samples = bench_lab.median_of_runs(lambda: raw_snapshot(api, count), RUNS)
    log(f"N={count} raw snapshot: {format_samples(samples)}")
    for key in ("ours", "bare", "cg"):
        command = commands[key]
        if key != "bare":
            command.check_hosts(count)
        else:
            command.run()  # warm-up, like the others
        result[key], samples = bench_lab.median_of_runs(command.timed, RUNS)
        log(f"N={count} {command.label}: {format_samples(samples)}")
    return result


# --- report -------------------------------------------------------------------------------------


def print_report(results: dict[int, dict[str, float]]) -> None:
    print(f"{bench_lab.SERVER}: ours against {CG_PLUGIN}\n")
    print("| N | raw snapshot s | ours s | bare startup s | community.general s | cg/ours | ours/(bare+raw) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for count, r in sorted(results.items()):
        print(f"| {count} | {r['raw']:.3f} | {r['ours']:.3f} | {r['bare']:.3f} | {r['cg']:.3f} "
              f"| {r['cg'] / r['ours']:.1f}x | {r['ours'] / (r['bare'] + r['raw']):.2f}x |")
    count = max(results)
    r = results[count]
    speedup = r["cg"] / r["ours"]
    overhead = r["ours"] / (r["bare"] + r["raw"])
    print()
    print(f"{'PASS' if speedup >= TARGET_CG_OVER_OURS else 'FAIL'}: at N={count} ours is {speedup:.1f}x faster "
          f"than community.general (target: at least {TARGET_CG_OVER_OURS:g}x)")
    print(f"{'PASS' if overhead <= TARGET_OURS_OVER_FLOOR else 'FAIL'}: at N={count} ours takes {overhead:.2f}x "
          f"(bare startup + raw snapshot) (target: at most {TARGET_OURS_OVER_FLOOR:g}x)")


def main() -> int:
    options = bench_lab.parse_options(__doc__.split("\n\n")[0], [50, 250], PROJECT)
    bench_lab.exit_on_sigterm()
    started = time.perf_counter()
    cg_venv = bench_lab.cg_venv()
    api = bench_lab.lab_api()
    results = {}
    try:
        bench_lab.ensure_project(BENCH)
        with tempfile.TemporaryDirectory(prefix="mage-bench-") as tmp:
            commands = write_sources(Path(tmp), cg_venv)
            for count in sorted(set(options.sizes)):
                log(f"N={count}: preparing containers")
                bench_lab.ensure_containers(api, BENCH, count)
                results[count] = measure(api, commands, count)
    finally:
        bench_lab.finish(api, BENCH, options.keep)
    print_report(results)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
