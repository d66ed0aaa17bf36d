"""`molecule test` on the sample role (tests/molecule/web) through mage.lxd, next to the same job
hand-written the way role authors do it today: create and destroy playbooks that run `lxc launch`,
`lxc delete` and `lxc project create/delete`, and converge and verify through community.general's
lxd connection (community.general.incus on Incus), which runs the `lxc` binary for every exec.

Both scenarios make one Debian 12 container from the lab's local image, in a project of their own,
apply the same role (converge, idempotence), run the same verifier and delete everything. They run
one after the other, each `--runs` times (default 1), in the same run of this script, with
Molecule from the checkout's .venv (lab/requirements.txt) and community.general from bench's
venv (bench_lab.cg_venv()).

    .venv/bin/python bench/molecule.py [--runs N]
    MAGE_BENCH_SERVER=incus .venv/bin/python bench/molecule.py

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_lab import CG_PLUGIN, CLI, LAB, ON_INCUS, OUR_BIN, REPO, bench_project_name, cg_venv, log

SAMPLE = REPO / "tests" / "molecule" / "web"
CG_PROJECT = bench_project_name("mage-bench-mol-cg")
# community.general's lxd connection reads ansible_lxd_*, its incus one ansible_incus_*.
CG_VARS = "incus" if ON_INCUS else "lxd"

CG_CREATE = f"""\
---
# By hand: the CLI for everything, then wait for an address.
- name: Create
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Project
      ansible.builtin.command: {CLI} project create {CG_PROJECT} -c features.images=false -c features.profiles=false
      register: made
      changed_when: made.rc == 0
      failed_when: made.rc != 0 and 'already exists' not in made.stderr
    - name: Launch
      ansible.builtin.command: {CLI} launch mage/debian-12 web --project {CG_PROJECT} -c limits.memory=512MiB
      changed_when: true
    - name: Wait for an IPv4 address
      ansible.builtin.command: {CLI} list web --project {CG_PROJECT} -c 4 --format csv
      register: listed
      until: listed.stdout | trim | length > 0
      retries: 120
      delay: 1
      changed_when: false
    - name: Instance config
      ansible.builtin.copy:
        content: "{{{{ [{{'instance': 'web', 'address': 'web', 'connection': '{CG_PLUGIN}'}}] | to_nice_yaml }}}}"
        dest: "{{{{ molecule_instance_config }}}}"
        mode: "0600"
"""

CG_DESTROY = f"""\
---
- name: Destroy
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Delete the container
      ansible.builtin.command: {CLI} delete --force web --project {CG_PROJECT}
      register: deleted
      changed_when: deleted.rc == 0
      failed_when: false
    - name: Delete the project
      ansible.builtin.command: {CLI} project delete {CG_PROJECT}
      register: deleted
      changed_when: deleted.rc == 0
      failed_when: false
    - name: Empty the instance config
      ansible.builtin.copy:
        content: "[]\\n"
        dest: "{{{{ molecule_instance_config }}}}"
        mode: "0600"
"""

CG_MOLECULE = f"""\
---
driver:
  name: default
platforms:
  - name: web
provisioner:
  name: ansible
  inventory:
    host_vars:
      web:
        ansible_{CG_VARS}_project: {CG_PROJECT}
        ansible_python_interpreter: /usr/bin/python3
verifier:
  name: ansible
"""


def scenarios(root: Path) -> Path:
    """A copy of the sample role with a third scenario, `cg`, written by hand."""
    role = root / "web"
    shutil.copytree(SAMPLE, role)
    cg = role / "molecule" / "cg"
    cg.mkdir()
    for name in ("converge.yml", "verify.yml"):
        shutil.copy(role / "molecule" / "default" / name, cg / name)
    (cg / "molecule.yml").write_text(CG_MOLECULE)
    (cg / "create.yml").write_text(CG_CREATE)
    (cg / "destroy.yml").write_text(CG_DESTROY)
    return role


def timed_test(role: Path, scenario: str, env: dict[str, str]) -> float:
    log(f"molecule test -s {scenario}")
    started = time.monotonic()
    result = subprocess.run([str(OUR_BIN / "molecule"), "test", "-s", scenario], cwd=role, env=env,
                            capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"molecule test -s {scenario} failed ({result.returncode}):\n{result.stdout[-6000:]}"
                         f"\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="molecule test runs of each scenario (default 1)")
    options = parser.parse_args()
    site_packages = next((cg_venv() / "lib").glob("python3*/site-packages"))
    with tempfile.TemporaryDirectory(prefix="mage-bench-molecule-") as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        role = scenarios(root)
        env = {**os.environ, "PATH": f"{OUR_BIN}:{os.environ['PATH']}", "HOME": str(root / "home"),
               "ANSIBLE_COLLECTIONS_PATH": f"{REPO / 'collection'}:{site_packages}",
               "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1",
               "MAGE_LXD_MOLECULE_PROJECT_PREFIX": bench_project_name("mage-bench-mol") + "-"}
        if ON_INCUS:
            env["MAGE_LXD_URL"] = f"unix:{LAB['MAGE_INCUS_SOCKET']}"
        results: dict[str, list[float]] = {"default": [], "cg": []}
        for _ in range(options.runs):
            for scenario in results:
                results[scenario].append(timed_test(role, scenario, env))
    labels = {"default": "mage.lxd (mage_lxd_instance, mage_lxd connection)",
              "cg": f"by hand ({CLI} launch, {CG_PLUGIN} connection)"}
    print(f"molecule test on the sample role, {'Incus' if ON_INCUS else 'LXD'}, {options.runs} run(s) each")
    print(f"{'scenario':<58} {'median s':>9}  samples")
    for scenario, samples in results.items():
        ordered = sorted(samples)
        print(f"{labels[scenario]:<58} {ordered[len(ordered) // 2]:>9.1f}  "
              + ", ".join(f"{value:.1f}" for value in samples))


if __name__ == "__main__":
    sys.exit(main())
