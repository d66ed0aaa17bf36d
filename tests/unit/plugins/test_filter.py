# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mage.lxd.mage_lxd_sites: the validated proxy plan the mageproxy templates render."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError
from ansible_collections.mage.lxd.plugins.filter.mage_lxd import FilterModule

SITES = FilterModule().filters()["mage_lxd_sites"]


def host(routes, address="10.0.0.5", status="running"):
    return {"lxd_address": address, "lxd_status": status, "lxd_mage": {"proxy": routes}}


def test_a_route_becomes_a_site_with_the_instance_as_backend():
    sites = SITES({"web1": host([{"name": "web1.example.org", "pass": 8080}])}, ["web1"])["sites"]
    assert [site["server_name"] for site in sites] == ["web1.example.org"]
    [location] = sites[0]["locations"]
    assert location["path"] == "/"
    assert "10.0.0.5" in str(location["backends"]) and "8080" in str(location["backends"])


def test_a_hostile_server_name_is_refused_naming_the_instance():
    hostile = {"name": "x.example.org; location /pwn { return 200 owned; } #", "pass": 80}
    with pytest.raises(AnsibleFilterError, match="instance 'web1'.*proxy\\[0\\]\\.name"):
        SITES({"web1": host([hostile])}, ["web1"])


def test_a_host_renamed_for_a_clash_keeps_its_declared_routes_under_its_instance_name():
    # The inventory names the operator's `web` `ops.web` when a tenant's project also has a `web`
    # (README, "Trust model": two instances are never one host): mageproxy reads the instance's name.
    operator = host([{"name": "shop.example.org", "pass": 8080}]) | {
        "mage_lxd_instance": "web", "mage_lxd_project": "ops", "lxd_address_network": "mage0"}
    tenant = host([{"name": "shop.example.org", "path": "/login", "pass": 8080}], address="10.0.0.6") | {
        "mage_lxd_instance": "web", "mage_lxd_project": "tenant", "lxd_address_network": "mage0"}
    plan = SITES({"ops.web": operator, "tenant.web": tenant}, ["ops.web", "tenant.web"], None, ["ops/web"])
    assert [(site["server_name"], [location["path"] for location in site["locations"]]) for site in plan["sites"]] == \
        [("shop.example.org", ["/"])]
    assert plan["sites"][0]["locations"][0]["backends"] == [{"instance": "web", "address": "10.0.0.5", "port": 8080}]
    assert plan["hosts"] == [{"address": "10.0.0.5", "name": "web"}]
    assert len(plan["warnings"]) == 1 and plan["warnings"][0].startswith(
        "instance 'web': proxy[0] shop.example.org/login: shop.example.org is served by declared instance 'web'")
