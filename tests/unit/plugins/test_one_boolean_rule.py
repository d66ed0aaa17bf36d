"""One boolean rule: every boolean of mage_lxd_instance, of a route and of the mageproxy role reads each
of Ansible's spellings alike, and refuses a bad value with the same message."""

from __future__ import annotations

import ast
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
from ansible_collections.mage.lxd.plugins.plugin_utils.routes import parse_route

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


READERS: list[tuple[str, Callable[[Any], bool]]] = [
    *[(f"mage_lxd_instance {name}", lambda value, name=name: _read_instance_option(name, value)) for name in BOOLEANS],
    *[(f"route {name}", lambda value, name=name: _read_route_flag(name, value))
      for name in ("strip_prefix", "websockets", "balance", "redirect_https")],
    *[(f"mageproxy {name}", lambda value, name=name: mage_lxd_bool(value, name))
      for name in ("mageproxy_ipv6", "mageproxy_create")],
]


def test_every_boolean_of_the_module_is_covered():
    assert BOOLEANS == ["allow_unsafe", "bootstrap", "create_project", "ephemeral", "rebuild", "validate_certs"]


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


def test_the_mageproxy_template_reads_ipv6_with_the_same_rule():
    template = (ROOT / "templates" / "mageproxy" / "mage-sites.conf.j2").read_text()
    uses = re.findall(r"mageproxy_ipv6[^%}]*", template)
    assert uses and all("mage.lxd.mage_lxd_bool('mageproxy_ipv6')" in use for use in uses), uses
    tasks = (ROOT / "roles" / "mageproxy" / "tasks" / "create.yml").read_text()
    assert "mageproxy_create | bool" not in tasks and "mage_lxd_bool('mageproxy_create')" in tasks
