# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' meta/argument_specs.yml: what Ansible checks when a role starts.

Checked here with the validator Ansible's validate_argument_spec uses: the seed's format (and the
repository's own playbooks) keep validating, what is clearly wrong is refused, and the specs agree with
defaults/main.yml and with meta/runtime.yml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.mage.lxd.tests.unit.collection_info import collection_info

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
ROLE_NAMES = ["mageproxy", "provisioning"]

# The seed's test-lxd.yml (mage.lxd-provisioning.md) as its author wrote it: underscores in names, the
# mount string under proxy, a `pass` the seed left unterminated (here a port). The role takes it as
# it is; mage.lxd.mage_lxd_instance then judges each entry (it refuses the name and the mount string
# with a Fix), so the role's spec leaves the entries free.
SEED = yaml.safe_load("""
lxd_provisioning_inventory:
  - name: "ubu_test_1"
    image: "ubuntu/xenial/amd64"
    nat:
      - extif: enp3s0
        intif: lxdbr0
        extport: 8080
        intport: 8080
    proxy:
      - name: "ubu1.vaizard.xyz"
        path: "/postgres/"
        pass: "8080"
  - name: "ubu_test_2"
    image: "ubuntu/xenial/amd64"
    proxy:
      - "/sys/fs/cgroup:/sys/fs/cgroup:ro"
""")


def spec(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())


def errors(role: str, values: dict[str, Any], entry_point: str = "main") -> list[str]:
    return ArgumentSpecValidator(spec(role)[entry_point]["options"]).validate(values).error_messages


def role_params(playbook: str) -> dict[str, Any]:
    """The parameters a playbook's first play gives its role."""
    play = yaml.safe_load((ROOT / "playbooks" / playbook).read_text())[0]
    [role] = play["roles"]
    return {key: value for key, value in role.items() if key != "role"}


def templated(value: Any) -> bool:
    return "{{" in str(value)


def test_the_seeds_own_declaration_validates():
    assert errors("provisioning", SEED) == []


@pytest.mark.parametrize("playbook", ["test-lxd.yml", "site.yml"])
def test_the_repositorys_playbooks_validate(playbook):
    assert errors("provisioning", role_params(playbook)) == []


def test_entries_with_every_kind_of_option_validate():
    entry = {"name": "web1", "image": {"alias": "debian/12", "server": "https://images.example.org", "protocol": "simplestreams"},
             "state": "stopped", "profiles": ["default"], "config": {"limits.memory": "512MiB"},
             "devices": {"data": {"type": "disk", "source": "/srv", "path": "/srv"}}, "mounts": ["/a:/b:ro"],
             "nat": [{"extport": 8080, "listen": {"m1": "10.0.0.1"}, "backend": "forward", "intif": "lxdbr0"}],
             "proxy": [{"name": "web1.example.org", "pass": 80, "tls": "acme"}], "target": "@edge"}
    profiles = [{"name": "small", "config": {"limits.cpu": "1"}, "devices": {}}]
    assert errors("provisioning", {"lxd_provisioning_inventory": [entry], "lxd_provisioning_profiles": profiles}) == []


@pytest.mark.parametrize(("values", "message"), [
    ({"lxd_provisioning_inventory": {"name": "web1"}}, "lxd_provisioning_inventory"),
    ({"lxd_provisioning_inventory": [["web1"]]}, "lxd_provisioning_inventory"),
    ({"lxd_provisioning_create_project": "maybe"}, "lxd_provisioning_create_project"),
    ({"lxd_provisioning_defer_instance_failures": "sometimes"}, "lxd_provisioning_defer_instance_failures"),
    ({"lxd_provisioning_profiles": "small"}, "lxd_provisioning_profiles"),
])
def test_the_outer_options_are_strict(values, message):
    found = errors("provisioning", values)
    assert found and message in " ".join(found)


def test_mageproxy_refuses_an_unknown_acme_setting_and_a_word_for_a_flag():
    assert "dayz" in " ".join(errors("mageproxy", {"mageproxy_acme": {"email": "ops@example.org", "dayz": 30}}))
    assert errors("mageproxy", {"mageproxy_ipv6": "perhaps"})
    assert errors("mageproxy", {"mageproxy_create": "perhaps"}, "create")


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_default_is_specified_with_the_same_value(role):
    entry_points = spec(role)
    options = {name: option for entry in entry_points.values() for name, option in entry["options"].items()}
    assert set(options) == set(defaults(role)), "defaults/main.yml and the spec name the same variables"
    for name, value in defaults(role).items():
        if templated(value):
            assert "default" not in options[name], f"{name}: a template default is described, not repeated"
            assert "Default" in str(options[name]["description"]), f"{name}: its description says its default"
        else:
            assert options[name].get("default") == value, name
    for entry_point, entry in entry_points.items():
        literal = {name: value for name, value in defaults(role).items()
                   if name in entry["options"] and not templated(value)}
        assert errors(role, literal, entry_point) == [], f"{role} {entry_point}: its own defaults validate"
        assert entry["short_description"] and entry["version_added"]


def test_the_mageproxy_entry_points_cover_what_their_tasks_use():
    entry_points = spec("mageproxy")
    # main renders the templates too.
    templates = "".join(path.read_text() for path in (ROOT / "templates" / "mageproxy").glob("*.j2"))
    for entry_point, tasks in (("main", "main.yml"), ("create", "create.yml"), ("delete", "delete.yml")):
        text = (ROLES / "mageproxy" / "tasks" / tasks).read_text() + (templates if entry_point == "main" else "")
        used = {name for name in defaults("mageproxy") if re.search(rf"\b{name}\b", text)}
        assert used <= set(entry_points[entry_point]["options"]), f"{entry_point}: {sorted(used)}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_meta_main_agrees_with_meta_runtime(role):
    requires = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]
    galaxy = collection_info()
    info = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text())["galaxy_info"]
    assert requires == f">={info['min_ansible_version']}.0"
    assert info["namespace"] == galaxy["namespace"] and [info["license"]] == galaxy["license"]


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_the_changelog_lists_each_role_in_the_release_it_was_added(role):
    versions = {entry["version_added"] for entry in spec(role).values()}
    assert len(versions) == 1
    [version] = versions
    release = yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())["releases"][version]
    assert role in [entry["name"] for entry in release.get("objects", {}).get("role", [])]
