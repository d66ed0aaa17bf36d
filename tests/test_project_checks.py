"""Checks CI runs on the whole repository: ansible-doc renders every plugin, ansible-lint passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxd_lab import REPO, ansible

PLUGIN_DIRS = {
    "inventory": "inventory_plugins",
    "connection": "connection_plugins",
    "lookup": "lookup_plugins",
    "filter": "filter_plugins",
    "module": "library",
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
    # The logic lives in mage_lxd/; a plugin file that grows past this is doing too much itself.
    for kind, name in plugins():
        path: Path = REPO / PLUGIN_DIRS[kind] / ("mage_lxd.py" if name == "mage_lxd_sites" else f"{name}.py")
        code = [line for line in path.read_text().split('"""')[-1].splitlines() if line.strip()]
        assert len(code) < 250, f"{path} has {len(code)} lines of code after its documentation"
