"""The mage.lxd collection as a user gets it, on the oldest and the newest ansible-core it supports.

Built from this checkout (collection/build.sh: the collection tarball and the mage-lxd wheel),
installed into an empty directory with a fresh venv (plain pip install), then used from a project
directory that holds only an inventory file and one FQCN playbook, against the lab's real LXD.
The same controllers run ansible-doc on every plugin, ansible-test units and, on the newest,
ansible-test sanity.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lxd_lab import REPO, delete_project, recap, strip_unsafe

pytestmark = pytest.mark.integration

# The declared support range, tested at both ends: the oldest ansible-core on the oldest Python,
# the newest on the newest. meta/runtime.yml, pyproject.toml and the README must say the same.
CONTROLLERS = {
    "oldest": ("2.16", Path.home() / ".pyenv/versions/3.10.13/bin/python3.10"),
    "newest": ("2.21", Path.home() / ".pyenv/versions/3.13.0/bin/python3.13"),
}
COLLECTION_SOURCE = REPO / "collection" / "ansible_collections" / "mage" / "lxd"


@dataclass
class Controller:
    """A fresh venv with one ansible-core, the mage-lxd wheel and the installed collection."""

    name: str
    ansible_core: str
    python_version: str
    root: Path

    @property
    def collection(self) -> Path:
        return self.root / "collections" / "ansible_collections" / "mage" / "lxd"

    def env(self) -> dict[str, str]:
        # Nothing from the checkout: no ANSIBLE_CONFIG, a HOME of its own, only these collections.
        return {
            "PATH": f"{self.root / 'venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            "ANSIBLE_COLLECTIONS_PATH": str(self.root / "collections"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
            # The pass's server (Incus's socket on the Incus pass): without it the bare project
            # would find LXD's socket, and the Incus pass would test LXD and leave projects there.
            **({"MAGE_LXD_URL": os.environ["MAGE_LXD_URL"]} if os.environ.get("MAGE_LXD_URL") else {}),
        }

    def run(self, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.root / "venv" / "bin" / args[0]), *args[1:]], cwd=cwd, env=self.env(),
                                capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}) on ansible-core "
                                 f"{self.ansible_core}:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
        return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The collection tarball and the wheel, built by the README's command."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(REPO / "collection" / "build.sh"), str(out)], cwd=REPO, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    [tarball] = out.glob("mage-lxd-*.tar.gz")
    [wheel] = out.glob("mage_lxd-*.whl")
    return {"collection": tarball, "wheel": wheel}


@pytest.fixture(scope="module")
def controllers(dist, tmp_path_factory) -> dict[str, Controller]:
    """Controllers made on first use and shared by this module's tests."""
    made: dict[str, Controller] = {}

    def make(name: str) -> Controller:
        if name not in made:
            made[name] = new_controller(name, dist, tmp_path_factory.mktemp(f"controller-{name}"))
        return made[name]

    return make


@pytest.fixture(params=sorted(CONTROLLERS))
def controller(request, controllers) -> Controller:
    return controllers(request.param)


def new_controller(name: str, dist: dict[str, Path], root: Path) -> Controller:
    ansible_core, python = CONTROLLERS[name]
    if not python.exists():
        pytest.fail(f"{python} is missing: the {name} supported Python must be installed to test it")
    (root / "home").mkdir()
    subprocess.run([str(python), "-m", "venv", str(root / "venv")], check=True)
    made = Controller(name, ansible_core, "", root)
    made.run("pip", "install", "--disable-pip-version-check", "--quiet", f"ansible-core=={ansible_core}.*",
             str(dist["wheel"]), "pytest", "pytest-xdist", cwd=root)
    made.run("ansible-galaxy", "collection", "install", str(dist["collection"]), cwd=root)
    made.python_version = made.run("python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])",
                                   cwd=root).stdout.strip()
    version = made.run("ansible", "--version", cwd=root).stdout.splitlines()[0]
    assert f"[core {ansible_core}." in version, version
    return made


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

    - name: Read the route back from LXD through the lookup
      ansible.builtin.assert:
        that: lookup('mage.lxd.mage_lxd', '{instance}', key='mage', project='{project}').proxy == [route]
"""


def test_a_bare_project_uses_the_installed_collection(controller, lab):
    project, instance = f"mage-coll-{controller.name}", f"coll-{controller.name}-web"
    workdir = controller.root / "project"
    workdir.mkdir()
    (workdir / "lxd.mage_lxd.yml").write_text(f"plugin: mage.lxd.mage_lxd\nprojects: [{project}]\n")
    (workdir / "site.yml").write_text(PLAYBOOK.format(project=project, instance=instance))
    delete_project(project)
    try:
        first = controller.run("ansible-playbook", "-i", "lxd.mage_lxd.yml", "site.yml", cwd=workdir)
        assert recap(first.stdout)["localhost"]["changed"] == 1, first.stdout
        again = controller.run("ansible-playbook", "-i", "lxd.mage_lxd.yml", "site.yml", cwd=workdir)
        assert recap(again.stdout)["localhost"]["changed"] == 0, again.stdout

        graph = controller.run("ansible-inventory", "-i", "lxd.mage_lxd.yml", "--graph", "lxd", cwd=workdir)
        assert graph.stdout.split() == ["@lxd:", f"|--{instance}"], graph.stdout
        host = strip_unsafe(json.loads(
            controller.run("ansible-inventory", "-i", "lxd.mage_lxd.yml", "--host", instance, cwd=workdir).stdout))
        # The inventory names the connection of its own collection, so a bare project needs no config.
        assert host["ansible_connection"] == "mage.lxd.mage_lxd"

        ping = controller.run("ansible", "-i", "lxd.mage_lxd.yml", "lxd", "-m", "ansible.builtin.ping",
                              cwd=workdir)
        assert f"{instance} | SUCCESS" in ping.stdout and '"ping": "pong"' in ping.stdout, ping.stdout
        assert sorted(path.name for path in workdir.iterdir()) == ["lxd.mage_lxd.yml", "site.yml"]
    finally:
        delete_project(project)


def test_the_collections_own_playbooks_converge_and_tear_down(controller, lab):
    # mage.lxd.site runs the role (mage.lxd.provisioning) and mage.lxd.proxy: a new mageproxy
    # reaches the proxy play through the instance action's add_host, then nginx gets the route.
    project = f"mage-coll-site-{controller.name}"
    declared = {
        "lxd_project": project, "mageproxy_project": project, "mageproxy_name": f"coll-{controller.name}-proxy",
        "lxd_provisioning_inventory": [{"name": f"coll-{controller.name}-app", "image": "mage/busybox",
                                        "bootstrap": False, "proxy": [{"name": "app.coll.test", "pass": 80}]}],
    }
    workdir = controller.root / "site-project"
    workdir.mkdir()
    (workdir / "lxd.mage_lxd.yml").write_text(f"plugin: mage.lxd.mage_lxd\nprojects: [{project}]\n")
    extra = ["-i", "lxd.mage_lxd.yml", "-e", json.dumps(declared)]
    delete_project(project)
    try:
        first = controller.run("ansible-playbook", *extra, "mage.lxd.site", cwd=workdir)
        assert recap(first.stdout)[declared["mageproxy_name"]]["changed"] == 1, first.stdout[-3000:]
        again = controller.run("ansible-playbook", *extra, "mage.lxd.site", cwd=workdir)
        assert {counts["changed"] for counts in recap(again.stdout).values()} == {0}, again.stdout[-3000:]

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


def test_ansible_doc_renders_every_plugin(controller):
    plugins = installed_plugins(controller.collection)
    # inventory, connection, lookup, two modules (actions), two filters
    assert len(plugins) == 7, plugins
    for kind, fqcn in plugins:
        result = controller.run("ansible-doc", "-t", kind, fqcn, cwd=controller.root, check=False)
        assert result.returncode == 0 and fqcn.upper() in result.stdout.upper(), result.stderr
        assert "EXAMPLES" in result.stdout, fqcn
        assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr


def test_ansible_test_units(controller):
    # --local: the controller venv has the mage-lxd wheel the plugins import; a venv ansible-test
    # makes for itself could only get it from an index.
    result = controller.run("ansible-test", "units", "--local", "--python", controller.python_version,
                            "--color", "no", cwd=controller.collection)
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 7 and "failed" not in result.stdout, result.stdout


def test_library_unit_tests(controller):
    # The mage_lxd library's own unit tests, against the wheel installed in this controller's Python.
    result = controller.run("pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "unit"),
                            cwd=controller.root, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    imported = controller.run("python", "-c", "import mage_lxd; print(mage_lxd.__file__)", cwd=controller.root)
    assert str(controller.root) in imported.stdout
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) > 100, result.stdout[-2000:]


def sanity(controller: Controller, *tests: str) -> str:
    """ansible-test sanity --venv on the installed collection (every test, or the named ones)."""
    # ansible-test bootstraps pip in its venvs with get-pip.py from a host this machine cannot
    # reach; it looks in its cache first, under the name of the pip version it wants.
    source = (controller.root / "venv").glob("lib/python*/site-packages/ansible_test/_internal/python_requirements.py")
    cache = controller.root / "home" / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    versions = re.findall(r"pip='(\d+(?:\.\d+)+)'", next(source).read_text())
    assert versions, "ansible-test no longer names its pip version where this test looks"
    for version in versions:
        shutil.copy(REPO / "tests" / "collection" / "get_pip_standin.py", cache / f"get_pip_{version.replace('.', '_')}.py")
    selected = [arg for name in tests for arg in ("--test", name)]
    result = controller.run("ansible-test", "sanity", "--venv", "--python", controller.python_version, "--color",
                            "no", *selected, cwd=controller.collection, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return output


def test_ansible_test_sanity_on_the_oldest_for_its_own_rules(controllers):
    # 2.16 checks module files for the Python 2 era boilerplate newer ansible-test dropped; its
    # other tests are older forms of the newest's, which run in full below (2.16 in full: 32 tests
    # passed by hand, about 7 minutes of its own venvs).
    output = sanity(controllers("oldest"), "future-import-boilerplate", "metaclass-boilerplate", "compile")
    ran = re.findall(r'Running sanity test "([\w-]+)"', output)
    assert set(ran) == {"future-import-boilerplate", "metaclass-boilerplate", "compile"}, ran


def test_ansible_test_sanity_on_the_newest(controllers):
    # Every test of the newest ansible-core: its rules are the strictest.
    output = sanity(controllers("newest"))
    ran = re.findall(r'Running sanity test "([\w-]+)"', output)
    assert len(ran) >= 20 and {"validate-modules", "import", "pylint", "ansible-doc"} <= set(ran), ran


def test_ignore_entries_each_give_a_reason():
    for ignore in sorted((COLLECTION_SOURCE / "tests" / "sanity").glob("ignore-*.txt")):
        for line in ignore.read_text().splitlines():
            assert not line.strip() or "#" in line, f"{ignore.name}: '{line}' has no reason"


def test_declared_versions_agree():
    galaxy = yaml.safe_load((COLLECTION_SOURCE / "galaxy.yml").read_text())
    runtime = yaml.safe_load((COLLECTION_SOURCE / "meta" / "runtime.yml").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    package_version = re.search(r'__version__ = "(.+)"', (REPO / "mage_lxd" / "__init__.py").read_text()).group(1)
    requirement = (COLLECTION_SOURCE / "requirements.txt").read_text()
    # The collection and the library it imports are released together.
    assert galaxy["version"] == pyproject["version"] == package_version
    assert f"mage-lxd=={galaxy['version']}" in requirement

    oldest_core, oldest_python = CONTROLLERS["oldest"]
    assert runtime["requires_ansible"] == f">={oldest_core}.0"
    assert pyproject["optional-dependencies"]["ansible"] == [f"ansible-core>={oldest_core}"]
    python_floor = re.search(r"python(\d+\.\d+)$", str(oldest_python)).group(1)
    assert pyproject["requires-python"] == f">={python_floor}"
    assert not any("ansible-core" in dependency for dependency in pyproject["dependencies"])
    readme = (REPO / "README.md").read_text()
    assert f"ansible-core {oldest_core} or later" in readme and f"Python {python_floor} or later" in readme
    assert f"tested on {oldest_core} and {CONTROLLERS['newest'][0]}" in readme


def test_exact_pins_stay_in_the_lab_requirements():
    pinned = [line for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line]
    assert any(line.startswith("ansible-core==") for line in pinned)
    assert "==" not in "".join(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def test_the_collection_tree_is_the_checkout():
    # Every plugin folder, the role, the playbooks and the templates are links to the checkout's
    # own files, not copies: one set of files for both ways of running them.
    links = {"plugins/inventory": "inventory_plugins", "plugins/connection": "connection_plugins",
             "plugins/lookup": "lookup_plugins", "plugins/action": "action_plugins", "plugins/modules": "library",
             "plugins/filter": "filter_plugins", "plugins/doc_fragments": "doc_fragments",
             "roles/provisioning": "roles/mage.lxd-provisioning", "playbooks": "playbooks", "templates": "templates"}
    for inside, target in links.items():
        path = COLLECTION_SOURCE / inside
        assert path.is_symlink() and path.resolve() == (REPO / target).resolve(), inside
