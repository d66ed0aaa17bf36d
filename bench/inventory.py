"""Inventory benchmark: the mage_lxd inventory plugin against community.general.lxd.

What it measures, for each number N of running busybox containers (250 and 1000 by default):

- raw snapshot: the two API requests the mage_lxd plugin is built on, made from Python over the
  unix socket (GET /1.0/instances?recursion=1 and GET /1.0/networks/BRIDGE/leases), JSON decoding
  included. The floor for any plugin that reads LXD.
- ours: `.venv/bin/ansible-inventory -i mage_lxd.yml --list` (plugin mage_lxd), with the repo's
  ansible.cfg.
- bare startup: the same command on an empty inventory: what ansible-inventory costs by itself.
- static file: the same command on a YAML inventory file of the same hosts, groups and variables
  (each variable where ours puts it: on a group or on the host), written from ours'
  `--list --export` of this run: what Ansible costs for this inventory without any plugin.
- `--graph` of ours, of the bare start and of the static file (no variables are printed).
- peak RSS (the child's ru_maxrss, from wait4) of each `--list`, ours next to the static file's.
- community.general: `ansible-inventory -i lxd.yml --list` with community.general.lxd, run from a
  separate virtualenv (bench/.venv-cg, PyPI's `ansible` 12.x, which bundles community.general and
  uses ansible-core 2.19) and a minimal config of its own, so the repo's ansible.cfg plays no part.
  At one size only (--cg-size, default the smallest measured; 0 leaves it out): it takes minutes at
  1000.

Every figure is the median of 3 runs (wall clock, time.perf_counter around the request or the
subprocess; the CPU time of each ansible-inventory is printed too, as it varies less with the
machine's load). Ours, the bare start and the static file run in turns, one run of each per round.
Each ansible command runs once more, untimed, before its timed runs: ours' checks it lists all N
hosts, and every one warms the file cache.

Targets, checked at the largest N, printed as PASS/FAIL lines; the script exits 0 either way, it is
a report, not a test:
- ours is at least 5x faster than community.general (at --cg-size);
- ours' --list takes at most 1.5x (bare startup + raw snapshot), and its --graph at most 1.2x
  (bare --graph + raw snapshot);
- ours' peak RSS is at most 1.3x the static file's.

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

    .venv/bin/python bench/inventory.py                 # N = 250 and 1000, community.general at 250
    .venv/bin/python bench/inventory.py --sizes 20 100  # other sizes
    .venv/bin/python bench/inventory.py --sizes 1000 --cg-size 0   # 1000 only, no community.general
    .venv/bin/python bench/inventory.py --keep          # leave mage-bench and its containers
    MAGE_BENCH_SERVER=incus .venv/bin/python bench/inventory.py   # on Incus, against community.general.incus

Progress goes to stderr, the results table to stdout. The first run creates bench/.venv-cg
(a few minutes); later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import bench_lab
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
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
TARGET_GRAPH_OVER_FLOOR = 1.2
TARGET_RSS_OVER_STATIC = 1.3
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
    """One `ansible-inventory -i SOURCE --list` (or --graph) command line with its environment."""

    def __init__(self, label: str, binary: Path, source: Path, config: Path, cwd: Path, mode: str = "--list"):
        self.label = label
        self.args = [str(binary), "-i", str(source), mode]
        self.cwd = cwd
        self.env = {**os.environ, "ANSIBLE_CONFIG": str(config), "ANSIBLE_NOCOLOR": "1",
                    # A source that fails to parse must fail the command, not give an empty inventory.
                    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"}

    def graph(self) -> InventoryCommand:
        """The same command with --graph."""
        other = InventoryCommand(f"{self.label} --graph", Path(self.args[0]), Path(self.args[2]), Path(), self.cwd,
                                 "--graph")
        other.env = self.env
        return other

    def run(self, *extra: str, stdout=subprocess.DEVNULL) -> resource.struct_rusage:
        """Run it (with `extra` arguments) to its end; its resource usage (wait4: this child alone)."""
        with tempfile.TemporaryFile("w+") as errors:
            process = subprocess.Popen([*self.args, *extra], cwd=self.cwd, env=self.env, stdout=stdout,
                                       stderr=errors, text=True)
            try:
                _pid, status, usage = os.wait4(process.pid, 0)
            except BaseException:
                process.kill()
                raise
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                errors.seek(0)
                raise RuntimeError(f"{self.label}: {' '.join(self.args)} exited {process.returncode}:\n"
                                   f"{errors.read().strip()}")
        return usage

    def output(self, *extra: str) -> str:
        """Its standard output."""
        with tempfile.TemporaryFile("w+") as out:
            self.run(*extra, stdout=out)
            out.seek(0)
            return out.read()

    def timed(self) -> float:
        started = time.perf_counter()
        usage = self.run()
        elapsed = time.perf_counter() - started
        self.last_rss_mb = usage.ru_maxrss / 1024
        self.last_cpu = usage.ru_utime + usage.ru_stime
        return elapsed

    def check_hosts(self, count: int) -> dict:
        """Run once untimed; fail unless it lists exactly the N bench containers; the inventory."""
        inventory = json.loads(self.output())
        hostvars = inventory.get("_meta", {}).get("hostvars", {})
        hosts = {host for group, data in inventory.items() if group != "_meta"
                 for host in data.get("hosts", [])} | set(hostvars)
        expected = set(container_names(BENCH, count))
        if hosts != expected:
            raise RuntimeError(f"{self.label} listed {len(hosts)} hosts, expected {count}; "
                               f"missing {sorted(expected - hosts)[:5]}, unexpected {sorted(hosts - expected)[:5]}")
        with_address = sum(1 for host in hosts if hostvars.get(host, {}).get("ansible_host"))
        log(f"{self.label} lists {len(hosts)} hosts, {with_address} with ansible_host")
        return inventory


def plain(data):
    """ansible-inventory's output without its {"__ansible_unsafe": value} markers."""
    if isinstance(data, dict):
        if set(data) == {"__ansible_unsafe"}:
            return data["__ansible_unsafe"]
        return {key: plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [plain(item) for item in data]
    return data


def static_inventory(exported: dict) -> dict:
    """A YAML-plugin inventory of the groups, hosts and variables of `ansible-inventory --list
    --export` output: group variables on their groups, host variables on the first group listing
    the host."""
    exported = plain(exported)
    hostvars = exported.pop("_meta", {}).get("hostvars", {})
    groups: dict[str, dict] = {}
    placed: set[str] = set()
    for name, data in exported.items():
        group: dict = {}
        if data.get("hosts"):
            group["hosts"] = {}
            for host in data["hosts"]:
                group["hosts"][host] = None if host in placed else (hostvars.get(host) or None)
                placed.add(host)
        if data.get("vars"):
            group["vars"] = data["vars"]
        if data.get("children"):
            group["children"] = {child: None for child in data["children"]}
        groups[name] = group
    return groups


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
    """The inventory sources and configs of the ansible commands, in `tmp` (the static file is
    written by write_static once ours has run)."""
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
        "static": InventoryCommand("static file", OUR_BIN / "ansible-inventory", tmp / "static.yml", repo_config,
                                   REPO),
        "cg": InventoryCommand(CG_PLUGIN, cg_venv / "bin" / "ansible-inventory", cg, cg_config, tmp),
    }


def write_static(commands: dict[str, InventoryCommand], ours: dict) -> None:
    """The static file of what ours lists now; fail unless it lists the same host variables."""
    path = Path(commands["static"].args[2])
    # JSON is YAML: the yaml inventory plugin reads it (its name ends in .yml).
    path.write_text(json.dumps(static_inventory(json.loads(commands["ours"].output("--export")))))
    listed = json.loads(commands["static"].output())
    if plain(listed["_meta"]["hostvars"]) != plain(ours["_meta"]["hostvars"]):
        raise RuntimeError(f"the static file {path} does not give every host the variables ours gives it")


def measure(api: LxdApi, commands: dict[str, InventoryCommand], count: int, with_cg: bool) -> dict[str, float]:
    """Every figure at N=count. The commands of ours, the bare start and the static file take turns,
    one run each per round, so a change in the machine's load falls on all of them alike."""
    result = {}
    result["raw"], samples = bench_lab.median_of_runs(lambda: raw_snapshot(api, count), RUNS)
    log(f"N={count} raw snapshot: {format_samples(samples)}")
    ours = commands["ours"].check_hosts(count)
    write_static(commands, ours)
    turns = {}
    for key in ("ours", "bare", "static"):
        turns[key] = commands[key]
        turns[f"{key}_graph"] = commands[key].graph()
    for command in turns.values():
        command.run()  # warm-up
    samples = {key: [] for key in turns}
    for _ in range(RUNS):
        for key, command in turns.items():
            samples[key].append((command.timed(), command.last_rss_mb, command.last_cpu))
    for key, runs in samples.items():
        result[key] = statistics.median(wall for wall, _rss, _cpu in runs)
        result[f"{key}_rss"] = statistics.median(rss for _wall, rss, _cpu in runs)
        result[f"{key}_cpu"] = statistics.median(cpu for _wall, _rss, cpu in runs)
        log(f"N={count} {turns[key].label}: {format_samples([wall for wall, _r, _c in runs])}; "
            f"CPU {format_samples([cpu for _w, _r, cpu in runs])}; peak RSS "
            + ", ".join(f"{rss:.0f}" for _w, rss, _c in runs) + " MB")
    if with_cg:
        command = commands["cg"]
        command.check_hosts(count)
        result["cg"], runs = bench_lab.median_of_runs(command.timed, RUNS)
        log(f"N={count} {command.label}: {format_samples(runs)}")
    return result


# --- report -------------------------------------------------------------------------------------


def print_report(results: dict[int, dict[str, float]]) -> None:
    print(f"{bench_lab.SERVER}: ours against the bare start + the raw snapshot, a static file of the same "
          f"hosts and variables, and {CG_PLUGIN}\n")
    print("| N | raw snapshot s | bare --list s | ours --list s | static --list s | ours/(bare+raw) "
          "| ours/static | bare --graph s | ours --graph s | static --graph s | ours graph/(bare graph+raw) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, r in sorted(results.items()):
        print(f"| {count} | {r['raw']:.3f} | {r['bare']:.3f} | {r['ours']:.3f} | {r['static']:.3f} "
              f"| {r['ours'] / (r['bare'] + r['raw']):.2f}x | {r['ours'] / r['static']:.2f}x "
              f"| {r['bare_graph']:.3f} | {r['ours_graph']:.3f} | {r['static_graph']:.3f} "
              f"| {r['ours_graph'] / (r['bare_graph'] + r['raw']):.2f}x |")
    print("\n| N | peak RSS --list, ours MB | static file MB | bare start MB | ours/static "
          "| CPU --list, ours s | static s | bare s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, r in sorted(results.items()):
        print(f"| {count} | {r['ours_rss']:.0f} | {r['static_rss']:.0f} | {r['bare_rss']:.0f} "
              f"| {r['ours_rss'] / r['static_rss']:.2f}x | {r['ours_cpu']:.2f} | {r['static_cpu']:.2f} "
              f"| {r['bare_cpu']:.2f} |")
    with_cg = {count: r for count, r in results.items() if "cg" in r}
    if with_cg:
        print(f"\n| N | ours --list s | {CG_PLUGIN} s | cg/ours |")
        print("|---:|---:|---:|---:|")
        for count, r in sorted(with_cg.items()):
            print(f"| {count} | {r['ours']:.3f} | {r['cg']:.3f} | {r['cg'] / r['ours']:.1f}x |")
    print()
    for count, r in sorted(with_cg.items()):
        speedup = r["cg"] / r["ours"]
        print(f"{'PASS' if speedup >= TARGET_CG_OVER_OURS else 'FAIL'}: at N={count} ours is {speedup:.1f}x faster "
              f"than community.general (target: at least {TARGET_CG_OVER_OURS:g}x)")
    count = max(results)
    r = results[count]
    checks = (("--list", r["ours"] / (r["bare"] + r["raw"]), TARGET_OURS_OVER_FLOOR, "(bare startup + raw snapshot)"),
              ("--graph", r["ours_graph"] / (r["bare_graph"] + r["raw"]), TARGET_GRAPH_OVER_FLOOR,
               "(bare --graph + raw snapshot)"),
              ("peak RSS of --list", r["ours_rss"] / r["static_rss"], TARGET_RSS_OVER_STATIC, "the static file's"))
    for what, ratio, target, against in checks:
        print(f"{'PASS' if ratio <= target else 'FAIL'}: at N={count} ours' {what} is {ratio:.2f}x {against} "
              f"(target: at most {target:g}x)")


def main() -> int:
    options = bench_lab.parse_options(__doc__.split("\n\n")[0], [250, 1000], PROJECT, extra=add_options)
    sizes = sorted(set(options.sizes))
    cg_size = sizes[0] if options.cg_size is None else options.cg_size
    if cg_size and cg_size not in sizes:
        raise SystemExit(f"--cg-size {cg_size} is not one of --sizes {' '.join(map(str, sizes))}")
    bench_lab.exit_on_sigterm()
    started = time.perf_counter()
    cg_venv = bench_lab.cg_venv() if cg_size else Path("/nonexistent")
    api = bench_lab.lab_api()
    results = {}
    try:
        bench_lab.ensure_project(BENCH)
        with tempfile.TemporaryDirectory(prefix="mage-bench-") as tmp:
            commands = write_sources(Path(tmp), cg_venv)
            for count in sizes:
                log(f"N={count}: preparing containers")
                bench_lab.ensure_containers(api, BENCH, count)
                results[count] = measure(api, commands, count, with_cg=count == cg_size)
    finally:
        bench_lab.finish(api, BENCH, options.keep)
    print_report(results)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cg-size", type=int, default=None, metavar="N",
                        help="the one size community.general is measured at (default: the smallest; 0: none)")


if __name__ == "__main__":
    sys.exit(main())
