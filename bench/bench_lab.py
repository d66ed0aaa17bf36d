"""What the LXD benchmarks in bench/ share: the lab's settings, `lxc`, community.general's
virtualenv, and a bench project of numbered containers that grows, shrinks and is deleted.

A benchmark describes its project once, as a `BenchProject` (project name, container name prefix,
image, how many lxc commands at once, lxc's timeout), and passes it to the functions here. Every
lxc command and API request of these functions is scoped to that project; nothing outside it is
touched. Progress goes to stderr through `log`.

The scripts import it as `bench_lab`: run as `.venv/bin/python bench/NAME.py`, their own directory
is on sys.path.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "collection"))  # the checkout is mage.lxd

from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi  # noqa: E402
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CG_VENV = REPO / "bench" / ".venv-cg"
OUR_BIN = REPO / ".venv" / "bin"
SOCKET = "/var/lib/lxd/unix.socket"
LAUNCH_ATTEMPTS = 3  # rounds of lxc commands to bring the containers to the wanted state
ADDRESS_TIMEOUT = 300  # seconds to wait for every container's address

T = TypeVar("T")
R = TypeVar("R")


def log(message: str) -> None:
    """Print a progress line, `bench: MESSAGE`, to stderr."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def lab_env() -> dict[str, str]:
    """The lab's settings (pool, bridge, ...) from lab/lab.env."""
    values = {}
    for line in (REPO / "lab" / "lab.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


LAB = lab_env()
# The lab server measured: MAGE_BENCH_SERVER=incus runs a benchmark on the lab's Incus (lab/incus.sh)
# against community.general's incus plugins; otherwise on LXD against its lxd plugins.
SERVER = os.environ.get("MAGE_BENCH_SERVER", "lxd")
if SERVER not in ("lxd", "incus"):
    raise SystemExit(f"MAGE_BENCH_SERVER={SERVER!r}: use lxd or incus")
ON_INCUS = SERVER == "incus"
CLI = "incus" if ON_INCUS else "lxc"
SOCKET = LAB["MAGE_INCUS_SOCKET"] if ON_INCUS else SOCKET
BRIDGE = LAB["MAGE_INCUS_BRIDGE"] if ON_INCUS else LAB["MAGE_LAB_BRIDGE"]
# community.general's plugins for this server: the lxd ones shell out to lxc, the incus ones to incus.
CG_PLUGIN = "community.general.incus" if ON_INCUS else "community.general.lxd"


def bench_project_name(name: str) -> str:
    """The bench project on this server. LXD and Incus share the host's cgroup tree, where
    instances are named project_instance, so Incus's bench projects get names of their own."""
    return f"{name}-inc" if ON_INCUS else name


def our_inventory(project: str) -> str:
    """The mage_lxd inventory source for one bench project on this server, named as the repo's own
    inventory/mage_lxd.yml names the plugin (its FQCN: the first plugin ansible.cfg enables)."""
    return f"plugin: mage.lxd.mage_lxd\nremotes: [{{name: local, url: 'unix:{SOCKET}'}}]\nprojects: [{project}]\n"


def lxc(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `lxc ARGS` (`incus ARGS` on Incus), killed after `timeout` seconds (RuntimeError); with
    check, fail unless it exits 0."""
    try:
        result = subprocess.run([CLI, *args], capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{CLI} {' '.join(args)} gave no answer in {timeout} s (killed)") from None
    if check and result.returncode != 0:
        raise RuntimeError(f"{CLI} {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def try_lxc(args: tuple[str, ...], *, timeout: float) -> str | None:
    """Run lxc ARGS; return its error message, or None when it worked."""
    try:
        lxc(*args, timeout=timeout)
    except RuntimeError as error:
        return str(error)
    return None


def parallel(function: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """function(item) for every item, `workers` at a time; Ctrl-C cancels what has not begun."""
    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(function, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


# community.general's incus inventory came in 12.0.0, which PyPI ships only in `ansible` 13, and
# that needs Python >= 3.12 (Debian 12 has 3.11): the Incus benchmarks get a venv of their own.
CG_INCUS_VENV = REPO / "bench" / ".venv-cg-incus"
CG_INCUS_PYTHONS = ("python3.13", "python3.12")


def python_for_cg_incus() -> str | None:
    """A Python >= 3.12 on PATH or under pyenv (~/.pyenv/versions), or None."""
    import glob
    import shutil

    # pyenv's shims are on PATH for versions that are not selected, and then fail: skip them.
    found = [path for path in (shutil.which(name) for name in CG_INCUS_PYTHONS) if path and "/shims/" not in path]
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")), reverse=True)
    return next((path for path in found if path), None)


def ensure_cg_incus_venv() -> Path:
    """Create bench/.venv-cg-incus with PyPI's `ansible` 13.x (community.general 12.x, whose incus
    inventory and connection shell out to the incus binary), or reuse it; its directory."""
    python = CG_INCUS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import ansible_collections.community.general.plugins.inventory.incus"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        log(f"reusing {CG_INCUS_VENV.relative_to(REPO)}")
        return CG_INCUS_VENV
    base = python_for_cg_incus()
    if base is None:
        raise RuntimeError("community.general's incus inventory needs ansible 13 (Python >= 3.12); no python3.12 "
                           "or newer found on PATH or under ~/.pyenv. Fix: install one, then rerun.")
    log(f"creating {CG_INCUS_VENV.relative_to(REPO)} with {base} and ansible>=13,<14 (takes a few minutes)")
    subprocess.run([base, "-m", "venv", str(CG_INCUS_VENV)], check=True)
    subprocess.run([str(CG_INCUS_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "ansible>=13,<14"], check=True)
    subprocess.run(probe, check=True)
    (CG_INCUS_VENV / ".gitignore").write_text("*\n")
    return CG_INCUS_VENV


def cg_venv() -> Path:
    """community.general's virtualenv for this server's benchmarks, made when missing."""
    if ON_INCUS:
        return ensure_cg_incus_venv()
    ensure_cg_venv()
    return CG_VENV


# --- the LXD project and its containers ---------------------------------------------------------


@dataclass(frozen=True)
class BenchProject:
    """A benchmark's LXD project and how its containers are made."""

    project: str  # the LXD project; created with features.images=false and features.profiles=false
    prefix: str  # containers are named PREFIX-001, PREFIX-002, ...
    image: str  # what they are launched from (an alias in the default project)
    workers: int  # lxc commands run at once
    lxc_timeout: float  # seconds; an lxc command still waiting then is killed (and its work redone)


def container_name(bench: BenchProject, index: int) -> str:
    """The name of container number `index` (from 1): PREFIX-001, ..."""
    return f"{bench.prefix}-{index:03d}"


def container_names(bench: BenchProject, count: int) -> list[str]:
    """The names of containers 1..count."""
    return [container_name(bench, i) for i in range(1, count + 1)]


def ensure_project(bench: BenchProject) -> None:
    """Create the bench project, or reuse it when it exists."""
    if lxc("project", "show", bench.project, timeout=bench.lxc_timeout, check=False).returncode == 0:
        log(f"reusing LXD project {bench.project}")
        return
    log(f"creating LXD project {bench.project}")
    lxc("project", "create", bench.project, "-c", "features.images=false", "-c", "features.profiles=false",
        timeout=bench.lxc_timeout)


def lab_api() -> LxdApi:
    """A client of the lab server measured (SOCKET)."""
    return LxdApi(Remote(url=f"unix:{SOCKET}"))


def project_instances(api: LxdApi, bench: BenchProject) -> dict[str, str]:
    """{name: status} of every instance in the bench project."""
    found = api.get("instances", {"recursion": "1", "project": bench.project})
    return {item["name"]: item["status"] for item in found}


def pending_commands(api: LxdApi, bench: BenchProject, count: int) -> list[tuple[str, ...]]:
    """The lxc commands that make PREFIX-001..PREFIX-COUNT exist and run, and nothing else exist."""
    existing = project_instances(api, bench)
    wanted = set(container_names(bench, count))
    commands: list[tuple[str, ...]] = []
    for name in sorted(existing):
        if name not in wanted:
            commands.append(("delete", "--force", name, "--project", bench.project))
        elif existing[name] != "Running":
            commands.append(("start", name, "--project", bench.project))
    for name in container_names(bench, count):
        if name not in existing:
            commands.append(("launch", bench.image, name, "--project", bench.project))
    return commands


def run_all(bench: BenchProject, commands: list[tuple[str, ...]]) -> None:
    """Run the lxc commands, bench.workers at a time; log the error of each one that fails."""
    for error in filter(None, parallel(functools.partial(try_lxc, timeout=bench.lxc_timeout), commands,
                                       bench.workers)):
        log(error)


def ensure_containers(api: LxdApi, bench: BenchProject, count: int,
                      explain: Callable[[list[tuple[str, ...]]], str] | None = None) -> None:
    """Make PREFIX-001..PREFIX-COUNT exist, run and have an IPv4 lease; delete any other instance.

    An lxc command that fails or hangs is not fatal at once: the project is read again and what
    is still missing is redone, up to LAUNCH_ATTEMPTS rounds. When that is not enough, the error
    lists what is still to do, followed by explain(those commands) when given.
    """
    started = time.perf_counter()
    attempt = 0
    while commands := pending_commands(api, bench, count):
        attempt += 1
        if attempt > LAUNCH_ATTEMPTS:
            raise RuntimeError(f"after {LAUNCH_ATTEMPTS} rounds, still to do: "
                               + "; ".join(" ".join(command) for command in commands[:5])
                               + (explain(commands) if explain else ""))
        log(f"round {attempt}: {len(commands)} lxc commands (launch/start/delete)")
        run_all(bench, commands)
    log(f"{count} containers running ({time.perf_counter() - started:.1f} s)")
    wait_for_addresses(api, bench, set(container_names(bench, count)))


def wait_for_addresses(api: LxdApi, bench: BenchProject, wanted: set[str]) -> None:
    """Wait until every container has an IPv4 lease on the lab bridge."""
    started = time.perf_counter()
    deadline = time.monotonic() + ADDRESS_TIMEOUT
    while True:
        leases = api.get(f"networks/{BRIDGE}/leases", {"project": bench.project})
        waiting = wanted - {lease["hostname"] for lease in leases if ":" not in lease["address"]}
        if not waiting:
            log(f"all {len(wanted)} containers have their IPv4 lease ({time.perf_counter() - started:.1f} s)")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no IPv4 address after {ADDRESS_TIMEOUT} s for {len(waiting)} containers: "
                               f"{', '.join(sorted(waiting)[:10])}")
        time.sleep(1)


def delete_project(api: LxdApi, bench: BenchProject) -> None:
    """Delete every instance of the bench project, then the project; nothing when it does not exist."""
    if lxc("project", "show", bench.project, timeout=bench.lxc_timeout, check=False).returncode != 0:
        return
    names = list(project_instances(api, bench))
    log(f"deleting {len(names)} containers and the project {bench.project}")
    run_all(bench, [("delete", "--force", name, "--project", bench.project) for name in names])
    lxc("project", "delete", bench.project, timeout=bench.lxc_timeout)


def finish(api: LxdApi, bench: BenchProject, keep: bool) -> None:
    """At the end of a run: delete the bench project, or with --keep (`keep`) say it is left."""
    if keep:
        log(f"--keep: leaving the project {bench.project} and its containers")
    else:
        delete_project(api, bench)


# --- the command line and the figures -----------------------------------------------------------


def parse_options(description: str, default_sizes: list[int], project: str,
                  extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every size-based benchmark takes: --sizes N... (default `default_sizes`) and --keep,
    and the ones `extra` adds to the parser."""
    parser = argparse.ArgumentParser(description=description)
    if extra:
        extra(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=default_sizes, metavar="N",
                        help=f"numbers of containers to measure at (default: {' '.join(map(str, default_sizes))})")
    parser.add_argument("--keep", action="store_true", help=f"keep the {project} project and its containers")
    options = parser.parse_args()
    if any(size < 1 for size in options.sizes):
        parser.error("--sizes must be positive")
    return options


def exit_on_sigterm() -> None:
    """Make SIGTERM end the run like Ctrl-C does, through the callers' cleanup (exit status 143)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def median_of_runs(measure: Callable[[], float], runs: int) -> tuple[float, list[float]]:
    """measure() `runs` times in a row; the median and every sample."""
    samples = [measure() for _ in range(runs)]
    return statistics.median(samples), samples


def format_samples(samples: list[float]) -> str:
    """Samples in seconds as `0.123, 0.456 s`."""
    return ", ".join(f"{value:.3f}" for value in samples) + " s"
