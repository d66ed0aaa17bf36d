"""site.yml against the playbook the original role used, on the same declarations.

For N Debian containers (20 and 50 by default), each declaring one web route, measures:

- ours: `ansible-playbook playbooks/site.yml` in a project that does not exist yet (it is created),
  instances converged side by side, python checked, routes recorded and published through mageproxy;
  then the same command again, with nothing to change.
- seed: what mage.lxd-provisioning did, one instance after another: community.general's
  `lxd_container` (waiting for IPv4), `add_host`, a `raw` python check (install when missing, through
  community.general's `lxd` connection), and `lineinfile` of the instance into a hosts file; then the
  same playbook again. Its project is created beforehand (untimed): lxd_container cannot create one.

Both sides use the lab's local image `mage/debian-12` (it has python, so neither installs it: the
bridge has no way out). community.general comes from PyPI's `ansible` 12.x in bench/.venv-cg. Every
figure is one run of the whole command, Ansible's start-up included; the ratios compare runs of the
same moment on the same machine. Prints a table; a report, not a test. Everything is deleted at the end.

    .venv/bin/python bench/site.py                  # N = 20 and 50
    .venv/bin/python bench/site.py --counts 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_lab import CG_VENV, OUR_BIN, REPO, SOCKET, ensure_cg_venv, log

OURS = "mage-bench-site"
SEED = "mage-bench-seed"
IMAGE = "mage/debian-12"

SEED_ONE = """
- name: Create a started container
  community.general.lxd_container:
    name: "{{ item.name }}"
    project: "{{ seed_project }}"
    url: "unix:%(socket)s"
    state: started
    source: {type: image, alias: "%(image)s"}
    profiles: [default]
    wait_for_ipv4_addresses: true
    timeout: 600
- name: Add the host
  ansible.builtin.add_host:
    name: "{{ item.name }}"
    ansible_connection: community.general.lxd
    ansible_lxd_project: "{{ seed_project }}"
- name: Check python is installed in the container
  ansible.builtin.raw: command -v python3
  delegate_to: "{{ item.name }}"
  register: python_check
  failed_when: python_check.rc not in [0, 1, 127]
  changed_when: false
- name: Install python in the container
  ansible.builtin.raw: apt-get install -y python3
  delegate_to: "{{ item.name }}"
  when: python_check.rc != 0
- name: Update the inventory file
  ansible.builtin.lineinfile:
    dest: "{{ seed_hosts_file }}"
    regexp: "^{{ item.name }} "
    line: "{{ item.name }} ansible_connection=community.general.lxd"
    create: true
    mode: "0644"
""" % {"socket": SOCKET, "image": IMAGE}

SEED_PLAY = """
- name: The seed's way, one instance after another
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Provision each instance
      ansible.builtin.include_tasks: seed-one.yml
      loop: "{{ lxd_provisioning_inventory }}"
"""


def lxc(*args: str, check: bool = True) -> str:
    result = subprocess.run(["lxc", *args], capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise SystemExit(f"lxc {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def delete_project(project: str) -> None:
    """Delete a bench project with everything in it (a missing one is fine)."""
    if lxc("project", "show", project, check=False) == "":
        return
    for url in json.loads(lxc("query", f"/1.0/instances?project={project}") or "[]"):
        lxc("delete", "--force", url.split("?")[0].rsplit("/", 1)[-1], "--project", project)
    for url in json.loads(lxc("query", f"/1.0/profiles?project={project}") or "[]"):
        name = url.split("?")[0].rsplit("/", 1)[-1]
        if name != "default":
            lxc("profile", "delete", name, "--project", project)
    lxc("project", "delete", project)


def declarations(count: int, prefix: str) -> list[dict[str, object]]:
    return [{"name": f"{prefix}-{index:03d}", "image": IMAGE,
             "proxy": [{"name": f"{prefix}-{index:03d}.bench.test", "path": "/", "pass": 80}]}
            for index in range(count)]


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def ours(count: int, workdir: Path) -> tuple[float, float]:
    variables = workdir / f"ours-{count}.json"
    variables.write_text(json.dumps({
        "lxd_project": OURS, "mageproxy_project": OURS, "mageproxy_name": "benchproxy",
        "lxd_provisioning_image_server": "", "lxd_provisioning_inventory": declarations(count, "site"),
    }))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    command = [str(OUR_BIN / "ansible-playbook"), "playbooks/site.yml", "-e", f"@{variables}"]
    return timed(command, env, REPO), timed(command, env, REPO)


def seed(count: int, workdir: Path) -> tuple[float, float]:
    (workdir / "seed-one.yml").write_text(SEED_ONE)
    (workdir / "seed.yml").write_text(SEED_PLAY)
    variables = workdir / f"seed-{count}.json"
    variables.write_text(json.dumps({"seed_project": SEED, "seed_hosts_file": str(workdir / f"hosts-{count}"),
                                     "lxd_provisioning_inventory": declarations(count, "seed")}))
    lxc("project", "create", SEED, "-c", "features.images=false", "-c", "features.profiles=false")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    command = [str(CG_VENV / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local", "seed.yml",
               "-e", f"@{variables}", "-e", f"ansible_python_interpreter={CG_VENV / 'bin' / 'python'}"]
    return timed(command, env, workdir), timed(command, env, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[20, 50])
    args = parser.parse_args()
    ensure_cg_venv()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mage-bench-site-") as name:
        workdir = Path(name)
        try:
            for count in args.counts:
                for project in (OURS, SEED):
                    delete_project(project)
                log(f"N={count}: seed's playbook")
                seed_first, seed_again = seed(count, workdir)
                delete_project(SEED)
                log(f"N={count}: site.yml")
                ours_first, ours_again = ours(count, workdir)
                delete_project(OURS)
                rows.append((count, ours_first, seed_first, ours_again, seed_again))
                print(f"N={count}: ours {ours_first:.1f} s / {ours_again:.1f} s, seed {seed_first:.1f} s / "
                      f"{seed_again:.1f} s", file=sys.stderr)
        finally:
            delete_project(OURS)
            delete_project(SEED)
    print("| N | site.yml s | seed playbook s | seed/ours | 2nd run site.yml s | 2nd run seed s | seed/ours |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for count, ours_first, seed_first, ours_again, seed_again in rows:
        print(f"| {count} | {ours_first:.1f} | {seed_first:.1f} | {seed_first / ours_first:.1f}x "
              f"| {ours_again:.1f} | {seed_again:.1f} | {seed_again / ours_again:.1f}x |")


if __name__ == "__main__":
    main()
