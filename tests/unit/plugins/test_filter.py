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
