"""Records read from the server (user.mage.*) are refused before parsing when too long or too deep,
and a hand-edited user.mage.managed never makes mage_lxd_instance crash or take keys for its own."""

from __future__ import annotations

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.provision import managed_record
from ansible_collections.mage.lxd.plugins.plugin_utils.records import MAX_RECORD_CHARS, RecordError, decode_record, nesting_depth

# About a kilobyte that raised RecursionError once parsed (Ansible's unsafe marking, templating).
NESTED = "[" * 600 + "]" * 600


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth('["[[[[", {"a": "}}}\\"[["}]') == 2
    assert nesting_depth("[" * 100, stop_above=5) == 6


@pytest.mark.parametrize("raw", [NESTED, "x" * (MAX_RECORD_CHARS + 1)])
def test_decode_record_refuses_before_parsing(raw):
    with pytest.raises(RecordError):
        decode_record(raw)
    assert issubclass(RecordError, ValueError)


@pytest.mark.parametrize("raw", [NESTED, '{"config": ' + NESTED + "}", '{"config": "limits.cpu"}', '{"config": 5}', "[1]"])
def test_a_hand_edited_managed_record_counts_nothing_as_ours(raw):
    # A string would have made every key it contains "ours" (substring test), a number a TypeError.
    assert managed_record(raw).get("config", []) == []


class InstancesApi:
    """The one request existing_routes makes, answered with instances as LXD lists them."""

    def __init__(self, instances):
        self.instances = instances

    def get(self, path, params=None):
        assert path == "instances"
        return self.instances


def test_a_route_record_too_deep_is_skipped_by_the_batch_check():
    from ansible_collections.mage.lxd.plugins.plugin_utils.batch_checks import existing_routes

    routes = [{"name": "ok.example.org", "path": "/", "pass": 80}]
    api = InstancesApi([{"name": "evil", "config": {"user.mage.proxy": NESTED}},
                        {"name": "good", "config": {"user.mage.proxy": '[{"name": "ok.example.org", "path": "/", "pass": 80}]'}}])
    assert existing_routes(api, "p", leave_out=()) == [("good", routes)]
