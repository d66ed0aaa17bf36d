"""Route validation is an allow-list applied before any rendering; planning refuses duplicates."""

from __future__ import annotations

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.routes import parse_route, plan_proxy, plan_sites, upstream_name

HOSTILE = [
    ({"name": "x.example.com; location /pwn { return 200 owned; } #", "pass": 80}, ".name"),
    ({"name": "a.example.com", "path": "/x { return 200; }", "pass": 80}, ".path"),
    ({"name": "a.example.com\nserver { }", "pass": 80}, ".name"),
    # A pattern anchored with $ alone would let a trailing newline through.
    ({"name": "a.example.com\n", "pass": 80}, ".name"),
    ({"name": "a.example.com", "path": "/a\n", "pass": 80}, ".path"),
    ({"name": "a.example.com", "pass": "http://:8080/\n"}, ".pass"),
    ({"name": "a.example.com", "path": "/a;b", "pass": 80}, ".path"),
    ({"name": "a.example.com", "path": "/a\"b", "pass": 80}, ".path"),
    ({"name": "a.example.com", "path": "/a b", "pass": 80}, ".path"),
    ({"name": "a.example.com", "path": "~ ^/(.*)$", "pass": 80}, ".path"),
    ({"name": "a.example.com", "path": "relative", "pass": 80}, ".path"),
    ({"name": "a" * 64 + ".example.com", "pass": 80}, ".name"),
    ({"name": ("abc." * 64) + "com", "pass": 80}, ".name"),
    ({"name": "a.example.com", "pass": 0}, ".pass"),
    ({"name": "a.example.com", "pass": 70000}, ".pass"),
    ({"name": "a.example.com", "pass": "http://evil.example.org:80/"}, ".pass"),
    ({"name": "a.example.com", "pass": "8080; proxy_pass http://evil"}, ".pass"),
    ({"name": "a.example.com", "pass": 80, "client_max_body_size": "10m; root /"}, ".client_max_body_size"),
    ({"name": "a.example.com", "pass": 80, "htpasswd": "/etc/x; include /etc/shadow"}, ".htpasswd"),
    ({"name": "a.example.com", "pass": 80, "tls": {"cert": "/c.pem"}}, ".tls needs both"),
    ({"name": "a.example.com", "pass": 80, "allow": ["10.0.0.0/8; allow all"]}, ".allow"),
    ({"name": "a.example.com", "pass": 80, "websockets": "yes"}, ".websockets"),
    ({"name": "a.example.com", "pass": 80, "extra": "x"}, "unknown key(s) extra"),
    ({"name": "", "pass": 80}, ".name"),
    ({"name": "a.example.com", "pass": True}, ".pass"),
]


@pytest.mark.parametrize(("raw", "message"), HOSTILE)
def test_hostile_or_broken_values_are_refused_naming_instance_and_route(raw, message):
    with pytest.raises(OptionError) as error:
        parse_route("web1", 2, raw)
    assert str(error.value).startswith("instance 'web1': proxy[2]")
    assert message in str(error.value)


def test_the_seeds_route_and_the_url_form_of_pass():
    route = parse_route("ubu-test-1", 0, {"name": "ubu1.vaizard.xyz", "path": "/postgres/", "pass": 8080})
    assert (route.server_name, route.path, route.port, route.scheme) == ("ubu1.vaizard.xyz", "/postgres/", 8080, "http")
    route = parse_route("a", 0, {"name": "A.Example.org", "pass": "https://:8443/app/"})
    assert (route.server_name, route.scheme, route.port, route.prefix) == ("a.example.org", "https", 8443, "/app/")


def test_duplicates_are_refused_unless_everyone_balances():
    web = {"name": "shop.example.org", "path": "/", "pass": 80}
    with pytest.raises(OptionError, match=r"instance 'a2': proxy\[0\] shop.example.org/ is already routed by instance 'a1': proxy\[0\]"):
        plan_sites([{"name": "a1", "status": "running", "address": "10.0.0.1", "routes": [web]},
                    {"name": "a2", "status": "running", "address": "10.0.0.2", "routes": [web]}])
    balanced = {**web, "balance": True}
    sites = plan_sites([{"name": "a1", "status": "running", "address": "10.0.0.1", "routes": [balanced]},
                        {"name": "a2", "status": "running", "address": "10.0.0.2", "routes": [balanced]},
                        {"name": "a3", "status": "stopped", "address": "", "routes": [balanced]}])
    backends = sites[0].locations[0].backends
    assert [(b.instance, b.address, b.port) for b in backends] == [("a1", "10.0.0.1", 80), ("a2", "10.0.0.2", 80)]


def test_a_route_whose_backends_are_all_stopped_keeps_its_location_without_backends():
    sites = plan_sites([{"name": "a1", "status": "stopped", "address": "10.0.0.1",
                         "routes": [{"name": "a.example.org", "pass": 80}]}])
    assert sites[0].locations[0].backends == []


def test_upstream_names_are_safe_and_distinct():
    first, second = upstream_name("a.example.org", "/x-y"), upstream_name("a.example.org", "/x_y")
    assert first != second
    assert all(char.isalnum() or char == "_" for char in first + second)


@pytest.mark.parametrize(("raw", "message"), [
    # ipaddress.ip_network() accepts a scope id, and renders it verbatim.
    ({"name": "a.example.com", "pass": 80, "allow": ["fe80::1%x;allow all;#"]}, ".allow"),
    ({"name": "a.example.com", "pass": 80, "deny": ["fe80::/64%eth0"]}, ".deny"),
    # int() and str.isdigit() accept digits of other scripts.
    ({"name": "a.example.com", "pass": "\u0668\u0660\u0668\u0660"}, ".pass"),
    ({"name": "a.example.com", "pass": "\uff18\uff10"}, ".pass"),
    ({"name": "a.example.com", "pass": "http://:\u0668\u0660/"}, ".pass"),
])
def test_scope_ids_and_non_ascii_digits_are_refused(raw, message):
    with pytest.raises(OptionError) as error:
        parse_route("web1", 0, raw)
    assert str(error.value).startswith("instance 'web1': proxy[0]") and message in str(error.value)


def host(name, routes, address="10.0.0.1", project="p", status="running"):
    return {"name": name, "project": project, "status": status, "address": address, "routes": routes}


@pytest.mark.parametrize(("address", "key"), [("fe80::1%eth0", "lxd_address"), ("10.0.0.1;allow all", "lxd_address"),
                                              ("10.0.0.1\n", "lxd_address")])
def test_addresses_read_from_lxd_are_checked_naming_instance_and_key(address, key):
    with pytest.raises(OptionError, match=rf"^instance 'w1' in project 'p': {key}: .*Fix: "):
        plan_proxy([host("w1", [{"name": "a.example.org", "pass": 80}], address=address)])


def test_a_name_with_a_newline_never_reaches_the_hosts_file():
    with pytest.raises(OptionError, match=r"instance 'w1\\n10.0.0.9 deb.debian.org' in project 'p': mage_lxd_instance"):
        plan_proxy([host("w1\n10.0.0.9 deb.debian.org", [{"name": "a.example.org", "pass": 80}])])
    plan = plan_proxy([host("w1\nevil", [{"name": "a.example.org", "pass": 80}])], strict=[])
    assert plan.hosts == [] and plan.sites == [] and "mage_lxd_instance" in plan.warnings[0]


def test_ipv6_upstreams_are_bracketed_and_hosts_entries_are_plain():
    plan = plan_proxy([host("w1", [{"name": "a.example.org", "pass": 80}], address="fd42::5")])
    assert plan.sites[0].locations[0].backends[0].address == "[fd42::5]"
    assert [(entry.address, entry.name) for entry in plan.hosts] == [("fd42::5", "w1")]


def test_an_out_of_band_bad_record_leaves_only_that_instance_out_with_a_warning():
    good = host("w1", [{"name": "a.example.org", "pass": 80}])
    bad = host("w2", [{"name": "b.example.org", "pass": 80}, {"name": "b.example.org; x", "pass": 80}])
    plan = plan_proxy([good, bad], strict=["p/w1"])
    assert [site.server_name for site in plan.sites] == ["a.example.org"]
    assert len(plan.warnings) == 1 and plan.warnings[0].startswith("instance 'w2': proxy[1].name")
    assert "left out of mageproxy" in plan.warnings[0] and "Fix:" in plan.warnings[0]
    # Declared by this run: refused, nothing planned.
    with pytest.raises(OptionError, match=r"^instance 'w2': proxy\[1\]\.name.*Fix: "):
        plan_proxy([good, bad], strict=["p/w1", "p/w2"])


def test_an_out_of_band_record_never_displaces_a_declared_route():
    # "a-..." sorts first, but it was not declared: the declared instance keeps the route.
    intruder = host("a-intruder", [{"name": "shop.example.org", "pass": 80}], address="10.0.0.9")
    owner = host("z-owner", [{"name": "shop.example.org", "pass": 80}, {"name": "z.example.org", "pass": 80}])
    plan = plan_proxy([intruder, owner], strict=["p/z-owner"])
    backends = plan.sites[0].locations[0].backends
    assert [(b.instance, b.address) for b in backends] == [("z-owner", "10.0.0.1")]
    assert "instance 'a-intruder': proxy[0] shop.example.org/ is already routed by instance 'z-owner'" in plan.warnings[0]


def test_an_instance_is_left_out_whole_when_one_of_its_routes_clashes():
    first = host("a1", [{"name": "shop.example.org", "pass": 80}])
    second = host("a2", [{"name": "own.example.org", "pass": 80}, {"name": "shop.example.org", "pass": 80}])
    plan = plan_proxy([first, second], strict=[])
    assert [site.server_name for site in plan.sites] == ["shop.example.org"]
    assert [entry.name for entry in plan.hosts] == ["a1"]
