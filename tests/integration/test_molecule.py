"""`molecule test` on the sample role (tests/molecule/web) against this pass's lab server.

As a role author runs it: a fresh venv with only ansible-core, molecule (the pins of
lab/requirements.txt) and the collection installed with `ansible-galaxy collection install
git+file://` from a bare clone of HEAD, plus the collection's requirements.txt; a HOME of its own
(Molecule's cache); the server chosen as everywhere (the local socket, MAGE_LXD_URL on the Incus
pass). Two copies of the role run the default scenario at once and must not meet; the broken
scenario's converge fails and destroy must leave no instance or project behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lxd_lab import REPO, TITLE, delete_project, project_name, query

pytestmark = pytest.mark.integration

# This session's own prefix: what the test lists and cleans up is never another run's project.
PREFIX = project_name(f"mage-test-mol-{os.getpid()}-")
SAMPLE = REPO / "tests" / "molecule" / "web"
# One molecule test may wait behind other runs on the server (mage_lxd_instance's lock).
TIMEOUT = 900


def pin(package: str) -> str:
    """The package's pin in lab/requirements.txt (the versions the checkout is tested with)."""
    for line in (REPO / "lab" / "requirements.txt").read_text().splitlines():
        if line.split("==")[0].strip().lower() == package:
            return line.strip()
    raise AssertionError(f"lab/requirements.txt pins no {package}")


@pytest.fixture(scope="module")
def author(tmp_path_factory) -> dict[str, str]:
    """The role author's environment: the fresh venv first on PATH, its own HOME and collections."""
    root = tmp_path_factory.mktemp("molecule")
    subprocess.run(["git", "clone", "--quiet", "--bare", str(REPO), str(root / "mage-lxd.git")], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    env = {
        "PATH": f"{root / 'venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(root / "home"),
        "LANG": "C.UTF-8",
        "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        "MAGE_LXD_MOLECULE_PROJECT_PREFIX": PREFIX,
        **({"MAGE_LXD_URL": os.environ["MAGE_LXD_URL"]} if os.environ.get("MAGE_LXD_URL") else {}),
    }
    (root / "home").mkdir()

    def run(*args: str) -> None:
        result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    run("pip", "install", "--disable-pip-version-check", "--quiet", pin("ansible-core"), pin("molecule"))
    run("ansible-galaxy", "collection", "install", f"git+file://{root / 'mage-lxd.git'}")
    run("pip", "install", "--disable-pip-version-check", "--quiet", "-r",
        str(root / "collections" / "ansible_collections" / "mage" / "lxd" / "requirements.txt"))
    env["MAGE_TEST_ROOT"] = str(root)
    return env


def role_copy(author: dict[str, str], name: str) -> Path:
    """The sample role in a directory of its own name (Molecule keys its cache on it)."""
    target = Path(author["MAGE_TEST_ROOT"]) / name
    shutil.copytree(SAMPLE, target)
    return target


def molecule(author: dict[str, str], role: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["molecule", *args], cwd=role, env=author, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=TIMEOUT)
    return process.returncode, output


# Molecule's step lines: `INFO     [default > converge] Executing` (no terminal), or with `➜` on one.
STEP_LINE = re.compile(r"^\w+\s+(?:\[[^\]>]+ > (\w+)\]|\S+ ➜ (\w+):) Executing$", re.MULTILINE)


def step(output: str, name: str) -> str:
    """The output of one step of the sequence (its last run: destroy runs twice)."""
    starts = [(match.group(1) or match.group(2), match.end()) for match in STEP_LINE.finditer(output)]
    ends = [start for _, start in starts[1:]] + [len(output)]
    found = [output[start:end] for (action, start), end in zip(starts, ends) if action == name]
    assert found, f"no {name} step in:\n{output[-6000:]}"
    return found[-1]


def executed(output: str, name: str) -> str:
    """How a step ended, as Molecule's summary says (Successful, Failed, ...)."""
    found = re.findall(rf"> {name}: Executed: (\w+)|➜ {name}: Executed: (\w+)", output)
    assert found, f"no {name} step in:\n{output[-6000:]}"
    return "".join(found[-1])


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counts by host, as Molecule shows them (framed, and wrapped at the terminal's width)."""
    found = re.findall(r"(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    return {host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts))) for host, *counts in found}


def run_projects(output: str) -> list[str]:
    """The projects the runs' create steps made (their names are in the task output)."""
    return sorted(set(re.findall(rf"\b{re.escape(PREFIX)}[a-z0-9-]+-[0-9a-f]{{8}}\b", output)))


def left_on_server() -> dict[str, list[str]]:
    """Every project with this test's prefix, and the instances in it."""
    projects = [url.rsplit("/", 1)[-1] for url in query("/1.0/projects") or []]
    return {name: query(f"/1.0/instances?project={name}") or [] for name in projects if name.startswith(PREFIX)}


@pytest.fixture
def clean_server():
    for name in left_on_server():
        delete_project(name)
    yield
    for name in left_on_server():
        delete_project(name)


def test_two_runs_at_once_pass_in_projects_of_their_own_and_leave_nothing(author, lab, clean_server):
    started = time.monotonic()
    runs = [molecule(author, role_copy(author, name), "test") for name in ("web-a", "web-b")]
    results = [finished(process) for process in runs]
    elapsed = time.monotonic() - started
    for code, output in results:
        assert code == 0, output[-8000:]
        assert executed(output, "idempotence") == "Successful", output[-8000:]
        idempotence = recap(step(output, "idempotence"))
        assert idempotence and all(counts["changed"] == 0 for counts in idempotence.values()), output[-8000:]
        assert recap(step(output, "verify"))["web"]["failed"] == 0
    projects = [run_projects(step(output, "create")) for _, output in results]
    # One project per run, not the same one: the two `web` instances never met.
    assert all(len(found) == 1 for found in projects) and projects[0] != projects[1], projects
    assert left_on_server() == {}
    print(f"two molecule test runs at once on {TITLE}: {elapsed:.0f} s")


def test_a_failed_converge_is_destroyed_with_its_project(author, lab, clean_server):
    started = time.monotonic()
    code, output = finished(molecule(author, role_copy(author, "web-broken"), "test", "-s", "broken"))
    assert code != 0, output[-8000:]
    assert executed(output, "converge") == "Failed", output[-8000:]
    assert "nginx" in step(output, "converge")
    assert executed(output, "destroy") == "Successful", output[-8000:]
    assert recap(step(output, "destroy"))["localhost"]["failed"] == 0, output[-8000:]
    assert len(run_projects(step(output, "create"))) == 1, output[-8000:]
    assert left_on_server() == {}
    print(f"molecule test of the broken scenario on {TITLE}: {time.monotonic() - started:.0f} s")


def test_the_role_and_its_playbooks_are_documented(author):
    shown = subprocess.run(["ansible-doc", "-t", "role", "mage.lxd.molecule"], env=author, capture_output=True,
                           text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "ENTRY POINT: *create*" in shown.stdout and "ENTRY POINT: *destroy*" in shown.stdout, shown.stdout
    shown = subprocess.run(["ansible-doc", "mage.lxd.mage_lxd_project"], env=author, capture_output=True, text=True,
                           check=False)
    assert shown.returncode == 0 and "state" in shown.stdout, shown.stderr
