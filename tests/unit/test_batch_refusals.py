"""A refused batch writes nothing: the scratch profiles LXD judges config with come last, only when
every other check passed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.batch import BatchOptions, _check
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import InstanceFacts, plan_instance
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi

IMAGE = {"type": "image", "alias": "mage/debian-12"}
SHOP = {"name": "shop.example.org", "pass": 80}


class WritesRecorded(RecordedApi):
    """The recorded LXD 5.0.2, keeping every write; LXD takes every scratch profile."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def post(self, path: str, body: Any, params: Mapping[str, str] | None = None) -> Any:
        self.writes.append(f"POST {path} {body['name']}")

    def delete(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        self.writes.append(f"DELETE {path}")


def _new_instances(*entries: dict) -> tuple[list, dict]:
    # New instances in a project this run creates: nothing else of it needs reading.
    specs = [parse_spec({"image": "mage/debian-12", "project": "p", "config": {"limits.cpu": "1"}, **entry})
             for entry in entries]
    return specs, {f"{spec.name}/p": plan_instance(spec, InstanceFacts(current=None, image_source=IMAGE)) for spec in specs}


def test_a_batch_that_passes_every_other_check_is_offered_to_lxd_as_scratch_profiles():
    api = WritesRecorded()
    specs, plans = _new_instances({"name": "web1"})
    assert _check(api, specs, plans, {"p"}, BatchOptions()) == []
    assert [write.split("-")[0] for write in api.writes] == ["POST profiles mage", "DELETE profiles/mage"]


@pytest.mark.parametrize("entries, options, refusal", [
    (({"name": "web1", "proxy": [SHOP]}, {"name": "web2", "proxy": [SHOP]}), BatchOptions(),
     "instance 'web2': proxy[0] shop.example.org/ is already routed by instance 'web1'"),
    (({"name": "web1", "config": {"security.privileged": "true"}},), BatchOptions(allow_unsafe=False),
     "security.privileged=true runs it as the host's root (no user namespace) (allow_unsafe is false)."),
])
def test_a_batch_another_check_refuses_never_reaches_the_scratch_profiles(entries, options, refusal):
    api = WritesRecorded()
    specs, plans = _new_instances(*entries)
    with pytest.raises(OptionError) as refused:
        _check(api, specs, plans, {"p"}, options)
    assert refusal in str(refused.value) and str(refused.value).endswith("Nothing was changed.")
    assert api.writes == []


def test_check_mode_offers_nothing_and_says_so():
    api = WritesRecorded()
    specs, plans = _new_instances({"name": "web1"})
    warnings = _check(api, specs, plans, {"p"}, BatchOptions(check_mode=True))
    assert api.writes == [] and warnings[0].startswith("check mode: config and devices were not offered to LXD")
