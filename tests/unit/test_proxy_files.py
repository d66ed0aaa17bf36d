"""Controller-provided certificates and htpasswd sets are checked before they reach mageproxy."""

from __future__ import annotations

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.proxy_plan import plan_proxy
from ansible_collections.mage.lxd.plugins.plugin_utils.routes import parse_route
from ansible_collections.mage.lxd.plugins.plugin_utils.proxy_files import plan_proxy_files
from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf

CA = make_ca()


def sites(*routes):
    from dataclasses import asdict
    return [asdict(site) for site in plan_proxy([{"name": "w1", "project": "p", "status": "running",
                                                  "address": "10.0.0.1", "routes": list(routes)}]).sites]


PROVIDED = {"name": "shop.example.org", "pass": 80, "tls": "provided", "redirect_https": True, "hsts": True}


def test_a_good_pair_lands_with_the_key_0600():
    cert, key = make_leaf(CA, ["shop.example.org"])
    planned = plan_proxy_files(sites(PROVIDED), {"shop.example.org": {"cert": cert, "key": key}}, {})
    assert planned.files["/etc/nginx/mage-lxd/tls/shop.example.org.crt"].startswith("-----BEGIN CERTIFICATE")
    assert planned.modes == {"/etc/nginx/mage-lxd/tls/shop.example.org.key": "0600"}
    site = sites(PROVIDED)[0]
    assert (site["tls_cert"], site["hsts"], site["redirect_https"]) == (
        "/etc/nginx/mage-lxd/tls/shop.example.org.crt", 31536000, True)


def test_a_wildcard_certificate_covers_one_label():
    cert, key = make_leaf(CA, ["*.example.org"])
    plan_proxy_files(sites(PROVIDED), {"shop.example.org": {"cert": cert, "key": key}}, {})
    deep = {**PROVIDED, "name": "a.shop.example.org"}
    with pytest.raises(OptionError, match=r"does not name a\.shop\.example\.org"):
        plan_proxy_files(sites(deep), {"a.shop.example.org": {"cert": cert, "key": key}}, {})


@pytest.mark.parametrize(("pair", "message"), [
    (lambda: (make_leaf(CA, ["shop.example.org"])[0], make_leaf(CA, ["shop.example.org"])[1]), r"\.key does not match its certificate"),
    (lambda: make_leaf(CA, ["shop.example.org"], days=(-30, -1)), r"\.cert expired on "),
    (lambda: make_leaf(CA, ["shop.example.org"], days=(2, 30)), r"\.cert is not valid before "),
    (lambda: make_leaf(CA, ["other.example.org"]), r"\.cert does not name shop\.example\.org"),
    (lambda: ("not a cert", make_leaf(CA, ["shop.example.org"])[1]), r"\.cert is not a PEM certificate"),
    (lambda: (make_leaf(CA, ["shop.example.org"])[0], "-----BEGIN PRIVATE KEY-----\nxx"), r"\.key is not an unencrypted PEM"),
])
def test_bad_pairs_are_refused_naming_the_server(pair, message):
    cert, key = pair()
    with pytest.raises(OptionError, match=rf"^mageproxy_certificates\['shop\.example\.org'\]{message}.*Fix: "):
        plan_proxy_files(sites(PROVIDED), {"shop.example.org": {"cert": cert, "key": key}}, {})


def test_a_missing_pair_names_the_route():
    with pytest.raises(OptionError, match=r"^instance 'w1': route shop\.example\.org/: tls: provided, but "
                                          r"mageproxy_certificates has no \{cert, key\} for shop\.example\.org\. Fix: "):
        plan_proxy_files(sites(PROVIDED), {}, {})


def test_htpasswd_sets_are_checked_and_readable_by_nginx_only():
    route = {"name": "a.example.org", "pass": 80, "htpasswd": "staff"}
    planned = plan_proxy_files(sites(route), {}, {"staff": ["alice:$apr1$abc$def"]})
    assert planned.files == {"/etc/nginx/mage-lxd/htpasswd/staff": "alice:$apr1$abc$def\n"}
    assert planned.modes == {"/etc/nginx/mage-lxd/htpasswd/staff": "0640"}
    with pytest.raises(OptionError, match=r"mageproxy_htpasswd\['staff'\]\[1\] is not a 'user:hash' line"):
        plan_proxy_files(sites(route), {}, {"staff": ["alice:x", "bob: x\nmallory:y"]})
    with pytest.raises(OptionError, match=r"htpasswd: staff, but mageproxy_htpasswd has no 'staff'"):
        plan_proxy_files(sites(route), {}, {})


@pytest.mark.parametrize(("raw", "message"), [
    ({"name": "a.example.org", "pass": 80, "tls": "yes"}, r"\.tls must be 'acme'"),
    ({"name": "a.example.org", "pass": 80, "hsts": True}, r"\.hsts needs tls"),
    ({"name": "a.example.org", "pass": 80, "tls": "provided", "hsts": "\u0661\u0662"}, r"\.hsts: "),
    ({"name": "a.example.org", "pass": 80, "tls": "provided", "hsts": -1}, r"\.hsts: "),
    ({"name": "a.example.org", "pass": 80, "htpasswd": "Staff;"}, r"\.htpasswd"),
])
def test_tls_and_hsts_values_are_allow_listed(raw, message):
    with pytest.raises(OptionError, match=rf"^instance 'w1': proxy\[0\]{message}"):
        parse_route("w1", 0, raw)


ACME = {"server": "https://acme.example.test:14000/dir", "email": "ops@example.test", "days": 30, "ca_bundle": ""}


def test_acme_sites_get_their_domain_list_and_settings():
    route = {"name": "shop.example.org", "pass": 80, "tls": "acme"}
    planned = plan_proxy_files(sites(route), {}, {}, acme=ACME)
    assert planned.acme and planned.files["/etc/nginx/mage-lxd/acme/domains"] == "shop.example.org\n"
    assert "MAGE_ACME_SERVER='https://acme.example.test:14000/dir'" in planned.files["/etc/nginx/mage-lxd/acme/env"]
    assert sites(route)[0]["tls_cert"] == "/etc/nginx/mage-lxd/acme/live/shop.example.org.crt"
    assert not plan_proxy_files(sites({"name": "a.example.org", "pass": 80}), {}, {}, acme=ACME).acme


@pytest.mark.parametrize(("settings", "message"), [
    ({**ACME, "server": "https://x.example.test/dir'; rm -rf / #"}, r"^mageproxy_acme_server: .*Fix: "),
    ({**ACME, "server": "http://x.example.test/dir"}, r"^mageproxy_acme_server: "),
    ({**ACME, "email": ""}, r"^mageproxy_acme_email: .*Fix: set mageproxy_acme_email"),
    ({**ACME, "email": "a@b.c'\nMAGE_ACME_SERVER=x"}, r"^mageproxy_acme_email: "),
    ({**ACME, "days": "30"}, r"^mageproxy_acme_days: "),
    ({**ACME, "ca_bundle": "not pem"}, r"^mageproxy_acme_ca_bundle is not PEM"),
])
def test_acme_settings_reach_the_sourced_file_only_by_allow_list(settings, message):
    with pytest.raises(OptionError, match=message):
        plan_proxy_files(sites({"name": "shop.example.org", "pass": 80, "tls": "acme"}), {}, {}, acme=settings)


def test_acme_cannot_issue_a_wildcard():
    with pytest.raises(OptionError, match=r"^instance 'w1': proxy\[0\]\.tls: acme \(HTTP-01\) cannot issue a wildcard"):
        parse_route("w1", 0, {"name": "*.example.org", "pass": 80, "tls": "acme"})
