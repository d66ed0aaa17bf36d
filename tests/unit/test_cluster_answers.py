"""Cluster answers recorded from lab/cluster.sh with one member down (tests/unit/record_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.cluster import check_reachable, check_target, listed_instance, member_statuses, placement_error
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError, RemoteError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import check_unique_host_ports, parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import InventoryOptions, plan_inventory
from ansible_collections.mage.lxd.plugins.plugin_utils.nat import check_iptables_rules, check_listen_by_member, proxy_devices, resolve_listen_addresses
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import nat_record
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot
from ansible_collections.mage.lxd.tests.unit.recorded_api import RecordedApi

CLUSTER = Path(__file__).resolve().parent / "recorded" / "lxd-5.0.2-cluster.json"
WHERE = "instance 'mage-rec-c2' in project 'default'"


def cluster_api() -> RecordedApi:
    return RecordedApi(Remote(name="cluster", url="https://10.187.40.11:8443"), path=CLUSTER)


def test_the_snapshot_lists_instances_on_a_member_that_is_down_and_says_so():
    api = cluster_api()
    instances = {item["name"]: item for item in take_snapshot(api, ["*"])["instances"]}
    assert (instances["mage-rec-c2"]["status"], instances["mage-rec-c2"]["location_status"]) == ("Error", "offline")
    assert (instances["mage-rec-c1"]["status"], instances["mage-rec-c1"]["location_status"]) == ("Running", "online")
    # No state request for the unreachable instance; one list of members for the whole cluster.
    assert api.requests == [
        "GET /1.0/instances all-projects=true recursion=1",
        "GET /1.0/networks/br0 project=default",
        "GET /1.0/instances/mage-rec-c1/state project=default",
        "GET /1.0/cluster/members recursion=1",
    ]


def test_the_inventory_groups_by_member_and_exposes_its_status():
    api = cluster_api()
    plan = plan_inventory([take_snapshot(api, ["*"])], {"cluster": api.remote}, InventoryOptions())
    hosts = {host.name: host for host in plan.hosts}
    assert "location_mage_m2" in hosts["mage-rec-c2"].groups and "status_error" in hosts["mage-rec-c2"].groups
    assert hosts["mage-rec-c2"].variables["lxd_location_status"] == "offline"
    assert hosts["mage-rec-c1"].variables["lxd_location"] == "mage-m1"


def test_member_statuses_are_lower_case_and_empty_off_a_cluster():
    assert member_statuses(cluster_api()) == {"mage-m1": "online", "mage-m2": "offline", "mage-m3": "online"}
    assert member_statuses(RecordedApi()) == {}


def test_an_instance_on_a_member_that_is_down_fails_naming_the_member():
    api = cluster_api()
    with pytest.raises(RemoteError) as error:
        check_reachable(api, listed_instance(api, "mage-rec-c2"), WHERE)
    assert f"{WHERE} is on cluster member 'mage-m2' (member status: offline)" in str(error.value)
    assert "Nothing was changed. Fix: start LXD on 'mage-m2'" in str(error.value)
    check_reachable(api, listed_instance(api, "mage-rec-c1"), WHERE)  # online: no error


def test_a_target_needs_a_cluster():
    with pytest.raises(OptionError, match="is not a cluster. Fix: leave target out"):
        check_target(RecordedApi(), "mage-m1", WHERE)
    check_target(cluster_api(), "mage-m1", WHERE)
    check_target(cluster_api(), "@edge", WHERE)  # the recorded server has clustering_groups


def test_a_placement_error_names_the_target_and_the_members():
    message = str(placement_error(cluster_api(), "mage-m9", WHERE, RemoteError("Cluster member not found")))
    assert message.startswith(f"{WHERE}: placing it on cluster member 'mage-m9' failed: Cluster member not found")
    assert message.endswith("Members: mage-m1 (online), mage-m2 (offline), mage-m3 (online)")


@pytest.mark.parametrize("target", ["mage m1", "a/b", "@", "-x", "m1;rm", "mage-m1\n"])
def test_a_target_that_is_no_member_or_group_name_is_refused(target):
    with pytest.raises(OptionError, match="is not a cluster member name, nor @group"):
        parse_spec({"name": "web1", "target": target})


BY_MEMBER = {"mage-m2": "10.187.40.12", "mage-m1": "10.187.40.11"}


def nat_spec(name: str, listen) -> object:
    return parse_spec({"name": name, "nat": [{"extport": 8080, "intport": 80, "listen": listen}]})


def test_listen_per_member_is_kept_sorted_and_the_instances_member_decides():
    rule = nat_spec("web1", BY_MEMBER).nat[0]
    assert (rule.listen, rule.listen_by_member) == ("", (("mage-m1", "10.187.40.11"), ("mage-m2", "10.187.40.12")))
    assert resolve_listen_addresses(cluster_api(), [rule], WHERE, "mage-m2") == {"tcp-8080": "10.187.40.12"}
    # Not placed yet: no address, and so no proxy device (it is added once LXD has placed it).
    assert resolve_listen_addresses(cluster_api(), [rule], WHERE, "") == {}
    assert proxy_devices([rule], {}) == {}


def test_a_member_missing_from_listen_is_named():
    rule = nat_spec("web1", BY_MEMBER).nat[0]
    with pytest.raises(OptionError, match="listen gives no address for cluster member 'mage-m3'.*add 'mage-m3: ADDRESS'"):
        resolve_listen_addresses(cluster_api(), [rule], WHERE, "mage-m3")


@pytest.mark.parametrize(("listen", "message"), [({}, "at least one cluster member"),
                                                 ({"@edge": "10.0.0.1"}, "'@edge' is not a cluster member name"),
                                                 ({"mage-m1": "10.0.0.256"}, r"listen.mage-m1: '10.0.0.256' is not"),
                                                 ({"mage-m1\n": "10.0.0.1"}, "is not a cluster member name"),
                                                 ({"mage-m1": "10.0.0.1\n"}, "is not an IPv4 address"),
                                                 ({1: "10.0.0.1", "1": "10.0.0.2"}, "member '1' is given twice")])
def test_a_bad_listen_mapping_is_refused(listen, message):
    with pytest.raises(OptionError, match=message):
        nat_spec("web1", listen)


def test_per_member_listen_addresses_claim_a_port_only_where_they_overlap():
    check_unique_host_ports([nat_spec("a", {"mage-m1": "10.187.40.11"}), nat_spec("b", {"mage-m2": "10.187.40.12"})])
    with pytest.raises(OptionError, match="already claimed by instance 'a'"):
        check_unique_host_ports([nat_spec("a", BY_MEMBER), nat_spec("b", {"mage-m2": "10.187.40.12"})])


def test_the_iptables_backend_is_refused_on_a_cluster():
    spec = parse_spec({"name": "web1", "nat": [{"extport": 8080, "backend": "iptables", "extif": "eth0",
                                                "intif": "magebr0"}]})
    with pytest.raises(OptionError, match="may run on another member.*Fix: use backend forward"):
        check_iptables_rules(cluster_api(), spec.nat, WHERE)


def test_listen_per_member_needs_a_cluster_and_must_cover_where_a_new_instance_may_land():
    rules = nat_spec("web1", BY_MEMBER).nat
    with pytest.raises(OptionError, match="is not a cluster. Fix: give listen one address"):
        check_listen_by_member(RecordedApi(), rules, WHERE, None)
    # LXD picks the member: all three are possible and mage-m3 has no address; checked before creating.
    with pytest.raises(OptionError, match=r"no address for cluster member\(s\) mage-m3, where the new instance"):
        check_listen_by_member(cluster_api(), rules, WHERE, "")
    check_listen_by_member(cluster_api(), rules, WHERE, "mage-m1")  # placed on a member it names
    check_listen_by_member(cluster_api(), rules, WHERE, None)  # existing: resolved where it is


def test_the_nat_record_keeps_the_declared_form():
    plain, mapped = nat_spec("a", "10.0.0.1").nat[0], nat_spec("b", BY_MEMBER).nat[0]
    assert "listen_by_member" not in nat_record(plain) and nat_record(plain)["listen"] == "10.0.0.1"
    assert nat_record(mapped)["listen"] == {"mage-m1": "10.187.40.11", "mage-m2": "10.187.40.12"}
