"""The mage.lxd collection as a user installs it, on the oldest and the newest ansible-core it supports.

This repository is the collection. A bare git repository is made from HEAD and installed with
`ansible-galaxy collection install git+file://...` into a fresh venv that holds only one
ansible-core and the collection's own requirements.txt (plain pip install); a tarball from a plain
`ansible-galaxy collection build` is installed beside it and must hold the same files. Each
controller then works from a project directory that holds only an inventory file and a playbook,
against this pass's lab server (LXD, then Incus), and runs ansible-doc on every plugin,
`ansible-test units` and `ansible-test sanity --venv` on the installed collection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lxd_lab import REPO, delete_project, project_name, recap, strip_unsafe, wait_for_leases

pytestmark = pytest.mark.integration

# The declared support range, tested at both ends: the oldest ansible-core on the oldest Python,
# the newest on the newest (ansible-core 2.20 and later need Python 3.12). meta/runtime.yml and the
# README must say the same.
CONTROLLERS = {
    "oldest": ("2.16", Path.home() / ".pyenv/versions/3.10.13/bin/python3.10"),
    "newest": ("2.21", Path.home() / ".pyenv/versions/3.13.0/bin/python3.13"),
}
SERVER_INDEPENDENT = "the same on every server; runs on the LXD pass"


@dataclass
class Controller:
    """A fresh venv with one ansible-core, the collection's requirements and the collection
    installed from git (`collections`) and from the built tarball (`from-tarball`)."""

    name: str
    ansible_core: str
    python_version: str
    root: Path

    def collection(self, source: str = "collections") -> Path:
        return self.root / source / "ansible_collections" / "mage" / "lxd"

    def env(self, source: str = "collections") -> dict[str, str]:
        # Nothing from the checkout: no ANSIBLE_CONFIG, a HOME of its own, only these collections.
        return {
            "PATH": f"{self.root / 'venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            "ANSIBLE_COLLECTIONS_PATH": str(self.root / source),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
            # The pass's server (Incus's socket on the Incus pass): without it the bare project
            # would find LXD's socket, and the Incus pass would test LXD and leave projects there.
            **({"MAGE_LXD_URL": os.environ["MAGE_LXD_URL"]} if os.environ.get("MAGE_LXD_URL") else {}),
        }

    def run(self, *args: str, cwd: Path, check: bool = True, source: str = "collections") -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.root / "venv" / "bin" / args[0]), *args[1:]], cwd=cwd, env=self.env(source),
                                capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}) on ansible-core "
                                 f"{self.ansible_core}:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
        return result


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str | Path]:
    """HEAD as a bare git repository (the URL a user installs from) and the tarball a plain
    `ansible-galaxy collection build` makes of a clone of it."""
    root = tmp_path_factory.mktemp("sources")
    subprocess.run(["git", "clone", "--quiet", "--bare", str(REPO), str(root / "mage-lxd.git")], check=True)
    subprocess.run(["git", "clone", "--quiet", str(root / "mage-lxd.git"), str(root / "clone")], check=True)
    built = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-galaxy"), "collection", "build", "--output-path",
                            str(root / "dist")], cwd=root / "clone", capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    [tarball] = (root / "dist").glob("mage-lxd-*.tar.gz")
    return {"git": f"git+file://{root / 'mage-lxd.git'}", "tarball": tarball}


@pytest.fixture(scope="module")
def controllers(sources, tmp_path_factory):
    """Controllers made on first use and shared by this module's tests."""
    made: dict[str, Controller] = {}

    def make(name: str) -> Controller:
        if name not in made:
            made[name] = new_controller(name, sources, tmp_path_factory.mktemp(f"controller-{name}"))
        return made[name]

    return make


@pytest.fixture(params=sorted(CONTROLLERS))
def controller(request, controllers) -> Controller:
    return controllers(request.param)


def new_controller(name: str, sources: dict[str, str | Path], root: Path) -> Controller:
    ansible_core, python = CONTROLLERS[name]
    if not python.exists():
        pytest.fail(f"{python} is missing: the {name} supported Python must be installed to test it")
    (root / "home").mkdir()
    subprocess.run([str(python), "-m", "venv", str(root / "venv")], check=True)
    made = Controller(name, ansible_core, "", root)
    made.run("pip", "install", "--disable-pip-version-check", "--quiet", f"ansible-core=={ansible_core}.*", cwd=root)
    installed = made.run("ansible-galaxy", "collection", "install", str(sources["git"]), cwd=root)
    assert "was installed successfully" in installed.stdout, installed.stdout
    made.run("ansible-galaxy", "collection", "install", "-p", str(root / "from-tarball"), str(sources["tarball"]),
             cwd=root, source="from-tarball")
    # The collection's own requirements.txt, as its README tells a user: nothing else.
    made.run("pip", "install", "--disable-pip-version-check", "--quiet", "-r",
             str(made.collection() / "requirements.txt"), cwd=root)
    made.python_version = made.run("python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])",
                                   cwd=root).stdout.strip()
    version = made.run("ansible", "--version", cwd=root).stdout.splitlines()[0]
    assert f"[core {ansible_core}." in version, version
    return made


def tree(collection: Path) -> dict[str, bytes]:
    """Every file of an installed collection but its install metadata, by relative path."""
    return {str(path.relative_to(collection)): path.read_bytes() for path in sorted(collection.rglob("*"))
            if path.is_file() and path.name not in ("MANIFEST.json", "FILES.json") and "__pycache__" not in path.parts}


def test_git_and_tarball_installs_are_the_whole_collection_and_the_same(controller):
    from_git, from_tarball = tree(controller.collection()), tree(controller.collection("from-tarball"))
    assert from_git == from_tarball
    # Everything a user runs, and nothing of the checkout's own tooling.
    for path in ("plugins/inventory/mage_lxd.py", "plugins/connection/mage_lxd.py", "plugins/lookup/mage_lxd.py",
                 "plugins/action/mage_lxd_instance.py", "plugins/modules/mage_lxd_instance.py",
                 "plugins/filter/mage_lxd.py", "plugins/doc_fragments/mage_lxd.py", "plugins/plugin_utils/remote.py",
                 "roles/provisioning/tasks/main.yml", "roles/mageproxy/tasks/main.yml", "playbooks/site.yml",
                 "roles/molecule/meta/argument_specs.yml", "playbooks/molecule_create.yml",
                 "templates/mageproxy/mage-sites.conf.j2", "requirements.txt", "meta/runtime.yml",
                 "meta/execution-environment.yml", "tests/unit/test_remote.py"):
        assert path in from_git, path
    leaked = [path for path in from_git if path.split("/")[0] in (
        "lab", "bench", "demo", "collection", "inventory", "inventory_plugins", "library", ".ci")
        or path.startswith(("tests/integration/", "tests/molecule/", "roles/mage.lxd-provisioning/"))]
    assert not leaked, leaked
    assert not [path for path in controller.collection().rglob("*") if path.is_symlink()]


PLAYBOOK = """\
---
- name: An instance that publishes a web route, read back through the lookup
  hosts: localhost
  gather_facts: false
  vars:
    route: {{name: {instance}.coll.test, path: /, pass: 80}}
  tasks:
    - name: Create the instance (its project too) with one web route
      mage.lxd.mage_lxd_instance:
        name: {instance}
        project: {project}
        image: mage/debian-12
        image_server: ""
        proxy: ["{{{{ route }}}}"]

    - name: Read the route back from the server through the lookup
      ansible.builtin.assert:
        that: lookup('mage.lxd.mage_lxd', '{instance}', key='mage', project='{project}').proxy == [route]
"""


def bare_project(controller: Controller, name: str, project: str, playbook: str | None = None) -> Path:
    """A project directory holding only an inventory file (and a playbook)."""
    workdir = controller.root / name
    workdir.mkdir()
    (workdir / "lxd.mage_lxd.yml").write_text(f"plugin: mage.lxd.mage_lxd\nprojects: [{project}]\n")
    if playbook:
        (workdir / "site.yml").write_text(playbook)
    return workdir


def test_a_bare_project_uses_the_installed_collection(controller, lab):
    project, instance = project_name(f"mage-test-coll-{controller.name}"), f"coll-{controller.name}-web"
    workdir = bare_project(controller, "project", project, PLAYBOOK.format(project=project, instance=instance))
    delete_project(project)
    try:
        first = controller.run("ansible-playbook", "-i", "lxd.mage_lxd.yml", "site.yml", cwd=workdir)
        assert recap(first.stdout)["localhost"]["changed"] == 1, first.stdout
        again = controller.run("ansible-playbook", "-i", "lxd.mage_lxd.yml", "site.yml", cwd=workdir)
        assert recap(again.stdout)["localhost"]["changed"] == 0, again.stdout

        for source in ("collections", "from-tarball"):
            graph = controller.run("ansible-inventory", "-i", "lxd.mage_lxd.yml", "--graph", "lxd", cwd=workdir,
                                   source=source)
            assert graph.stdout.split() == ["@lxd:", f"|--{instance}"], graph.stdout
            ping = controller.run("ansible", "-i", "lxd.mage_lxd.yml", "lxd", "-m", "ansible.builtin.ping",
                                  cwd=workdir, source=source)
            assert f"{instance} | SUCCESS" in ping.stdout and '"ping": "pong"' in ping.stdout, ping.stdout
        missing_websockets(controller, workdir, instance)
        host = strip_unsafe(json.loads(
            controller.run("ansible-inventory", "-i", "lxd.mage_lxd.yml", "--host", instance, cwd=workdir).stdout))
        # The inventory names the connection by its FQCN, so a bare project needs no config.
        assert host["ansible_connection"] == "mage.lxd.mage_lxd"
        assert sorted(path.name for path in workdir.iterdir()) == ["lxd.mage_lxd.yml", "site.yml"]
    finally:
        delete_project(project)


def missing_websockets(controller: Controller, workdir: Path, instance: str) -> None:
    """Without websockets the plugins still load and ansible-doc works; running a module names the
    missing package and the fix."""
    hidden = controller.root / "no-websockets"
    # A package that fails to import stands for "not installed", for these commands only.
    (hidden / "websockets").mkdir(parents=True, exist_ok=True)
    (hidden / "websockets" / "__init__.py").write_text("raise ImportError('No module named websockets')\n")
    env = {**controller.env(), "PYTHONPATH": str(hidden)}
    binary = controller.root / "venv" / "bin"
    doc = subprocess.run([str(binary / "ansible-doc"), "-t", "connection", "mage.lxd.mage_lxd"], cwd=workdir, env=env,
                         capture_output=True, text=True, check=False)
    assert doc.returncode == 0 and "MAGE.LXD.MAGE_LXD" in doc.stdout.upper(), doc.stderr
    ping = subprocess.run([str(binary / "ansible"), "-i", "lxd.mage_lxd.yml", instance, "-m", "ansible.builtin.ping"],
                          cwd=workdir, env=env, capture_output=True, text=True, check=False)
    assert ping.returncode != 0 and f"{instance} | " in ping.stdout, ping.stdout + ping.stderr
    assert "the Python package 'websockets' is missing" in ping.stdout and "requirements.txt" in ping.stdout, ping.stdout


def served(address: str, host: str) -> int:
    """The HTTP status mageproxy answers for `host`."""
    request = urllib.request.Request(f"http://{address}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_collections_own_playbooks_publish_through_mageproxy_and_tear_down(controller, lab):
    # mage.lxd.site runs the role (mage.lxd.provisioning) and mage.lxd.proxy: a new mageproxy
    # reaches the proxy play through the instance action's add_host, then nginx gets the route.
    project = project_name(f"mage-test-coll-site-{controller.name}")
    proxy, app = f"coll-{controller.name}-proxy", f"coll-{controller.name}-app"
    declared = {
        "lxd_project": project, "mageproxy_project": project, "mageproxy_name": proxy,
        "lxd_provisioning_inventory": [{"name": app, "image": "mage/busybox", "bootstrap": False,
                                        "proxy": [{"name": "app.coll.test", "pass": 80}]}],
    }
    workdir = bare_project(controller, "site-project", project)
    extra = ["-i", "lxd.mage_lxd.yml", "-e", json.dumps(declared)]
    delete_project(project)
    try:
        first = controller.run("ansible-playbook", *extra, "mage.lxd.site", cwd=workdir)
        assert recap(first.stdout)[proxy]["changed"] == 1, first.stdout[-3000:]
        again = controller.run("ansible-playbook", *extra, "mage.lxd.site", cwd=workdir)
        assert {counts["changed"] for counts in recap(again.stdout).values()} == {0}, again.stdout[-3000:]
        # The route is live: its name reaches the app's upstream (502: busybox serves nothing),
        # an unknown name gets the catch-all's 503.
        address = wait_for_leases(project, [proxy])[proxy]
        assert (served(address, "app.coll.test"), served(address, "nobody.coll.test")) == (502, 503)

        controller.run("ansible-playbook", *extra, "-e", "teardown_mageproxy=true", "mage.lxd.teardown", cwd=workdir)
        graph = controller.run("ansible-inventory", "-i", "lxd.mage_lxd.yml", "--graph", cwd=workdir)
        assert "coll-" not in graph.stdout, graph.stdout
    finally:
        delete_project(project)


def installed_plugins(collection: Path) -> list[tuple[str, str]]:
    """(type, FQCN) of every plugin file the installed collection holds."""
    kinds = {"inventory": "inventory", "connection": "connection", "lookup": "lookup", "modules": "module",
             "filter": "filter"}
    found = []
    for directory, kind in kinds.items():
        for path in sorted((collection / "plugins" / directory).glob("*.py")):
            name = yaml.safe_load(path.read_text().split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
            found.append((kind, f"mage.lxd.{name.get('name') or name.get('module')}"))
    return found


@pytest.mark.lxd_only(reason=SERVER_INDEPENDENT)
def test_ansible_doc_renders_every_plugin(controller):
    plugins = installed_plugins(controller.collection())
    # Every plugin of the checkout is installed: inventory, connection, lookup, three modules
    # (actions) and the filters; a count that only grows with them would say nothing more.
    assert plugins == installed_plugins(REPO) and len(plugins) >= 10, plugins
    for kind, fqcn in plugins:
        result = controller.run("ansible-doc", "-t", kind, fqcn, cwd=controller.root, check=False)
        assert result.returncode == 0 and fqcn.upper() in result.stdout.upper(), result.stderr
        assert "EXAMPLES" in result.stdout, fqcn
        assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr


@pytest.mark.lxd_only(reason=SERVER_INDEPENDENT)
def test_ansible_test_units(controller):
    # --local: this controller's venv, with pytest added for the runner; the tests ship in the
    # collection (tests/unit) and import the library from it.
    controller.run("pip", "install", "--disable-pip-version-check", "--quiet", "pytest", "pytest-xdist",
                   cwd=controller.root)
    result = controller.run("ansible-test", "units", "--local", "--python", controller.python_version,
                            "--color", "no", cwd=controller.collection())
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 250 and " failed" not in result.stdout, result.stdout[-3000:]


def start_sanity(controller: Controller) -> subprocess.Popen[str]:
    """`ansible-test sanity --venv` (every test) on the installed collection, started in the background."""
    # ansible-test bootstraps pip in its venvs with get-pip.py from a host this machine cannot
    # reach; it looks in its cache first, under the name of the pip version it wants.
    source = (controller.root / "venv").glob("lib/python*/site-packages/ansible_test/_internal/python_requirements.py")
    cache = controller.root / "home" / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    versions = re.findall(r"pip='(\d+(?:\.\d+)+)'", next(source).read_text())
    assert versions, "ansible-test no longer names its pip version where this test looks"
    for version in versions:
        shutil.copy(REPO / "tests" / "collection" / "get_pip_standin.py", cache / f"get_pip_{version.replace('.', '_')}.py")
    return subprocess.Popen([str(controller.root / "venv" / "bin" / "ansible-test"), "sanity", "--venv", "--python",
                             controller.python_version, "--color", "no"], cwd=controller.collection(),
                            env=controller.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def sanity_runs(controllers) -> dict[str, subprocess.Popen[str]]:
    # Both ansible-cores at once: each run is mostly one busy process, and this machine has two cores.
    runs = {name: start_sanity(controllers(name)) for name in sorted(CONTROLLERS)}
    yield runs
    for run in runs.values():
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.lxd_only(reason=SERVER_INDEPENDENT)
@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_ansible_test_sanity(name, sanity_runs):
    # Every test each ansible-core has: the newest's rules are the strictest, and the oldest
    # still checks what the newest dropped (the Python 2 era boilerplate of module files).
    output = sanity_runs[name].communicate(timeout=1500)[0]
    # The findings first: pip's install logs make up most of the output's tail.
    findings = "\n".join(line for line in output.splitlines() if line.startswith("ERROR"))
    assert sanity_runs[name].returncode == 0, findings + "\n...\n" + output[-4000:]
    ran = set(re.findall(r'Running sanity test "([\w-]+)"', output))
    assert len(ran) >= 20 and {"validate-modules", "import", "pylint", "ansible-doc", "compile"} <= ran, ran
    if name == "oldest":
        assert {"future-import-boilerplate", "metaclass-boilerplate"} <= ran, ran


def test_ignore_entries_each_give_a_reason():
    for ignore in sorted((REPO / "tests" / "sanity").glob("ignore-*.txt")):
        for line in ignore.read_text().splitlines():
            assert not line.strip() or "#" in line, f"{ignore.name}: '{line}' has no reason"


def test_declared_versions_agree():
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    oldest_core, oldest_python = CONTROLLERS["oldest"]
    assert runtime["requires_ansible"] == f">={oldest_core}.0"
    python_floor = re.search(r"python(\d+\.\d+)$", str(oldest_python)).group(1)
    readme = (REPO / "README.md").read_text()
    assert f"ansible-core {oldest_core} or later" in readme and f"Python {python_floor} or later" in readme
    assert f"tested on {oldest_core} and {CONTROLLERS['newest'][0]}" in readme
    # The collection runs on the user's own ansible-core and never installs one.
    requirements = [line for line in (REPO / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert requirements and not [line for line in requirements if line.startswith("ansible")]
