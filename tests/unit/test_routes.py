"""Route validation is an allow-list applied before any rendering; planning refuses duplicates."""

from __future__ import annotations

import pytest

from mage_lxd.errors import OptionError
from mage_lxd.routes import parse_route, plan_sites, upstream_name

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
