"""One boolean rule: every boolean of mage_lxd_instance, of a route and of the roles (mageproxy, provisioning)
reads each of Ansible's spellings alike, and refuses a bad value with the same message. Each list of booleans
comes from where the option is declared: the module's documentation, the Route record, the roles'
argument specs."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from ansible.errors import AnsibleError

from ansible_collections.mage.lxd.plugins.action.mage_lxd_instance import TASK_ONLY, validated
from ansible_collections.mage.lxd.plugins.doc_fragments.mage_lxd import ModuleDocFragment
from ansible_collections.mage.lxd.plugins.filter.mage_lxd_bool import mage_lxd_bool
from ansible_collections.mage.lxd.plugins.plugin_utils.argspec import argument_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.batch import batch_options
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import MageLxdError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import remote_from_task_args
from ansible_collections.mage.lxd.plugins.plugin_utils.routes import HSTS_DEFAULT, ROUTE_KEYS, Route, parse_route

ROOT = Path(__file__).resolve().parents[3]
TRUE = [True, "true", "True", "yes", "YES", "on", "1", "y", "t", " yes ", 1, 1.0]
FALSE = [False, "false", "False", "no", "NO", "off", "0", "n", "f", 0, 0.0]
BAD = ["maybe", "2", 2, "", "nope", "yes please", [], {}]
REFUSAL = re.compile(r": '.*' is not a boolean\. Fix: use true or false \(yes/no, on/off, 1/0 also work\)\.$")


def _instance_options() -> dict[str, Any]:
    # The module's documented options as the action plugin gets them: its own and the fragment's.
    source = (ROOT / "plugins" / "modules" / "mage_lxd_instance.py").read_text()
    text = next(ast.literal_eval(node.value) for node in ast.parse(source).body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "DOCUMENTATION")
    return {**yaml.safe_load(ModuleDocFragment.MODULE)["options"], **yaml.safe_load(text)["options"]}


OPTIONS = _instance_options()
BOOLEANS = sorted(name for name, doc in OPTIONS.items() if doc.get("type") == "bool")


def _read_instance_option(name: str, value: Any) -> bool:
    """The value of option `name` as mage_lxd_instance reads it: the action's validation, then the library."""
    args = validated(argument_spec(OPTIONS), {"name": "web1", name: value}, "mage_lxd_instance")
    if name == "validate_certs":
        return remote_from_task_args(args, "mage_lxd_instance remote").validate_certs
    if name in TASK_ONLY:
        return getattr(batch_options(args, check_mode=False), name)
    entry = validated(argument_spec(OPTIONS, leave_out=TASK_ONLY), {"name": "web1", name: value},
                      "mage_lxd_instance: instances[0]")
    return getattr(parse_spec(entry), name)


def _read_route_flag(name: str, value: Any) -> bool:
    raw = {"name": "web1.example.org", "pass": 8080, name: value}
    if name == "redirect_https":
        raw["tls"] = "acme"
    return getattr(parse_route("web1", 0, raw), name)


# A route's booleans: the keys a user writes that the Route record keeps as a bool.
ROUTE_BOOLEANS = sorted(item.name for item in dataclasses.fields(Route) if item.type == "bool" and item.name in ROUTE_KEYS)
ROLES = sorted(path.name for path in (ROOT / "roles").iterdir() if path.is_dir() and not path.is_symlink())


def _role_booleans() -> dict[str, str]:
    """Each boolean variable of a role's argument specs (every entry point), with its role."""
    found = {}
    for role in ROLES:
        specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        for entry in specs.values():
            found.update({name: role for name, doc in (entry.get("options") or {}).items() if doc.get("type") == "bool"})
    return found


ROLE_BOOLEANS = _role_booleans()
# Where the roles read their variables: their tasks, and the templates mageproxy renders.
ROLE_SOURCES = sorted([*(path for role in ROLES for path in (ROOT / "roles" / role).glob("tasks/*.yml")),
                       *(ROOT / "templates").glob("**/*.j2")])


def _role_reads(name: str) -> list[str]:
    """How the roles read variable `name`: the filter it goes through, or the module option it is given to."""
    reads = []
    for path in ROLE_SOURCES:
        text = path.read_text()
        for use in re.finditer(rf"(?<!')\b{name}\b", text):  # not the name mage_lxd_bool is given
            line = text[text.rfind("\n", 0, use.start()) + 1:text.find("\n", use.end())]
            option = re.fullmatch(rf'\s*([a-z_]+): "{{{{ {name} }}}}"', line)
            if option:
                reads.append(f"option {option.group(1)}")
            elif re.match(rf"(?:\s*\|\s*default\([^)]*\))?\s*\|\s*mage\.lxd\.mage_lxd_bool\('{name}'\)", text[use.end():]):
                reads.append("mage_lxd_bool")
            else:
                reads.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    return reads


def _role_reader(name: str) -> Callable[[Any], bool]:
    # A role's boolean goes through mage_lxd_bool, or whole to a boolean option of mage_lxd_instance.
    option = next((read[len("option "):] for read in _role_reads(name) if read.startswith("option ")), None)
    if option:
        return lambda value: _read_instance_option(option, value)
    return lambda value: mage_lxd_bool(value, name)


READERS: list[tuple[str, Callable[[Any], bool]]] = [
    *[(f"mage_lxd_instance {name}", lambda value, name=name: _read_instance_option(name, value)) for name in BOOLEANS],
    *[(f"route {name}", lambda value, name=name: _read_route_flag(name, value)) for name in ROUTE_BOOLEANS],
    *[(f"{role} {name}", _role_reader(name)) for name, role in sorted(ROLE_BOOLEANS.items())],
]


def test_every_boolean_of_the_module_is_covered():
    assert BOOLEANS == ["allow_unsafe", "bootstrap", "create_project", "ephemeral", "rebuild", "validate_certs"]
    assert ROUTE_BOOLEANS == ["balance", "redirect_https", "strip_prefix", "websockets"]
    assert sorted(ROLE_BOOLEANS) == ["lxd_provisioning_create_project", "lxd_provisioning_defer_instance_failures",
                                     "mageproxy_create", "mageproxy_ipv6"]


@pytest.mark.parametrize("name", sorted(ROLE_BOOLEANS))
def test_the_roles_read_each_boolean_with_the_same_rule(name):
    # Not Jinja's `bool` (ansible-core's to_bool reads 'y' and 't' as false), nor the value as it came.
    reads = _role_reads(name)
    assert reads and all(read == "mage_lxd_bool" or read.removeprefix("option ") in BOOLEANS for read in reads), reads


def test_a_routes_hsts_reads_the_same_booleans_but_a_number_is_its_max_age_in_seconds():
    def hsts(value: Any) -> int:
        return parse_route("web1", 0, {"name": "web1.example.org", "pass": 8080, "tls": "acme", "hsts": value}).hsts

    # 1 and "1" are numbers first: a max-age of one second, never true (a year); 0 is none either way.
    def is_number(value: Any) -> bool:
        return type(value) is int or value in ("1", "0")  # pylint: disable=unidiomatic-typecheck

    assert [hsts(value) for value in TRUE if not is_number(value)] == [HSTS_DEFAULT] * (len(TRUE) - 2)
    assert [hsts(value) for value in FALSE if not is_number(value)] == [0] * (len(FALSE) - 2)
    assert (hsts(1), hsts("1"), hsts(0), hsts("0"), hsts(600), hsts("31536000")) == (1, 1, 0, 0, 600, 31536000)
    for value in ("maybe", "", "-1", -1, 10**9, "\u0661\u0662", " 60", []):
        with pytest.raises(MageLxdError, match=r"\.hsts: '.*' must be true, false or a max-age in seconds"):
            hsts(value)


def test_no_playbook_role_or_template_reads_a_boolean_with_jinjas_bool():
    # teardown.yml's teardown_mageproxy included: -e teardown_mageproxy=y must mean yes, a typo must fail.
    sources = [*(ROOT / "playbooks").glob("*.yml"), *ROLE_SOURCES]
    assert not [f"{path.relative_to(ROOT)}: {line.strip()}" for path in sources
                for line in path.read_text().splitlines() if re.search(r"\|\s*bool\b", line)]
    assert "teardown_mageproxy | default(false) | mage.lxd.mage_lxd_bool('teardown_mageproxy')" in \
        (ROOT / "playbooks" / "teardown.yml").read_text()


@pytest.fixture(autouse=True)
def _no_remote_from_the_environment(monkeypatch):
    for variable in ("MAGE_LXD_URL", "MAGE_LXD_CLIENT_CERT", "MAGE_LXD_CLIENT_KEY", "MAGE_LXD_SERVER_CERT",
                     "MAGE_LXD_TRUST_TOKEN"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize(("what", "read"), READERS, ids=[what for what, _read in READERS])
def test_each_spelling_gets_the_same_answer_everywhere(what, read):
    assert [read(value) for value in TRUE] == [True] * len(TRUE), what
    assert [read(value) for value in FALSE] == [False] * len(FALSE), what
    for value in BAD:
        with pytest.raises(Exception) as refused:  # each plugin type's own error class, one message
            read(value)
        message = str(refused.value)
        assert REFUSAL.search(message), (what, value, message)
        assert isinstance(refused.value, (MageLxdError, AnsibleError)), (what, value)
