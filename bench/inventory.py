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

Run it as root, from anywhere, with the project's venv and the lab up (lab/up.sh):

    .venv/bin/python bench/inventory.py                 # N = 50 and 250
    .venv/bin/python bench/inventory.py --sizes 20 100  # other sizes
    .venv/bin/python bench/inventory.py --keep          # leave mage-bench and its containers

Progress goes to stderr, the results table to stdout. The first run creates bench/.venv-cg
(a few minutes); later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pylxd

REPO = Path(__file__).resolve().parent.parent
CG_VENV = REPO / "bench" / ".venv-cg"
OUR_BIN = REPO / ".venv" / "bin"
SOCKET = "/var/lib/lxd/unix.socket"
PROJECT = "mage-bench"
IMAGE = "mage/busybox"
RUNS = 3
LAUNCH_WORKERS = 8
LAUNCH_ATTEMPTS = 3  # rounds of lxc commands to bring the containers to the wanted state
LXC_TIMEOUT = 120  # seconds; an lxc command still waiting then is killed (and its work redone)
INVENTORY_TIMEOUT = 900  # seconds for one ansible-inventory run
ADDRESS_TIMEOUT = 300  # seconds to wait for every container's address
TARGET_CG_OVER_OURS = 5.0
TARGET_OURS_OVER_FLOOR = 1.5


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def lab_env() -> dict[str, str]:
    """The lab's settings (pool, bridge, ...) from lab/lab.env."""
    values = {}
    for line in (REPO / "lab" / "lab.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


LAB = lab_env()
BRIDGE = LAB["MAGE_LAB_BRIDGE"]


def lxc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["lxc", *args], capture_output=True, text=True, check=False, timeout=LXC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"lxc {' '.join(args)} gave no answer in {LXC_TIMEOUT} s (killed)") from None
    if check and result.returncode != 0:
        raise RuntimeError(f"lxc {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def try_lxc(args: tuple[str, ...]) -> str | None:
    """Run lxc ARGS; return its error message, or None when it worked."""
    try:
        lxc(*args)
    except RuntimeError as error:
        return str(error)
    return None


# --- community.general's virtualenv -------------------------------------------------------------


def ensure_cg_venv() -> None:
    """Create bench/.venv-cg with PyPI's `ansible` 12.x, or reuse it when it already works."""
    python = CG_VENV / "bin" / "python"
    probe = [str(python), "-c", "import ansible_collections.community.general"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        log(f"reusing {CG_VENV.relative_to(REPO)}")
    else:
        log(f"creating {CG_VENV.relative_to(REPO)} with ansible>=12,<13 (takes a few minutes)")
        subprocess.run(["python3", "-m", "venv", str(CG_VENV)], check=True)
        subprocess.run([str(CG_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        "ansible>=12,<13"], check=True)
        subprocess.run(probe, check=True)
    # Keep the venv out of git without touching the repo's .gitignore (Python 3.13's venv does this).
    (CG_VENV / ".gitignore").write_text("*\n")


# --- the LXD project and its containers ---------------------------------------------------------


def container_name(index: int) -> str:
    return f"bench-{index:03d}"


def ensure_project() -> None:
    if lxc("project", "show", PROJECT, check=False).returncode == 0:
        log(f"reusing LXD project {PROJECT}")
        return
    log(f"creating LXD project {PROJECT}")
    lxc("project", "create", PROJECT, "-c", "features.images=false", "-c", "features.profiles=false")


def project_instances(client: pylxd.Client) -> dict[str, str]:
    """{name: status} of every instance in the bench project."""
    found = client.api.instances.get(params={"recursion": "1", "project": PROJECT}).json()["metadata"]
    return {item["name"]: item["status"] for item in found}


def pending_commands(client: pylxd.Client, count: int) -> list[tuple[str, ...]]:
    """The lxc commands that make bench-001..bench-COUNT exist and run, and nothing else exist."""
    existing = project_instances(client)
    wanted = {container_name(i) for i in range(1, count + 1)}
    commands = []
    for name in sorted(existing):
        if name not in wanted:
            commands.append(("delete", "--force", name, "--project", PROJECT))
        elif existing[name] != "Running":
            commands.append(("start", name, "--project", PROJECT))
    for index in range(1, count + 1):
        if container_name(index) not in existing:
            commands.append(("launch", IMAGE, container_name(index), "--project", PROJECT))
    return commands


def ensure_containers(client: pylxd.Client, count: int) -> None:
    """Make bench-001..bench-COUNT exist, run and have an IPv4 lease; delete any other instance.

    An lxc command that fails or hangs is not fatal at once: the project is read again and what
    is still missing is redone, up to LAUNCH_ATTEMPTS rounds.
    """
    started = time.perf_counter()
    attempt = 0
    while commands := pending_commands(client, count):
        attempt += 1
        if attempt > LAUNCH_ATTEMPTS:
            raise RuntimeError(f"after {LAUNCH_ATTEMPTS} rounds, still to do: "
                               + "; ".join(" ".join(command) for command in commands[:5]))
        log(f"round {attempt}: {len(commands)} lxc commands (launch/start/delete)")
        for error in filter(None, parallel(try_lxc, commands)):
            log(error)
    log(f"{count} containers running ({time.perf_counter() - started:.1f} s)")
    wait_for_addresses(client, {container_name(i) for i in range(1, count + 1)})


def wait_for_addresses(client: pylxd.Client, wanted: set[str]) -> None:
    """Wait until every container has an IPv4 lease on the lab bridge."""
    started = time.perf_counter()
    deadline = time.monotonic() + ADDRESS_TIMEOUT
    while True:
        leases = client.api.networks[BRIDGE].leases.get(params={"project": PROJECT}).json()["metadata"]
        waiting = wanted - {lease["hostname"] for lease in leases if ":" not in lease["address"]}
        if not waiting:
            log(f"all {len(wanted)} containers have their IPv4 lease ({time.perf_counter() - started:.1f} s)")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no IPv4 address after {ADDRESS_TIMEOUT} s for {len(waiting)} containers: "
                               f"{', '.join(sorted(waiting)[:10])}")
        time.sleep(1)


def parallel(function, items) -> list:
    """function(item) for every item, LAUNCH_WORKERS at a time; Ctrl-C cancels what has not begun."""
    pool = ThreadPoolExecutor(LAUNCH_WORKERS)
    try:
        return list(pool.map(function, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def delete_project(client: pylxd.Client) -> None:
    if lxc("project", "show", PROJECT, check=False).returncode != 0:
        return
    names = list(project_instances(client))
    log(f"deleting {len(names)} containers and the project {PROJECT}")
    for error in filter(None, parallel(try_lxc, [("delete", "--force", name, "--project", PROJECT) for name in names])):
        log(error)
    lxc("project", "delete", PROJECT)


# --- measurements -------------------------------------------------------------------------------


def median_of_runs(measure) -> tuple[float, list[float]]:
    samples = [measure() for _ in range(RUNS)]
    return statistics.median(samples), samples


def raw_snapshot(client: pylxd.Client, count: int) -> float:
    """Seconds for the instances (recursion=1) and leases requests, JSON decoding included."""
    started = time.perf_counter()
    instances = client.api.instances.get(params={"recursion": "1", "project": PROJECT}).json()["metadata"]
    client.api.networks[BRIDGE].leases.get(params={"project": PROJECT}).json()
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
        expected = {container_name(i) for i in range(1, count + 1)}
        if hosts != expected:
            raise RuntimeError(f"{self.label} listed {len(hosts)} hosts, expected {count}; "
                               f"missing {sorted(expected - hosts)[:5]}, unexpected {sorted(hosts - expected)[:5]}")
        with_address = sum(1 for host in hosts if hostvars.get(host, {}).get("ansible_host"))
        log(f"{self.label} lists {len(hosts)} hosts, {with_address} with ansible_host")


def write_sources(tmp: Path) -> dict[str, InventoryCommand]:
    """The inventory sources and configs of the three ansible commands, in `tmp`."""
    ours = tmp / "mage_lxd.yml"
    ours.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    empty = tmp / "empty.yml"
    empty.write_text("all: {}\n")
    cg = tmp / "lxd.yml"
    # `state` is left out: its default (none) keeps every state; `ALL` is not one of its choices.
    cg.write_text(f"plugin: community.general.lxd\nurl: unix:{SOCKET}\nproject: {PROJECT}\n")
    cg_config = tmp / "ansible-cg.cfg"
    cg_config.write_text("[inventory]\nenable_plugins = community.general.lxd\n")
    repo_config = REPO / "ansible.cfg"
    return {
        "ours": InventoryCommand("ours (mage_lxd)", OUR_BIN / "ansible-inventory", ours, repo_config, REPO),
        "bare": InventoryCommand("bare startup", OUR_BIN / "ansible-inventory", empty, repo_config, REPO),
        "cg": InventoryCommand("community.general.lxd", CG_VENV / "bin" / "ansible-inventory", cg, cg_config, tmp),
    }


def measure(client: pylxd.Client, commands: dict[str, InventoryCommand], count: int) -> dict[str, float]:
    result = {}
    result["raw"], samples = median_of_runs(lambda: raw_snapshot(client, count))
    log(f"N={count} raw snapshot: {format_samples(samples)}")
    for key in ("ours", "bare", "cg"):
        command = commands[key]
        if key != "bare":
            command.check_hosts(count)
        else:
            command.run()  # warm-up, like the others
        result[key], samples = median_of_runs(command.timed)
        log(f"N={count} {command.label}: {format_samples(samples)}")
    return result


def format_samples(samples: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in samples) + " s"


# --- report -------------------------------------------------------------------------------------


def print_report(results: dict[int, dict[str, float]]) -> None:
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 250], metavar="N",
                        help="numbers of containers to measure at (default: 50 250)")
    parser.add_argument("--keep", action="store_true", help="keep the mage-bench project and its containers")
    options = parser.parse_args()
    if any(size < 1 for size in options.sizes):
        parser.error("--sizes must be positive")

    # SIGTERM ends the run like Ctrl-C does, through the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    ensure_cg_venv()
    client = pylxd.Client(endpoint=SOCKET)
    results = {}
    try:
        ensure_project()
        with tempfile.TemporaryDirectory(prefix="mage-bench-") as tmp:
            commands = write_sources(Path(tmp))
            for count in sorted(set(options.sizes)):
                log(f"N={count}: preparing containers")
                ensure_containers(client, count)
                results[count] = measure(client, commands, count)
    finally:
        if options.keep:
            log(f"--keep: leaving the project {PROJECT} and its containers")
        else:
            delete_project(client)
    print_report(results)
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
