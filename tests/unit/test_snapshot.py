"""The snapshot's requests and addresses, on answers recorded from the lab LXD."""

from __future__ import annotations

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import SnapshotFilters, take_snapshot
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi

PROJECTS = ["mage-rec-a", "mage-rec-b"]


def by_name(snapshot):
    return {item["name"]: item for item in snapshot["instances"]}


def test_one_instance_list_the_network_and_lease_list_per_project_and_no_state_when_leases_cover_every_nic():
    api = RecordedApi()
    snapshot = take_snapshot(api, PROJECTS)
    # Only the networks the NICs are on: the list of all (recursion=1) describes every host
    # interface, a veth per running container.
    assert api.requests == [
        "GET /1.0/projects",
        "GET /1.0/instances all-projects=true recursion=1",
        "GET /1.0/networks/magebr0 project=mage-rec-a",
        "GET /1.0/networks/magebr0 project=mage-rec-b",
        "GET /1.0/networks/magebr0/leases project=mage-rec-a",
        "GET /1.0/networks/magebr0/leases project=mage-rec-b",
    ]
    assert sorted(by_name(snapshot)) == ["db1", "odd1", "web1", "web2"]
    assert snapshot["remote"] == "local" and snapshot["server"]["version"] == "5.0.2"


def test_addresses_come_from_leases_by_mac_also_for_a_nic_whose_parent_is_the_managed_bridge():
    api = RecordedApi()
    instances = by_name(take_snapshot(api, PROJECTS))
    leases_a = api.answers["GET /1.0/networks/magebr0/leases project=mage-rec-a"]
    web1_lease = next(lease["address"] for lease in leases_a if lease["hostname"] == "web1")
    assert instances["web1"]["addresses"] == {"eth0": [{"family": "inet", "address": web1_lease, "network": "magebr0"}]}
    leases_b = api.answers["GET /1.0/networks/magebr0/leases project=mage-rec-b"]
    odd1_lease = next(lease["address"] for lease in leases_b if lease["hostname"] == "odd1")
    assert instances["odd1"]["addresses"] == {"eth0": [{"family": "inet", "address": odd1_lease, "network": "magebr0"}]}
    assert instances["db1"]["addresses"] == {}


def test_a_nic_on_an_unmanaged_network_costs_a_state_request_and_only_its_own_interface_counts():
    api = RecordedApi()
    listed = api.answers["GET /1.0/instances all-projects=true recursion=1"]
    odd1 = next(item for item in listed if item["name"] == "odd1")
    # mageinc0 is a bridge this LXD does not manage (Incus's, in the lab).
    odd1["expanded_devices"]["eth0"]["parent"] = "mageinc0"
    state = api.answers["GET /1.0/instances/odd1/state project=mage-rec-b"]
    state["network"]["docker0"] = {"hwaddr": "02:42:00:00:00:01", "addresses": [
        {"family": "inet", "address": "10.187.33.196", "netmask": "16", "scope": "global"}]}
    instances = by_name(take_snapshot(api, PROJECTS))
    assert "GET /1.0/instances/odd1/state project=mage-rec-b" in api.requests
    odd1_inet = [a["address"] for a in state["network"]["eth0"]["addresses"] if a["scope"] == "global"]
    assert instances["odd1"]["addresses"] == {"eth0": [{"family": "inet", "address": odd1_inet[0], "network": ""}]}


def test_state_source_asks_every_running_instance_and_takes_only_the_nic_inside_its_subnet():
    api = RecordedApi()
    api.answers["GET /1.0/instances/web1/state project=mage-rec-a"] = {"network": {
        # Made inside the instance, first in name order, holding a neighbour's address.
        "dummy0": {"addresses": [{"family": "inet", "address": "10.187.33.112", "scope": "global"}]},
        "eth0": {"hwaddr": "00:16:3e:94:6e:f7",
                 "addresses": [{"family": "inet", "address": "10.187.33.196", "scope": "global"},
                               {"family": "inet", "address": "169.254.169.254", "scope": "global"},
                               {"family": "inet6", "address": "fe80::1", "scope": "link"}]},
        "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]}}}
    api.answers["GET /1.0/instances/web2/state project=mage-rec-b"] = {"network": {}}
    api.answers["GET /1.0/instances/odd1/state project=mage-rec-b"] = {"network": {}}
    instances = by_name(take_snapshot(api, PROJECTS, address_source="state"))
    assert not any("leases" in request for request in api.requests)
    assert instances["web1"]["addresses"] == {"eth0": [{"family": "inet", "address": "10.187.33.196", "network": "magebr0"}]}
    assert instances["web2"]["addresses"] == {}


def test_filters_apply_even_when_the_server_cannot_take_them():
    filters = SnapshotFilters(statuses=("running",), profiles=("web",))
    instances = by_name(take_snapshot(RecordedApi(), PROJECTS, filters))
    assert sorted(instances) == ["web1"]


@pytest.mark.parametrize(
    ("filters", "expression"),
    [
        (SnapshotFilters(), None),
        (SnapshotFilters(statuses=("running",)), "status eq Running"),
        (SnapshotFilters(statuses=("running", "frozen")), "status eq Running or status eq Frozen"),
        (SnapshotFilters(statuses=("running",), types=("container",)), "status eq Running and type eq container"),
        # No parentheses in LXD 5.0 filters: keep only the exact conjunct, filter the rest here.
        (SnapshotFilters(statuses=("running", "stopped"), types=("container",)), "type eq container"),
        (SnapshotFilters(statuses=("running", "stopped"), types=("container", "virtual-machine")), None),
    ],
)
def test_server_filter_expression_is_never_wider_than_asked(filters, expression):
    assert filters.server_filter() == expression


def test_unknown_filter_value_is_refused():
    with pytest.raises(OptionError, match="filters.status: unknown value"):
        SnapshotFilters(statuses=("Running",))


def test_unknown_project_is_an_error_that_lists_the_known_ones():
    with pytest.raises(OptionError, match=r"projects: nope not found on LXD remote 'local'.*it has: .*default"):
        take_snapshot(RecordedApi(), ["nope"])


def test_unknown_address_source_is_refused():
    with pytest.raises(OptionError, match="address_source"):
        take_snapshot(RecordedApi(), PROJECTS, address_source="dns")
