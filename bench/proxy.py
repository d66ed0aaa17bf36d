"""Proxy benchmark: apply 500 routes over 50 containers through mageproxy.

Setup (untimed), in the LXD project `mage-bench-proxy`: 50 busybox containers, each declaring 10
routes (`c-NNN-K.bench.test`, path `/`, pass 8080) through the mage_lxd_instance action, plus the
mageproxy container (mage/debian-12).

Measured, each the median of 3 runs:
- full apply: `ansible-playbook playbooks/proxy.yml` after the sites file was removed, so it is
  rendered, journalled, tested with `nginx -t`, reloaded (waiting for nginx's new workers) and
  probed with a request (Ansible's own start-up included).
- no-change rerun: the same command again; nothing changes, nothing is reloaded, but every run still
  reads the record of what nginx loaded, checks that nginx runs and tests the whole config.
- startup floor: `ansible-playbook` of an empty play against the same inventory, which is what any
  playbook costs here before doing work.

Targets: a full apply of 500 routes under 3 s, and a no-change rerun under 1 s of plugin work (the
rerun minus the startup floor). PASS/FAIL lines; exit 0 either way. (The planning and rendering are
inside the playbook runs; an in-process copy of the filter's glue went stale and is gone.)

    .venv/bin/python bench/proxy.py          # add --keep to leave the project for another run
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = "mage-bench-proxy"
PROXY = "mage-bench-px"  # instance names are unique per bridge across projects
CONTAINERS = 50
ROUTES_EACH = 10
RUNS = 3
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}


def lxc(*args: str, check: bool = True) -> str:
    result = subprocess.run(["lxc", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise SystemExit(f"lxc {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def playbook(path: Path, inventory: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), str(path),
                             "-e", f"mageproxy_project={PROJECT}", "-e", f"mageproxy_name={PROXY}"], capture_output=True, text=True, env=ENV, cwd=REPO)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{path.name} failed:\n{result.stdout[-3000:]}")
    return elapsed


def routes_for(index: int) -> list[dict]:
    return [{"name": f"c-{index:03d}-{k}.bench.test", "path": "/", "pass": 8080} for k in range(ROUTES_EACH)]


def setup(workdir: Path) -> Path:
    if PROJECT not in lxc("project", "list", "--format", "csv"):
        lxc("project", "create", PROJECT, "-c", "features.images=false", "-c", "features.profiles=false")
    entries = [{"name": f"c-{index:03d}", "proxy": routes_for(index)} for index in range(CONTAINERS)]
    provision = workdir / "provision.yml"
    provision.write_text(json.dumps([{"name": "Setup", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Backends", "mage_lxd_instance": {"instances": entries, "project": PROJECT, "image": "mage/busybox",
                                                   "image_server": "", "bootstrap": False, "forks": 8}}]}]))
    inventory = workdir / "inventory"
    inventory.mkdir()
    (inventory / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    print("setup: creating 50 containers with 500 routes", file=sys.stderr)
    playbook(provision, inventory)
    return inventory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"full": [], "rerun": [], "floor": []}
    try:
        with tempfile.TemporaryDirectory(prefix="mage-bench-proxy-") as tmp:
            workdir = Path(tmp)
            inventory = setup(workdir)
            proxy = REPO / "playbooks" / "proxy.yml"
            playbook(proxy, inventory)
            empty = workdir / "empty.yml"
            empty.write_text(json.dumps([{"name": "Nothing", "hosts": PROXY, "gather_facts": False, "tasks": []}]))
            for run in range(RUNS):
                lxc("exec", PROXY, "--project", PROJECT, "--", "rm", "-f", "/etc/nginx/conf.d/mage-sites.conf")
                times["full"].append(playbook(proxy, inventory))
                times["rerun"].append(playbook(proxy, inventory))
                times["floor"].append(playbook(empty, inventory))
                print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr)
    finally:
        if not args.keep:
            for name in json.loads(lxc("query", f"/1.0/instances?project={PROJECT}", check=False) or "[]"):
                lxc("delete", "--force", name.split("?")[0].rsplit("/", 1)[-1], "--project", PROJECT, check=False)
            lxc("project", "delete", PROJECT, check=False)
    median = {key: statistics.median(values) for key, values in times.items()}
    print("| routes | containers | full apply s | no-change rerun s | ansible-playbook floor s |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {CONTAINERS * ROUTES_EACH} | {CONTAINERS} | {median['full']:.2f} | "
          f"{median['rerun']:.2f} | {median['floor']:.2f} |")
    plugin_rerun = median["rerun"] - median["floor"]
    print(f"{'PASS' if median['full'] < 3 else 'FAIL'}: full apply of 500 routes {median['full']:.2f} s (target < 3 s)")
    print(f"{'PASS' if plugin_rerun < 1 else 'FAIL'}: no-change rerun {plugin_rerun:.2f} s over the playbook floor "
          "(target < 1 s of plugin work)")


if __name__ == "__main__":
    main()
