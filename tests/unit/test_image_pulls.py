"""An image is downloaded once per batch, and its download progress is shown while it comes in:
the batch's executor (_apply_instances) and an instance's creation (_create), on fakes of the
LXD API that record what they were asked."""

from __future__ import annotations

import threading

from ansible_collections.mage.lxd.plugins.plugin_utils import batch
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import NotFoundError, RemoteError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import (
    ImagePull,
    InstanceFacts,
    InstancePlan,
    InstanceResult,
    _create,
)

SERVER = "https://127.0.0.1:18445"
PULL_SOURCE = {"type": "image", "mode": "pull", "server": SERVER, "protocol": "simplestreams", "alias": "debian/12"}


def _plan(name, pull):
    spec = parse_spec({"name": name, "image": "debian/12", "bootstrap": False, "wait_for_address": "none"})
    source = dict(PULL_SOURCE) if pull else {"type": "image", "alias": "mage/busybox"}
    return InstancePlan(spec=spec, facts=InstanceFacts(current=None, pull=pull),
                        result=InstanceResult(name=name, project="default"),
                        create={"name": name, "type": "container", "source": source})


class Images:
    """The server's image store: what _use_pulled_image reads; a pull puts the image there."""

    def __init__(self):
        self.have = set()
        self.lock = threading.Lock()

    def get(self, path, params=None):  # noqa: ARG002 - LxdApi's signature
        with self.lock:
            if path.removeprefix("images/") in self.have:
                return {}
        raise NotFoundError(path)


def test_instances_that_need_one_image_wait_for_its_pull_then_use_it_by_fingerprint(monkeypatch):
    debian = ImagePull("f22c112d4468", "default", "debian/12", SERVER)
    plans = {name: _plan(name, debian if name != "other" else None) for name in ("a", "b", "other", "c")}
    images = Images()
    created = []

    def apply_instance(api, plan, progress):  # noqa: ARG001 - apply_instance's signature
        source = plan.create["source"]
        with images.lock:
            created.append((plan.spec.name, source.get("mode"), source.get("fingerprint")))
            if source.get("mode") == "pull":
                images.have.add(plan.facts.pull.fingerprint)
        return plan.result

    monkeypatch.setattr(batch, "apply_instance", apply_instance)
    failures = batch._apply_instances(plans, lambda spec: images, forks=4)
    assert failures == {}
    # One pull, by the first instance that needs the image; every other one waited for it.
    assert [entry for entry in created if entry[1] == "pull"] == [("a", "pull", None)]
    assert created.index(("a", "pull", None)) < min(created.index((name, None, "f22c112d4468")) for name in "bc")
    assert ("other", None, None) in created


def test_a_failed_pull_lets_the_next_instance_pull_it_itself(monkeypatch):
    debian = ImagePull("f22c112d4468", "default", "debian/12", SERVER)
    plans = {name: _plan(name, debian) for name in ("a", "b")}
    images = Images()
    sources = []

    def apply_instance(api, plan, progress):  # noqa: ARG001 - apply_instance's signature
        sources.append((plan.spec.name, dict(plan.create["source"])))
        if plan.spec.name == "a":
            raise RemoteError("instance 'a': LXD could not pull image")
        return plan.result

    monkeypatch.setattr(batch, "apply_instance", apply_instance)
    failures = batch._apply_instances(plans, lambda spec: images, forks=2)
    assert set(failures) == {"a"} and failures["a"]["failed"]
    assert sources == [("a", PULL_SOURCE), ("b", PULL_SOURCE)]


class Creating:
    """POST /1.0/instances as LXD answers it: the operation's metadata as it changes, then the instance."""

    def __init__(self, updates):
        self.updates = updates
        self.posted = []

    def post_watched(self, path, body, params, watch):  # noqa: ARG002 - LxdApi's signature
        self.posted.append(body)
        for metadata in self.updates:
            watch(metadata)
        return {}

    def get_with_etag(self, path):
        return {"name": path.rsplit("/", 1)[1], "status": "Stopped", "location": "none"}, "etag"


def test_a_pull_shows_each_new_progress_line_and_the_action_names_it():
    debian = ImagePull("f22c112d4468aaaa", "default", "debian/12", SERVER)
    plan = _plan("web1", debian)
    plan.result.actions.append("created")
    api = Creating([{}, {"download_progress": "metadata: 38% (24.99MB/s)"},
                    {"download_progress": "metadata: 38% (24.99MB/s)"}, {"download_progress": "metadata: 75% (25.01MB/s)"},
                    {"download_progress": "metadata: 100% (25.00MB/s)"}, {"create_instance_from_image_unpack_progress": "x"}])
    shown = []
    _create(api, plan, shown.append)
    prefix = f"instance 'web1' in project 'default': pulling image 'debian/12' (f22c112d4468) from {SERVER}: "
    assert shown == [prefix + line for line in ("metadata: 38% (24.99MB/s)", "metadata: 75% (25.01MB/s)",
                                                "metadata: 100% (25.00MB/s)")]
    assert plan.result.actions == ["created", f"pulled image 'debian/12' (f22c112d4468) from {SERVER}"]


def test_an_image_the_server_has_shows_nothing_and_claims_no_pull():
    plan = _plan("web1", None)
    plan.create["source"] = {"type": "image", "fingerprint": "f22c112d4468aaaa"}
    shown = []
    _create(Creating([{}, {"create_instance_from_image_unpack_progress": "Unpack: 100%"}]), plan, shown.append)
    assert shown == [] and not any(action.startswith("pulled") for action in plan.result.actions)
