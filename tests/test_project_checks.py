"""Checks CI runs on the whole repository: ansible-doc renders every plugin, ansible-lint passes."""

from __future__ import annotations

import ast
import ipaddress
import re
import sys
from pathlib import Path

import pytest

from lxd_lab import REPO, ansible, lab_env

PLUGIN_DIRS = {
    "inventory": "plugins/inventory",
    "connection": "plugins/connection",
    "lookup": "plugins/lookup",
    "filter": "plugins/filter",
    "module": "plugins/modules",
}


def plugins() -> list[tuple[str, str]]:
    found = []
    for kind, directory in PLUGIN_DIRS.items():
        for path in sorted((REPO / directory).glob("*.py")) if (REPO / directory).is_dir() else []:
            # A filter file is documented per filter; each of ours holds one, named after its function
            # (mage_lxd.py holds mage_lxd_sites).
            found.append((kind, "mage_lxd_sites" if (kind, path.stem) == ("filter", "mage_lxd") else path.stem))
    return found


def test_every_plugin_directory_is_covered():
    assert set(plugins()) >= {("inventory", "mage_lxd"), ("connection", "mage_lxd"), ("lookup", "mage_lxd"),
                              ("module", "mage_lxd_instance"), ("filter", "mage_lxd_sites"),
                              ("filter", "mage_lxd_proxy_files")}


@pytest.mark.parametrize(("kind", "name"), plugins())
def test_ansible_doc_renders(kind, name):
    result = ansible("ansible-doc", "-t", kind, name)
    assert name in result.stdout
    assert "EXAMPLES" in result.stdout
    assert "ERROR" not in result.stderr and "WARNING" not in result.stderr


def test_ansible_lint_production_profile_passes():
    result = ansible("ansible-lint", "--profile", "production", "--nocolor", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_every_plugin_file_is_a_thin_adapter():
    # The logic lives in plugins/plugin_utils/; a plugin file that grows past this is doing too much itself.
    for kind, name in plugins():
        path: Path = REPO / PLUGIN_DIRS[kind] / ("mage_lxd.py" if name == "mage_lxd_sites" else f"{name}.py")
        code = [line for line in path.read_text().split('"""')[-1].splitlines() if line.strip()]
        assert len(code) < 250, f"{path} has {len(code)} lines of code after its documentation"


# Import names of the distributions the requirements files name, where the two differ.
IMPORT_NAMES = {"ansible-core": "ansible", "Jinja2": "jinja2", "PyYAML": "yaml"}
# What ansible-core itself brings, so the collection need not list it.
ANSIBLE_CORE_BRINGS = {"ansible", "jinja2", "yaml"}


def requirement_names(path: Path) -> set[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[<>=!~ \[]", line, maxsplit=1)[0] for line in lines if line}


def test_every_imported_library_is_declared_and_pinned():
    # The collection's requirements.txt lists what its plugins import beyond ansible-core; the
    # checkout's venv pins each of them (lab/requirements.txt).
    declared = requirement_names(REPO / "requirements.txt")
    pinned = {line.split("==")[0] for line in (REPO / "lab" / "requirements.txt").read_text().splitlines() if "==" in line}
    assert declared <= pinned, f"in requirements.txt but not pinned in lab/requirements.txt: {declared - pinned}"
    assert not declared & {"ansible-core", "ansible"}, "the collection runs on the user's own ansible-core"
    importable = {IMPORT_NAMES.get(name, name) for name in declared} | ANSIBLE_CORE_BRINGS | {"ansible_collections"}
    imported = set()
    for path in (REPO / "plugins").glob("*/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= importable, f"imported but not in requirements.txt: {third_party - importable}"
    assert {"websockets", "cryptography"} <= third_party, "the check no longer sees the library's imports"


SHORT_NAMES_PLAYBOOK = """\
- name: The checkout's short names resolve to the collection's files
  hosts: localhost
  gather_facts: false
  roles:
    - role: mage.lxd-provisioning
  tasks:
    - name: The action by its short name
      mage_lxd_instance:
        name: never-run
      when: false
"""


def test_the_short_names_keep_working_in_the_checkout(tmp_path):
    playbook = tmp_path / "short.yml"
    playbook.write_text(SHORT_NAMES_PLAYBOOK)
    # Resolves the role through roles/mage.lxd-provisioning and the action through library/.
    result = ansible("ansible-playbook", "--syntax-check", str(playbook), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # (test_ansible_doc_renders loads every plugin by its short name.)


def test_test_files_have_unique_basenames():
    # pytest imports test files by their basename (rootdir-relative, no packages): two files of one
    # name stop the collection of the whole suite.
    names = [path.name for path in (REPO / "tests").rglob("test_*.py") if "output" not in path.parts]
    assert len(names) == len(set(names)), sorted({name for name in names if names.count(name) > 1})


def test_the_lab_stays_on_this_machine_and_leaves_the_users_remotes_alone():
    # The image servers and HTTPS listeners the image and remote tests use: loopback addresses only.
    env = lab_env()
    for key in ("MAGE_IMAGE_SERVER_ADDRESS", "MAGE_LAB_HTTPS_ADDRESS", "MAGE_INCUS_HTTPS_ADDRESS"):
        host = env[key].rsplit(":", 1)[0].strip("[]")
        assert ipaddress.ip_address(host).is_loopback, f"lab.env {key}={env[key]} is not a loopback address"
    # No script of the lab adds, changes or removes a remote of the user's lxc or incus client, and
    # none turns TLS verification off (curl -k / --insecure) when it checks its image server.
    scripts = [*sorted((REPO / "lab").glob("*.sh")), *sorted((REPO / "lab").glob("*.py")), REPO / "run"]
    for path in scripts:
        text = path.read_text()
        assert not re.search(r"\b(lxc|incus)\b[^\n]*\bremote\s+(add|remove|rename|set-url|switch|set-default)\b",
                             text), path
        assert not re.search(r"\bcurl\b[^\n]*(\s-k\b|--insecure)", text), path
