"""Route validation is an allow-list applied before any rendering; planning refuses duplicates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.proxy_plan import PROBE_HOST, answers_probe, plan_proxy, plan_sites, upstream_name
from ansible_collections.mage.lxd.plugins.plugin_utils.routes import parse_route

ROOT = Path(__file__).resolve().parents[2]

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
    ({"name": "a.example.com", "pass": 80, "websockets": "maybe"}, ".websockets: 'maybe' is not a boolean"),
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
    assert plan.warnings[0].startswith("instance 'a-intruder': proxy[0] shop.example.org/: shop.example.org is "
                                       "served by declared instance 'z-owner': proxy[0]")


def test_an_instance_is_left_out_whole_when_one_of_its_routes_clashes():
    first = host("a1", [{"name": "shop.example.org", "pass": 80}])
    second = host("a2", [{"name": "own.example.org", "pass": 80}, {"name": "shop.example.org", "pass": 80}])
    plan = plan_proxy([first, second], strict=[])
    assert [site.server_name for site in plan.sites] == ["shop.example.org"]
    assert [entry.name for entry in plan.hosts] == ["a1"]


# The trust model, rule by rule (README, "Trust model"): what an undeclared record may not do.
OWNER = host("owner", [{"name": "shop.example.org", "pass": 80, "tls": "provided", "redirect_https": True},
                       {"name": "*.apps.example.org", "path": "/", "pass": 80}])


@pytest.mark.parametrize("claim", [
    {"name": "shop.example.org", "path": "/login", "pass": 80},
    {"name": "shop.example.org", "path": "/.well-known/acme-challenge/", "pass": 80},
    {"name": "shop.example.org", "path": "/", "pass": 80, "balance": True},
    # nginx prefers an exact name, or a longer wildcard, to the declared wildcard.
    {"name": "a.apps.example.org", "pass": 80},
    {"name": "x.y.apps.example.org", "pass": 80},
    {"name": "*.y.apps.example.org", "pass": 80},
    {"name": "*.apps.example.org", "path": "/api", "pass": 80},
])
def test_an_undeclared_record_serves_no_path_of_a_declared_name(claim):
    intruder = host("intruder", [{"name": "own.example.org", "pass": 80}, claim], address="10.0.0.9")
    plan = plan_proxy([intruder, OWNER], strict=["p/owner"])
    served = {(site.server_name, location.path): tuple(b.instance for b in location.backends)
              for site in plan.sites for location in site.locations}
    assert set(served.values()) == {("owner",)} and "own.example.org" not in {site.server_name for site in plan.sites}
    assert len(plan.warnings) == 1 and plan.warnings[0].startswith(f"instance 'intruder': proxy[1] {claim['name']}")
    assert "an undeclared instance may serve no path of it" in plan.warnings[0]
    assert plan.warnings[0].endswith("then rerun.") and " Fix: " in plan.warnings[0]


def test_an_undeclared_record_may_add_plain_routes_on_other_names_and_share_them_with_other_records():
    first = host("r1", [{"name": "apps.example.org", "pass": 80}, {"name": "blog.example.org", "pass": 80}])
    second = host("r2", [{"name": "blog.example.org", "path": "/api", "pass": 81, "allow": ["10.0.0.0/8"]}],
                  address="10.0.0.2")
    plan = plan_proxy([first, second, OWNER], strict=["p/owner"])
    assert plan.warnings == []
    assert [site.server_name for site in plan.sites] == ["*.apps.example.org", "apps.example.org", "blog.example.org",
                                                         "shop.example.org"]


@pytest.mark.parametrize(("option", "named"), [
    ({"tls": "provided"}, "tls"), ({"tls": "acme"}, "tls"),
    ({"tls": {"cert": "/etc/nginx/mage-lxd/tls/shop.example.org.crt",
              "key": "/etc/nginx/mage-lxd/tls/shop.example.org.key"}}, "tls"),
    ({"htpasswd": "staff"}, "htpasswd"), ({"htpasswd": "/etc/shadow"}, "htpasswd"),
])
def test_site_options_and_files_on_mageproxy_come_from_declarations_only(option, named):
    intruder = host("intruder", [{"name": "own.example.org", "pass": 80, **option}], address="10.0.0.9")
    plan = plan_proxy([intruder, OWNER], strict=["p/owner"])
    assert [site.server_name for site in plan.sites] == ["*.apps.example.org", "shop.example.org"]
    assert plan.warnings[0].startswith(f"instance 'intruder': proxy[0] own.example.org/: {named}")
    assert "may only come from a declaration" in plan.warnings[0]
    # Declared, the same route is served as written.
    assert plan_proxy([intruder], strict=["p/intruder"]).sites[0].server_name == "own.example.org"


def test_no_record_can_switch_on_redirect_or_raise_hsts_for_a_declared_site():
    raise_hsts = host("intruder", [{"name": "shop.example.org", "path": "/x", "pass": 80, "tls": "provided",
                                    "hsts": 999999, "redirect_https": True}])
    plan = plan_proxy([raise_hsts, OWNER], strict=["p/owner"])
    site = next(site for site in plan.sites if site.server_name == "shop.example.org")
    assert (site.hsts, [location.path for location in site.locations]) == (0, ["/"])


def test_a_declared_instance_serves_its_declaration_not_what_its_record_says_now():
    tampered = host("owner", [{"name": "shop.example.org", "path": "/", "pass": 80, "hsts": True, "tls": "provided"},
                              {"name": "evil.example.org", "pass": 80}])
    declaration = [{"name": "shop.example.org", "pass": 80}]
    plan = plan_proxy([tampered], strict=[], declared={"p/owner": declaration})
    assert [(site.server_name, site.hsts) for site in plan.sites] == [("shop.example.org", 0)]
    assert plan.warnings[0].startswith("instance 'owner' in project 'p': its user.mage.proxy differs from its declaration")
    # The same record as declared (written by mage_lxd_instance): no warning.
    assert plan_proxy([host("owner", declaration)], strict=[], declared={"p/owner": declaration}).warnings == []


@pytest.mark.parametrize("name", ["mage-lxd-probe.invalid", "*.invalid", "x.invalid"])
def test_names_that_would_catch_mageproxys_own_check_are_refused(name):
    with pytest.raises(OptionError, match=r"^instance 'w': proxy\[0\]\.name: .* reserved \.invalid domain"):
        parse_route("w", 0, {"name": name, "pass": 80})
    plan = plan_proxy([host("w", [{"name": name, "pass": 80}]), host("v", [{"name": "v.example.org", "pass": 80}])],
                      strict=[])
    assert [site.server_name for site in plan.sites] == ["v.example.org"] and "reserved .invalid" in plan.warnings[0]


@pytest.mark.parametrize("name", [
    "mage-lxd-probe.invalid", "MAGE-LXD-PROBE.INVALID", "*.invalid", "*.lxd-probe.invalid", "invalid",
    "mage-lxd-probe.invalid.", "mage-lxd-probe.*", "~^mage", "_", "*", "*.", "mage-lxd-probe.invalid default_server",
])
def test_no_route_can_take_the_host_of_mageproxys_own_check(name):
    """The probe asks the catch-all for PROBE_HOST: a route either is refused or is a name nginx
    would never give that request to (exact names, and wildcards only as a leading '*.')."""
    try:
        route = parse_route("w", 0, {"name": name, "pass": 80})
    except OptionError:
        return
    assert not answers_probe(route.server_name), route.server_name


def test_the_probe_meets_the_catch_all_and_no_route_value_reaches_a_listen():
    """So a failed reload or probe after nginx -t passed is not a route's doing (README, rule 6)."""
    assert f'"Host": "{PROBE_HOST}"' in (ROOT / "roles" / "mageproxy" / "files" / "nginx-control.sh").read_text()
    template = (ROOT / "templates" / "mageproxy" / "mage-sites.conf.j2").read_text()
    listens = re.findall(r"^\s*listen [^\n]*", template, re.MULTILINE)
    assert listens and all(re.fullmatch(r"\s*listen (\[::\]:)?(80|443)( ssl)?( default_server)?;", line)
                           for line in listens), listens
    catch_all = template.split("{% for site in sites %}")[0]
    assert template.count("default_server") == catch_all.count("default_server") > 0
    assert "server_name _;" in catch_all and "return 503;" in catch_all
    assert answers_probe("*.invalid") and not answers_probe("*.example.org")


@pytest.mark.parametrize("path", ["/.well-known/acme-challenge/", "/.well-known/acme-challenge/token"])
def test_a_declared_path_at_the_acme_challenge_of_an_acme_site_is_refused(path):
    routes = [{"name": "shop.example.org", "pass": 80, "tls": "acme"}, {"name": "shop.example.org", "path": path, "pass": 81}]
    with pytest.raises(OptionError, match=rf"^instance 'w': proxy\[1\] shop.example.org{path}: .*ACME challenge.*Fix: "):
        plan_proxy([host("w", routes)])
    # Not an ACME site: the path is the site's own.
    plan_proxy([host("w", [{"name": "shop.example.org", "pass": 80}, routes[1]])])


def test_declared_routes_that_clash_with_a_record_warn_and_the_record_is_left_out():
    record = host("other", [{"name": "shop.example.org", "pass": 80}])
    plan = plan_proxy([record, host("owner", [{"name": "shop.example.org", "pass": 80}])], strict=["owner"])
    assert [b.instance for b in plan.sites[0].locations[0].backends] == ["owner"] and len(plan.warnings) == 1


def test_a_record_nested_too_deeply_leaves_only_that_instance_out():
    deep: list = []
    for _level in range(5000):
        deep = [deep]
    plan = plan_proxy([host("deep", [{"name": deep, "pass": 80}]), host("w", [{"name": "w.example.org", "pass": 80}])],
                      strict=["p/w"])
    assert [site.server_name for site in plan.sites] == ["w.example.org"]
    # Python 3.11 stops at its recursion limit, 3.13 reaches the name check: either way only 'deep' is out.
    assert plan.warnings[0].startswith("instance 'deep'") and "left out of mageproxy" in plan.warnings[0]


@pytest.mark.parametrize(("longest", "bucket"), [(10, 64), (46, 64), (47, 128), (110, 128), (111, 256), (253, 512)])
def test_the_names_hash_fits_the_longest_name(longest, bucket):
    # nginx: a name fits a bucket when 8 + align8(len + 2) + 8 <= bucket_size (the default 64 stops at 46).
    from ansible_collections.mage.lxd.plugins.plugin_utils.proxy_plan import server_names_hash

    assert server_names_hash(["a.example.org", "x" * longest])["bucket_size"] == bucket
    assert server_names_hash([f"n{index}.example.org" for index in range(500)])["max_size"] == 2048
    long_name = ".".join(["a" * 60] * 4)[:253].rstrip(".")
    assert plan_proxy([host("w", [{"name": long_name, "pass": 80}])]).names_hash["bucket_size"] == 512


def test_a_declared_instance_the_proxy_was_not_given_is_named_not_skipped():
    present = host("w1", [{"name": "a.example.org", "pass": 80}])
    plan = plan_proxy([present], strict=["p/w1", "p/gone", "other"])
    missing = [warning for warning in plan.warnings if "is not among mageproxy's hosts" in warning]
    assert [warning.split("'")[1] for warning in missing] == ["other", "p/gone"]
    assert all("Fix: " in warning for warning in missing)
    assert [site.server_name for site in plan.sites] == ["a.example.org"]
    assert not plan_proxy([present], strict=["p/w1"]).warnings


@pytest.mark.parametrize(("declared", "network", "served"), [
    (False, "", False),          # undeclared, address on a NIC of an unmanaged network: left out
    (False, "mage0", True),      # undeclared, LXD's managed network vouches for it
    (False, None, True),         # a host no mage_lxd inventory made (static): the operator's own
    (True, "", True),            # declared: the operator chose the instance and its NIC
])
def test_an_undeclared_upstream_only_the_instance_vouches_for_is_left_out(declared, network, served):
    tenant = host("loner", [{"name": "loner.example.org", "pass": 80}], address="192.0.2.77") | \
        {"address_network": network}
    plan = plan_proxy([tenant, OWNER], strict=["p/owner"] + (["p/loner"] if declared else []))
    assert ("loner.example.org" in {site.server_name for site in plan.sites}) is served
    assert ("loner" in [entry.name for entry in plan.hosts]) is served
    if not served:
        assert plan.warnings == ["instance 'loner' in project 'p': its address 192.0.2.77 is on a NIC of an unmanaged "
                                 "network, which only the instance itself vouches for, so an undeclared instance's "
                                 "routes are never sent there. Its routes are left out of mageproxy; the others are "
                                 "served. Fix: attach the instance to a managed network, or declare it in "
                                 "lxd_provisioning_inventory (or mageproxy_strict_instances), then rerun."]
