# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every plugin's DOCUMENTATION, EXAMPLES and RETURN: valid YAML, examples in FQCN, version_added in the
changelog, and RETURN keys that are the keys the code really returns (built from recorded LXD answers).

The docs are read as ansible-doc reads them, from the file's source (nothing is imported for that)."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.playbook.task import Task

from ansible_collections.mage.lxd.plugins.action.mage_lxd_instance import ActionModule
from ansible_collections.mage.lxd.plugins.filter.mage_lxd import mage_lxd_sites
from ansible_collections.mage.lxd.plugins.filter.mage_lxd_proxy_files import mage_lxd_proxy_files
from ansible_collections.mage.lxd.plugins.lookup.mage_lxd import _pick
from ansible_collections.mage.lxd.plugins.plugin_utils import batch
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import NotFoundError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import InventoryOptions, host_variables
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi
from ansible_collections.mage.lxd.tests.unit.collection_info import collection_info

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "tests" / "unit"

# The plugin types the collection has, as changelog.yaml names them (modules have their own section).
PLUGIN_DIRS = {"modules": "module", "inventory": "inventory", "connection": "connection", "lookup": "lookup",
               "filter": "filter"}
PLUGINS = sorted(path for folder in PLUGIN_DIRS for path in (ROOT / "plugins" / folder).glob("*.py")
                 if path.name != "__init__.py")
# Keys every task result may have, which modules do not document.
COMMON_RESULT_KEYS = {"changed", "failed"}


class StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice (PyYAML would keep the last one silently)."""


def _no_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(key_node, deep=deep) for key_node, _value_node in node.value]
    twice = sorted({str(key) for key in keys if keys.count(key) > 1})
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"key(s) given twice: {', '.join(twice)}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def docs(path: Path) -> dict[str, str]:
    """The DOCUMENTATION, EXAMPLES and RETURN strings a plugin file assigns."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def load(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader


def examples(path: Path) -> list[Any]:
    """The EXAMPLES as YAML: one document (ansible-test's yamllint refuses several), except the
    inventory's, which is several inventory files one after another, each starting at `plugin:`."""
    text = docs(path)["EXAMPLES"]
    if path.parent.name != "inventory":
        return [load(text)]
    files, current = [], []
    for line in text.splitlines():
        if line.startswith("plugin:") and any(item.strip() and not item.startswith("#") for item in current):
            files.append(current)
            current = []
        current.append(line)
    return [load("\n".join(lines)) for lines in [*files, current]]


def plugin_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def changelog() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())


# --- DOCUMENTATION and version_added ---------------------------------------------------------------


def test_every_plugin_type_is_found():
    assert {path.parent.name for path in PLUGINS} == set(PLUGIN_DIRS)


@pytest.mark.parametrize("path", PLUGINS, ids=plugin_id)
def test_documentation_examples_and_return_are_yaml(path):
    found = docs(path)
    assert set(found) >= {"DOCUMENTATION", "EXAMPLES"}, "a plugin documents itself and gives examples"
    doc = load(found["DOCUMENTATION"])
    # ansible-doc finds a plugin's docs by its file's name; a filter's by the name the file's
    # FilterModule gives it.
    if path.parent.name == "filter":
        assert f'"{doc["name"]}":' in path.read_text(), "the file provides the filter it documents"
    else:
        assert (doc.get("module") or doc.get("name")) == path.stem
    assert doc["short_description"] and doc["description"] and doc["author"]
    assert "\n---" not in found["EXAMPLES"], "one YAML document (ansible-test's yamllint refuses several)"
    assert all(examples(path))
    if path.parent.name in ("modules", "lookup", "filter"):
        assert isinstance(load(found["RETURN"]), dict), "modules, lookups and filters document what they return"


@pytest.mark.parametrize("path", PLUGINS, ids=plugin_id)
def test_version_added_is_a_release_that_lists_the_plugin(path):
    doc = load(docs(path)["DOCUMENTATION"])
    name = doc.get("module") or doc["name"]
    version = doc.get("version_added")
    assert isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+", version), \
        f"{plugin_id(path)}: version_added must be a quoted collection version, not {version!r}"
    releases = changelog()["releases"]
    upcoming = collection_info()["version"]
    if version == upcoming and upcoming not in releases:
        # New in the version galaxy.yml builds, which antsibull-changelog lists when it is released.
        return
    assert version in releases, (f"{plugin_id(path)}: version_added {version} is neither a release in "
                                 f"changelog.yaml nor galaxy.yml's unreleased {upcoming}")
    release = releases[version]
    kind = PLUGIN_DIRS[path.parent.name]
    listed = release.get("modules", []) if kind == "module" else release.get("plugins", {}).get(kind, [])
    assert name in [entry["name"] for entry in listed], \
        f"changelog.yaml's {version} does not list {kind} {name} among its new plugins"


def plugin_name(path: Path) -> str:
    doc = load(docs(path)["DOCUMENTATION"])
    return doc.get("module") or doc["name"]


def test_the_changelog_lists_no_plugin_the_collection_lacks():
    have = {(PLUGIN_DIRS[path.parent.name], plugin_name(path)) for path in PLUGINS}
    for version, release in changelog()["releases"].items():
        listed = {("module", entry["name"]) for entry in release.get("modules", [])}
        listed |= {(kind, entry["name"]) for kind, entries in release.get("plugins", {}).items() for entry in entries}
        assert listed <= have, f"{version} lists {sorted(listed - have)}"


# --- EXAMPLES in FQCN -------------------------------------------------------------------------------

TASK_KEYWORDS = set(Task.fattributes) | {"local_action"}
BLOCK_KEYS = ("block", "rescue", "always")
PLAY_TASK_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")
FQCN = re.compile(r"^(mage\.lxd|ansible\.builtin)\.[a-z0-9_]+$")
LOOKUP_CALL = re.compile(r"\b(?:lookup|query|q)\(\s*['\"]([^'\"]+)['\"]")
# Our filters, used without their collection's name: `| mage_lxd_sites(`.
SHORT_FILTER = re.compile(r"\|\s*(mage_lxd_\w+)")


def tasks_of(document: Any) -> list[dict[str, Any]]:
    """The tasks of an EXAMPLES document that is a task list or a playbook (blocks opened); none of
    one that is a mapping (an inventory source, variables)."""
    found = []
    for item in document if isinstance(document, list) else []:
        if not isinstance(item, dict):
            continue
        if "hosts" in item or "import_playbook" in item:
            found += [task for key in PLAY_TASK_KEYS for task in tasks_of(item.get(key) or [])]
        elif any(key in item for key in BLOCK_KEYS):
            found += [task for key in BLOCK_KEYS for task in tasks_of(item.get(key) or [])]
        else:
            found.append(item)
    return found


def module_of(task: dict[str, Any]) -> str:
    [name] = [key for key in task if key not in TASK_KEYWORDS and not key.startswith("with_")]
    return name


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in strings_in(key) + strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return [value] if isinstance(value, str) else []


def values_of(value: Any, wanted: str) -> list[Any]:
    """Every value of the key `wanted`, at any depth."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in ([inner] if key == wanted else []) + values_of(inner, wanted)]
    if isinstance(value, list):
        return [item for inner in value for item in values_of(inner, wanted)]
    return []


@pytest.mark.parametrize("path", PLUGINS, ids=plugin_id)
def test_examples_name_modules_lookups_filters_connections_and_plugins_by_fqcn(path):
    documents = examples(path)
    tasks = [task for document in documents for task in tasks_of(document)]
    for task in tasks:
        assert FQCN.match(module_of(task)), f"{plugin_id(path)}: task '{task.get('name')}' runs {module_of(task)}"
    if path.parent.name in ("modules", "lookup", "connection"):
        assert tasks, f"{plugin_id(path)}: the examples are tasks"
    texts = [text for document in documents for text in strings_in(document)]
    for text in texts:
        for name in LOOKUP_CALL.findall(text):
            assert FQCN.match(name), f"{plugin_id(path)}: lookup '{name}' in {text!r}"
        assert not SHORT_FILTER.findall(text), f"{plugin_id(path)}: a mage.lxd filter without FQCN in {text!r}"
    for key in ("plugin", "cache_plugin", "ansible_connection"):
        for value in values_of(documents, key):
            assert FQCN.match(str(value)), f"{plugin_id(path)}: {key}: {value}"
        # Also where a comment shows an inventory file.
        for value in re.findall(rf"\b{key}[:=]\s*([^\s,]+)", docs(path)["EXAMPLES"]):
            assert FQCN.match(value.strip("'\"")), f"{plugin_id(path)}: {key}: {value}"
    if path.parent.name == "filter":
        assert any(f"mage.lxd.{plugin_name(path)}(" in text for text in texts), "the filter's example uses it"


def test_the_inventory_and_connection_examples_name_the_plugins_as_users_write_them():
    inventory = examples(ROOT / "plugins" / "inventory" / "mage_lxd.py")
    assert [document["plugin"] for document in inventory] == ["mage.lxd.mage_lxd"] * 4
    assert inventory[1]["remotes"][0]["name"] == "prod", "the second file is read whole"
    connection = examples(ROOT / "plugins" / "connection" / "mage_lxd.py")
    assert values_of(connection, "ansible_connection") == ["mage.lxd.mage_lxd"]


# --- RETURN: what the code returns ------------------------------------------------------------------


def returns(path: str) -> dict[str, Any]:
    return load(docs(ROOT / "plugins" / path)["RETURN"])


@pytest.mark.parametrize("path", [path for path in PLUGINS if path.parent.name == "modules"], ids=plugin_id)
def test_module_return_values_say_when_and_what(path):
    for key, value in load(docs(path)["RETURN"]).items():
        assert {"description", "returned", "type"} <= set(value), f"{plugin_id(path)}: {key}"
        assert key not in COMMON_RESULT_KEYS


CLUSTER = UNIT / "recorded" / "lxd-5.0.2-cluster.json"
# A remote only these tests use: converge_batch takes a lock per remote in the temporary directory,
# which a run against the lab's own address would share.
RECORDED_REMOTE = Remote(name="cluster", url="https://recorded-cluster.invalid:8443")


class ReplayApi(RecordedApi):
    """LxdApi as converge_batch uses it in check mode, answered from the recorded cluster (one running
    instance on mage-m1, one on mage-m2, which is down). The recording lists instances and projects;
    the reads of one instance, of a project's instances and of a project are answered from those lists
    (the project as existing, with the profiles its instances use)."""

    def __init__(self, remote: Remote, log: Any = None, project: str | None = None, timeout: Any = None) -> None:
        super().__init__(remote, path=CLUSTER)
        self.project = project or "default"
        self.listed = self.answers["GET /1.0/instances all-projects=true recursion=1"]

    def _in(self, project: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(item) for item in self.listed if item["project"] == project]

    def get_with_etag(self, path: str) -> tuple[dict[str, Any], str]:
        self.requests.append(f"GET /1.0/{path} project={self.project}")
        for item in self._in(self.project):
            if path == f"instances/{item['name']}":
                return item, '"recorded"'
        raise NotFoundError(f"not recorded: {path}")

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        params = dict(params or {})
        project = params.pop("project", self.project)
        if path == "instances" and params == {"recursion": "1"}:
            return self._in(project)
        if path.startswith("projects/") and f"/1.0/{path}" in self.answers["GET /1.0/projects"]:
            return {"name": path.removeprefix("projects/"), "config": {}}
        if path == "profiles" and params == {"recursion": "1"}:
            used = sorted({name for item in self._in(project) for name in item.get("profiles") or []})
            return [{"name": name, "description": "", "config": {}, "devices": {}} for name in used]
        return super().get(path, params or None)


def instance_task(monkeypatch, entries: list[dict[str, Any]], as_list: bool) -> dict[str, Any]:
    """The result mage_lxd_instance returns for `entries`, in check mode on the recorded cluster: the
    library's converge_batch plans the batch from the recorded answers, the action builds the result."""
    monkeypatch.setattr(batch, "LxdApi", ReplayApi)
    converged = batch.converge_batch(RECORDED_REMOTE, [parse_spec(entry) for entry in entries],
                                     batch.BatchOptions(check_mode=True))
    action = ActionModule.__new__(ActionModule)
    # ansible-core 2.21's ActionBase.add_host needs a running task; what it is given is in the result.
    action.add_host = lambda *args, **kwargs: None
    return action._report(converged.projects, converged.instances, RECORDED_REMOTE, {}, as_list, {})


@pytest.fixture()
def instance_results(monkeypatch):
    return {
        "single": instance_task(monkeypatch, [{"name": "mage-rec-c1"}], as_list=False),
        "single failed": instance_task(monkeypatch, [{"name": "mage-rec-c2"}], as_list=False),
        "list": instance_task(monkeypatch, [{"name": "mage-rec-c1"}, {"name": "mage-rec-c2"},
                                            {"name": "mage-rec-gone", "state": "absent"}], as_list=True),
    }


def test_the_recorded_cluster_gives_every_kind_of_instance_result(instance_results):
    single, failed, listed = instance_results["single"], instance_results["single failed"], instance_results["list"]
    assert single["status"] == "running" and single["location"] == "mage-m1" and "add_host" in single
    assert failed["failed"] and "member status: offline" in failed["msg"]
    assert [item.get("status") for item in listed["instances"]] == ["running", None, "absent"]
    assert listed["instances"][1]["failed"] and listed["failed"]


def test_mage_lxd_instance_documents_exactly_the_keys_it_returns(instance_results):
    documented = returns("modules/mage_lxd_instance.py")
    returned = set().union(*(result.keys() for result in instance_results.values())) - COMMON_RESULT_KEYS
    assert set(documented) == returned
    entries = instance_results["list"]["instances"] + [instance_results["single"]]
    entry_keys = set().union(*(item.keys() for item in instance_results["list"]["instances"]))
    assert set(documented["instances"]["contains"]) == entry_keys
    assert set(documented["projects"]["contains"]) == set().union(*(p.keys() for p in instance_results["list"]["projects"]))
    assert set(documented["add_host"]["contains"]) == set(instance_results["single"]["add_host"])
    assert set(documented["add_host"]["contains"]["host_vars"]["sample"]) <= \
        {"ansible_connection", "ansible_host", *instance_results["single"]["add_host"]["host_vars"]}
    # What the issue caught: status is LXD's status, not the state asked for.
    assert documented["status"]["sample"] == "running"
    assert all(item["status"] in ("running", "stopped", "frozen", "absent") for item in entries if "status" in item)
    for key, value in documented.items():
        if value["returned"] == "always":
            assert all(key in result for result in instance_results.values()), key


def test_the_lookup_documents_the_keys_of_an_instance():
    snapshot = take_snapshot(RecordedApi(), ["mage-rec-a", "mage-rec-b"])
    described = [_pick(host_variables(item, Remote(), InventoryOptions()), None) for item in snapshot["instances"]]
    documented = returns("lookup/mage_lxd.py")
    assert list(documented) == ["_raw"]
    assert all(set(documented["_raw"]["contains"]) == set(item) for item in described)


def test_the_filters_document_the_keys_of_their_plans():
    hostvars = {"web1": {"lxd_address": "10.187.33.196", "lxd_status": "running", "mage_lxd_project": "default",
                         "lxd_mage": {"proxy": [{"name": "web1.example.org", "pass": 8080, "htpasswd": "staff"}]}}}
    plan = mage_lxd_sites(hostvars, ["web1"], proxy="mageproxy")
    documented = returns("filter/mage_lxd.py")["_value"]["contains"]
    assert set(documented) == set(plan)
    [site] = plan["sites"]
    assert set(documented["sites"]["contains"]) == set(site)
    assert set(documented["sites"]["contains"]["locations"]["contains"]) == set(site["locations"][0])
    files = mage_lxd_proxy_files(plan["needs_files"], {}, {"staff": ["alice:$2y$05$abc"]})
    assert set(returns("filter/mage_lxd_proxy_files.py")["_value"]["contains"]) == set(files)
