"""Which address NAT and the inventory use, and which NAT rules are stale, decided by pure code on
answers recorded from the lab LXD and Incus while root inside a container added a docker0 bridge
and a dummy0 link carrying a neighbour's address (tests/unit/record_tenant_nat.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils import nat
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import vouched_address
from ansible_collections.mage.lxd.plugins.plugin_utils.nat import (
    NatRule, PublishedRule, nat_targets, network_projects, parse_mark, plan_stale_nat, read_owners, read_published,
    recorded_nat, remove_stale_nat)
from ansible_collections.mage.lxd.plugins.plugin_utils.nics import managed_networks, nic_addresses

RECORDED = Path(__file__).resolve().parent / "recorded"


class Recording:
    """One recording: the tenant instance, its state, the networks and the leases."""

    def __init__(self, path: Path) -> None:
        self.answers = json.loads(path.read_text())
        self.project = next(key.split("project=")[1] for key in self.answers if key.startswith("GET /1.0/instances/tenant "))
        self.instance = self.answer("GET /1.0/instances/tenant")
        self.state = self.answer("GET /1.0/instances/tenant/state")
        self.networks = managed_networks(self.answer("GET /1.0/networks", "recursion=1"))
        self.bridge = next(iter(self.networks))
        self.leases = {self.bridge: self.answer(f"GET /1.0/networks/{self.bridge}/leases")}

    def answer(self, path: str, *extra: str) -> object:
        return copy.deepcopy(self.answers[" ".join([path, f"project={self.project}", *extra])])

    def lease(self, name: str) -> str:
        return next(lease["address"] for lease in self.leases[self.bridge] if lease["hostname"] == name)


@pytest.fixture(params=sorted(RECORDED.glob("tenant-nat-*.json")), ids=lambda path: path.stem)
def rec(request):
    return Recording(request.param)


def test_the_recording_holds_the_attack(rec):
    # docker0 and dummy0 (the victim's address) come before eth0 in name order.
    assert sorted(rec.state["network"])[:3] == ["docker0", "dummy0", "eth0"]
    assert any(a["address"] == rec.lease("victim") for a in rec.state["network"]["dummy0"]["addresses"])


def test_the_lease_of_the_nic_decides_not_docker0_or_dummy0(rec):
    view = nic_addresses(rec.instance, rec.networks, rec.leases, rec.state)
    assert view.addresses == {"eth0": [{"family": "inet", "address": rec.lease("tenant"), "network": rec.bridge}]}
    assert view.networks == {rec.bridge: "eth0"}


def test_without_leases_only_the_nic_interface_inside_the_subnet_counts(rec):
    view = nic_addresses(rec.instance, rec.networks, None, rec.state)
    assert [entry["address"] for entry in view.addresses["eth0"]] == [rec.lease("tenant")]
    assert set(view.addresses) == {"eth0"}


@pytest.mark.parametrize("planted", ["127.0.0.2", "169.254.169.254", "172.17.0.9", "gateway"])
def test_addresses_root_puts_on_eth0_outside_the_subnet_are_refused_naming_them(rec, planted):
    state = copy.deepcopy(rec.state)
    gateway = str(rec.networks[rec.bridge].gateways[0].ip)
    planted = gateway if planted == "gateway" else planted
    # Scopes as LXD reports them (it calls 169.254/16 "link", 127/8 "local").
    scope = {"127.0.0.2": "local", "169.254.169.254": "link"}.get(planted, "global")
    state["network"]["eth0"]["addresses"] = [{"family": "inet", "address": planted, "scope": scope},
                                             {"family": "inet6", "address": "fe80::1", "scope": "link"}]
    view = nic_addresses(rec.instance, rec.networks, None, state)
    assert view.addresses == {}
    assert [address for _interface, address, _why in view.refused] == [planted]
    rule = NatRule(extport=18080, intport=8080, backend="forward", intif=rec.bridge, listen="10.99.0.1")
    with pytest.raises(OptionError) as error:
        nat_targets("instance 'tenant' in project 'p'", [rule], view, rec.networks)
    message = str(error.value)
    assert message.startswith("instance 'tenant' in project 'p': nat tcp-18080")
    assert planted in message and f"network '{rec.bridge}'" in message and "Fix:" in message


def test_a_renamed_interface_is_not_the_nic(rec):
    # Root renames eth0 and gives its name to dummy0 (the victim's address): the MAC tells them apart.
    state = copy.deepcopy(rec.state)
    state["network"]["eth0"] = state["network"].pop("dummy0")
    view = nic_addresses(rec.instance, rec.networks, None, state)
    assert view.addresses == {}


def test_a_static_nic_address_comes_first(rec):
    instance = copy.deepcopy(rec.instance)
    static = str(rec.networks[rec.bridge].gateways[0].network.network_address + 250)
    instance["expanded_devices"]["eth0"] = {"type": "nic", "network": rec.bridge, "name": "eth0", "ipv4.address": static}
    view = nic_addresses(instance, rec.networks, rec.leases, rec.state)
    assert [entry["address"] for entry in view.addresses["eth0"]] == [static]


def test_a_nic_on_no_managed_network_gives_its_own_address_unvouched_and_nat_refuses_it(rec):
    view = nic_addresses(rec.instance, {}, rec.leases, rec.state)
    assert view.addresses == {"eth0": [{"family": "inet", "address": rec.lease("tenant"), "network": ""}]}
    rule = NatRule(extport=18080, intport=8080, backend="iptables", extif="x", intif=rec.bridge)
    with pytest.raises(OptionError, match=f"no NIC on managed network '{rec.bridge}'.*Fix:"):
        nat_targets("instance 'tenant'", [rule], view, rec.networks)


def test_nat_targets_are_the_address_on_the_rule_network_and_proxy_rules_need_none(rec):
    view = nic_addresses(rec.instance, rec.networks, rec.leases, rec.state)
    rules = [NatRule(extport=1, intport=2, backend="forward", intif=rec.bridge, listen="10.99.0.1"),
             NatRule(extport=3, intport=4, backend="proxy")]
    assert nat_targets("instance 'tenant'", rules, view, rec.networks) == {"tcp-1": rec.lease("tenant")}


def published(instance: str, key: str = "tcp-18080", backend: str = "forward") -> PublishedRule:
    return PublishedRule("shop", instance, key, backend, network="br0", listen="10.99.0.1",
                         description=f"mage-lxd:shop/{instance}:{key}")


def test_marks_parse_and_anything_else_is_not_ours():
    assert parse_mark("mage-lxd:shop/web1:tcp-8080") == ("shop", "web1", "tcp-8080")
    assert parse_mark("mage-lxd") is None and parse_mark("someone else's") is None
    assert parse_mark("mage-lxd:shop:tcp-8080") is None


def test_rules_of_gone_owners_and_of_owners_that_no_longer_record_them_are_stale():
    record = json.dumps([{"extport": 18080, "proto": "tcp", "backend": "forward"}])
    owners = {("shop", "gone"): None,
              ("shop", "unset"): {"config": {}},
              ("shop", "kept"): {"config": {"user.mage.nat": record}},
              ("shop", "other-backend"): {"config": {"user.mage.nat": record.replace("forward", "iptables")}}}
    rules = [published(name) for name in ("gone", "unset", "kept", "other-backend", "unreadable")]
    stale = plan_stale_nat(rules, owners)
    assert [(item.rule.instance, item.why) for item in stale] == [
        ("gone", "the instance no longer exists"),
        ("unset", "its user.mage.nat no longer records forward rule tcp-18080"),
        ("other-backend", "its user.mage.nat no longer records forward rule tcp-18080"),
    ]
    assert "forward port tcp-18080 on network 'br0'" in stale[0].describe()


def test_a_record_of_any_shape_or_depth_records_nothing_and_never_raises():
    deep = "[" * 5000 + "]" * 5000
    for raw in (deep, "{", "42", json.dumps({"extport": 1}), json.dumps([{"extport": "1"}]), json.dumps([None])):
        assert recorded_nat({"config": {"user.mage.nat": raw}}) == set()
    assert recorded_nat(None) is None


def test_the_projects_whose_networks_the_reconcile_reads_are_default_and_those_with_their_own():
    projects = [{"name": "default", "config": {"features.networks": "false"}},
                {"name": "shop", "config": {"features.networks": "true"}},
                {"name": "plain", "config": {"features.profiles": "true"}},
                {"name": "TRUE-too", "config": {"features.networks": "True"}},
                {"config": {"features.networks": "true"}}, "not a project"]
    assert network_projects(projects) == ["default", "TRUE-too", "shop"]
    assert network_projects(None) == ["default"]


class ForwardsApi:
    """A server with one marked forward port on the default project's lxdbr0 and one on project
    shop's own network of the same name (features.networks=true: an OVN network there)."""

    clustered = False
    remote = SimpleNamespace(is_https=True)  # no iptables: this machine's firewall is not read

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []

    def has_extension(self, name: str) -> bool:
        return name == "network_forward"

    def get(self, path: str, params: dict | None = None) -> list[dict]:
        self.requests.append(("GET", path, dict(params or {})))
        owner = "shop/web" if (params or {}).get("project") == "shop" else "default/gone"
        return [{"listen_address": "192.0.2.9", "description": "mage-lxd",
                 "ports": [{"description": f"mage-lxd:{owner}:tcp-80", "target_address": "10.0.0.2"}]}]

    def get_with_etag(self, path: str, params: dict | None = None) -> tuple[dict, str]:
        return self.get(path, params)[0], "etag"

    def delete(self, path: str, params: dict | None = None) -> None:
        self.requests.append(("DELETE", path, dict(params or {})))


def test_forwards_on_a_projects_own_network_are_read_and_removed_in_that_project():
    api = ForwardsApi()
    networks = {"default": managed_networks([{"name": "lxdbr0", "managed": True}]),
                "shop": managed_networks([{"name": "lxdbr0", "managed": True}])}
    found = read_published(api, networks)
    assert [(rule.owner, rule.network_project) for rule in found] == [(("default", "gone"), "default"),
                                                                      (("shop", "web"), "shop")]
    assert "on network 'lxdbr0' of project 'shop' listen address" in found[1].describe()
    stale = plan_stale_nat(found, {("default", "gone"): {"config": {}}, ("shop", "web"): None})
    api.requests.clear()
    assert remove_stale_nat(api, stale) == []
    assert [item for item in api.requests if item[0] == "DELETE"] == [
        ("DELETE", "networks/lxdbr0/forwards/192.0.2.9", {"project": "default"}),
        ("DELETE", "networks/lxdbr0/forwards/192.0.2.9", {"project": "shop"})]


def test_an_unmanaged_nics_address_is_the_inventorys_only_when_no_managed_network_vouches_for_one():
    unvouched = {"family": "inet", "address": "192.0.2.77", "network": ""}
    vouched = {"family": "inet", "address": "10.0.0.5", "network": "mage0"}
    # eth0 (unmanaged) comes first in name order; the managed network's address still wins.
    assert vouched_address({"eth0": [unvouched], "eth1": [vouched]}, "inet") == ("10.0.0.5", "mage0")
    assert vouched_address({"eth0": [unvouched]}, "inet") == ("192.0.2.77", "")
    assert vouched_address({}, "inet") == ("", "")


def iptables_pair(owner: str, extport: int, target: str, bridge: str) -> list[list[str]]:
    comment = ["-m", "comment", "--comment", f"mage-lxd:{owner}:tcp-{extport}"]
    return [["PREROUTING", "-i", "eth0", "-p", "tcp", "-m", "tcp", "--dport", str(extport), *comment,
             "-j", "DNAT", "--to-destination", f"{target}:80"],
            ["FORWARD", "-d", f"{target}/32", "-i", "eth0", "-o", bridge, "-p", "tcp", "-m", "tcp", "--dport", "80",
             *comment, "-j", "ACCEPT"]]


def test_iptables_rules_count_only_into_the_default_projects_networks_not_a_tenants_lookalike(monkeypatch):
    # LXD and Incus share this host's firewall. A tenant of LXD names its project's own network
    # incusbr0 and gives it Incus's subnet: Incus's rules must still not be LXD's to judge (and remove).
    lxd_rules = iptables_pair("default/web", 8080, "10.10.0.5", "lxdbr0")
    incus_rules = iptables_pair("default/web", 9090, "10.20.0.5", "incusbr0")
    monkeypatch.setattr(nat.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(nat, "_marked_rules", lambda table: [
        args for args in lxd_rules + incus_rules if (args[0] == "PREROUTING") == (table == "nat")])
    api = SimpleNamespace(clustered=False, remote=SimpleNamespace(is_https=False), has_extension=lambda name: False)
    networks = {"default": managed_networks([{"name": "lxdbr0", "managed": True,
                                              "config": {"ipv4.address": "10.10.0.1/24"}}]),
                "tenant": managed_networks([{"name": "incusbr0", "managed": True,
                                             "config": {"ipv4.address": "10.20.0.1/24"}}])}
    found = read_published(api, networks)
    assert [(rule.owner, rule.table, rule.args) for rule in found] == [
        (("default", "web"), "nat", tuple(lxd_rules[0])), (("default", "web"), "filter", tuple(lxd_rules[1]))]


HOSTILE_MARKS = ["mage-lxd:tenant/box/logs/lxc.log:tcp-80", "mage-lxd:tenant/../../1.0:tcp-80",
                 "mage-lxd:tenant/box?recursion=1:tcp-80", "mage-lxd:tenant/-box:tcp-80", "mage-lxd:ten ant/box:tcp-80",
                 "mage-lxd:../box:tcp-80", "mage-lxd:a/b/box:tcp-80", "mage-lxd:tenant/" + "b" * 64 + ":tcp-80"]


@pytest.mark.parametrize("mark", HOSTILE_MARKS)
def test_a_mark_whose_owner_is_no_valid_project_and_instance_name_is_not_ours(mark):
    assert parse_mark(mark) is None
    assert parse_mark("mage-lxd:tenant.eu_1/box-2:udp-53") == ("tenant.eu_1", "box-2", "udp-53")


class MarkedPortApi(ForwardsApi):
    """One forward port on project tenant's own network carrying `mark`; instances answer {}."""

    def __init__(self, mark: str) -> None:
        super().__init__()
        self.mark = mark

    def get(self, path: str, params: dict | None = None) -> list[dict] | dict:
        self.requests.append(("GET", path, dict(params or {})))
        if path.startswith("instances/"):
            return {}
        return [{"listen_address": "192.0.2.9", "description": "mage-lxd",
                 "ports": [{"description": self.mark, "target_address": "10.0.0.2"}]}]


@pytest.mark.parametrize("mark", HOSTILE_MARKS)
def test_a_tenants_port_with_a_hostile_mark_is_left_alone_and_no_owner_is_read_for_it(mark):
    api = MarkedPortApi(mark)
    networks = {"default": {}, "tenant": managed_networks([{"name": "ovn0", "managed": True}])}
    found = read_published(api, networks)
    assert found == []
    assert read_owners(api, found) == {} and plan_stale_nat(found, {}) == []
    assert [path for _method, path, _params in api.requests] == ["networks/ovn0/forwards"]


def test_an_owners_name_is_one_path_segment_of_the_instance_url():
    api = MarkedPortApi("unused")
    rule = PublishedRule("tenant", "box/logs/lxc.log", "tcp-80", "forward")
    assert read_owners(api, [rule]) == {("tenant", "box/logs/lxc.log"): {}}
    assert api.requests == [("GET", "instances/box%2Flogs%2Flxc.log", {"project": "tenant"})]
