"""A hostile tenant against mageproxy's routes: someone who may edit one instance, and only that.

The operator declares `tr-owner` in lxd_provisioning_inventory (its sites shop, secure with TLS
from the controller, and *.apps); the tenant's `tr-tenant` was never declared, and the tenant
sets its `user.mage.proxy` by hand (`lxc config set`). Each test plays one attack, then asserts
what the operator sees: which container answers which page through mageproxy, the run's status
and warnings, and that site.yml and proxy.yml keep working for everyone else. The README's
"Trust model" lists the same rules in the same order.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from lxd_lab import (ON_INCUS, REPO, ansible, create_project, delete_project, launch, lxc, project_name, recap_changed,
                     wait_for_leases)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-troute")
PROXY, OWNER, TENANT = "tr-proxy", "tr-owner", "tr-tenant"
BACKEND = Path(__file__).resolve().parent / "backend_server.py"
OWNER_ROUTES = [
    {"name": "shop.tr.test", "path": "/", "pass": 8080},
    {"name": "secure.tr.test", "path": "/", "pass": 8080, "tls": "provided", "redirect_https": True, "hsts": 600},
    {"name": "*.apps.tr.test", "path": "/", "pass": 8080},
]
# What the tenant may do: a plain route on a name nobody declared.
OWN = {"name": "own.tr.test", "path": "/", "pass": 8080}
TLS_DIR = "/etc/nginx/mage-lxd/tls"


def start_backend(name: str) -> None:
    lxc("file", "push", str(BACKEND), f"{name}/srv/backend_server.py", "--project", PROJECT)
    lxc("exec", name, "--project", PROJECT, "--", "sh", "-c",
        f"setsid -f python3 /srv/backend_server.py {name} 8080 >/dev/null 2>&1")


@pytest.fixture(scope="module")
def site(lab, tmp_path_factory):
    from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf, pem_cert

    workdir = tmp_path_factory.mktemp("tenant-routes")
    ca = make_ca()
    (workdir / "ca.pem").write_text(pem_cert(ca[0]))
    cert, key = make_leaf(ca, ["secure.tr.test"])
    inventory = workdir / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    # JSON is YAML: the declaration exactly as an operator writes it.
    (inventory / "group_vars" / "all.yml").write_text(textwrap.dedent(f"""\
        lxd_project: {PROJECT}
        mageproxy_name: {PROXY}
        lxd_provisioning_image_server: ""
        lxd_provisioning_inventory:
          - name: {OWNER}
            image: mage/debian-12
            proxy: {json.dumps(OWNER_ROUTES)}
        mageproxy_certificates: {json.dumps({"secure.tr.test": {"cert": cert, "key": key}})}
        """))
    create_project(PROJECT)
    try:
        launch(PROJECT, TENANT, image="mage/debian-12", config={"user.mage.proxy": json.dumps([OWN])})
        first = playbook(inventory, "site.yml")
        assert first.returncode == 0, first.stdout[-3000:]
        for name in (OWNER, TENANT):
            start_backend(name)
        address = wait_for_leases(PROJECT, [PROXY])[PROXY]
        yield {"inventory": inventory, "address": address, "ca": workdir / "ca.pem"}
    finally:
        delete_project(PROJECT)


def playbook(inventory: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / name), *extra, check=False)


def tenant_sets(routes: object) -> None:
    """What the tenant can do: edit the config of their own instance."""
    lxc("config", "set", TENANT, f"user.mage.proxy={json.dumps(routes)}", "--project", PROJECT)


def served(site: dict, host: str, path: str = "/") -> tuple[int, str]:
    """(HTTP status, which container answered) for a request through mageproxy."""
    out = subprocess.run(["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "-H", f"Host: {host}",
                          f"http://{site['address']}{path}"], capture_output=True, text=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body.split(" ", 1)[0].removeprefix("backend=")


def https(site: dict, host: str, path: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "-m", "5", "-D", "-", "--resolve", f"{host}:443:{site['address']}",
                           "--cacert", str(site["ca"]), f"https://{host}{path}"], capture_output=True, text=True)


def warnings(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join(result.stderr.split())


def everyone_else_is_served(site: dict) -> None:
    assert served(site, "shop.tr.test", "/x") == (200, OWNER)
    assert served(site, "a.apps.tr.test") == (200, OWNER)
    answer = https(site, "secure.tr.test")
    assert answer.returncode == 0 and f"backend={OWNER} " in answer.stdout, answer
    assert "Strict-Transport-Security: max-age=600" in answer.stdout
    assert served(site, "secure.tr.test")[0] == 301


def test_a_record_may_add_plain_routes_on_a_name_nobody_declared(site):
    tenant_sets([OWN])
    result = playbook(site["inventory"], "proxy.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert served(site, "own.tr.test") == (200, TENANT)
    everyone_else_is_served(site)


@pytest.mark.parametrize("claim", [
    {"name": "shop.tr.test", "path": "/login", "pass": 8080},
    {"name": "shop.tr.test", "path": "/.well-known/acme-challenge/", "pass": 8080},
    {"name": "shop.tr.test", "path": "/", "pass": 8080, "balance": True},
    # An exact name inside the declared wildcard: nginx would prefer it.
    {"name": "a.apps.tr.test", "path": "/", "pass": 8080},
], ids=["longer-path", "acme-challenge", "balance-exact-pair", "inside-wildcard"])
def test_an_undeclared_record_takes_no_path_of_a_declared_site(site, claim):
    tenant_sets([OWN, claim])
    result = playbook(site["inventory"], "proxy.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    said = warnings(result)
    assert f"instance '{TENANT}': proxy[1] {claim['name']}{claim['path']}: {claim['name']} is served by declared " \
           f"instance '{OWNER}'" in said, said
    assert "Its routes are left out of mageproxy; the others are served." in said
    assert served(site, claim["name"], claim["path"] + "x")[1] == OWNER
    # Left out whole: its own plain route too, until the record is fixed.
    assert served(site, "own.tr.test")[0] == 503
    everyone_else_is_served(site)


def test_an_undeclared_upstream_on_a_nic_of_an_unmanaged_network_is_left_out(site):
    """A tenant's own instance whose only NIC is on a host bridge LXD does not manage: root inside
    picks its address (here the host's own address on that bridge), which nothing vouches for."""
    bridge, loner = ("mage-itrum0" if ON_INCUS else "mage-trum0"), "tr-loner"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        launch(PROJECT, loner, start=False,
               config={"user.mage.proxy": json.dumps([{"name": "loner.tr.test", "path": "/", "pass": 8080}])})
        lxc("config", "device", "add", loner, "eth0", "nic", "nictype=bridged", f"parent={bridge}", "name=eth0",
            "--project", PROJECT)
        lxc("start", loner, "--project", PROJECT)
        lxc("exec", loner, "--project", PROJECT, "--", "ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
        result = playbook(site["inventory"], "proxy.yml")
        assert result.returncode == 0, result.stdout[-3000:]
        said = warnings(result)
        assert f"instance '{loner}' in project '{PROJECT}': its address 192.0.2.1 is on a NIC of an unmanaged " \
               "network" in said, said
        sites = lxc("exec", PROXY, "--project", PROJECT, "--", "cat", "/etc/nginx/conf.d/mage-sites.conf").stdout
        assert "loner.tr.test" not in sites and "192.0.2.1" not in sites
        everyone_else_is_served(site)
    finally:
        lxc("delete", "--force", loner, "--project", PROJECT, check=False)
        subprocess.run(["ip", "link", "del", bridge], check=False)


@pytest.mark.parametrize("route", [
    # The declared site's key on mageproxy, for the tenant's own name.
    {**OWN, "tls": {"cert": f"{TLS_DIR}/secure.tr.test.crt", "key": f"{TLS_DIR}/secure.tr.test.key"}},
    {**OWN, "htpasswd": f"{TLS_DIR}/secure.tr.test.key"},
    {**OWN, "tls": "provided", "redirect_https": True},
    # HSTS for the whole declared site, raised from a record (everyone_else_is_served checks 600).
    {"name": "secure.tr.test", "path": "/x", "pass": 8080, "tls": "provided", "hsts": 99999999},
], ids=["tls-files-of-another-site", "htpasswd-file", "tls-provided", "raise-hsts-of-declared-site"])
def test_site_options_and_files_on_mageproxy_never_come_from_a_record(site, route):
    tenant_sets([route])
    result = playbook(site["inventory"], "proxy.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    said = warnings(result)
    option = next(key for key in ("tls", "htpasswd") if key in route)
    assert f"instance '{TENANT}': proxy[0] {route['name']}{route['path']}: {option}" in said, said
    assert "may only come from a declaration" in said
    assert served(site, "own.tr.test")[0] == 503
    # No certificate is presented for the tenant's name: the handshake is refused.
    assert https(site, "own.tr.test").returncode != 0
    everyone_else_is_served(site)


def test_a_record_repeating_a_declared_route_never_refuses_site_yml(site):
    tenant_sets([OWNER_ROUTES[0]])
    result = playbook(site["inventory"], "site.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Nothing was changed" not in result.stdout
    said = warnings(result)
    assert f"instance '{TENANT}': proxy[0] shop.tr.test/: shop.tr.test is served by declared instance '{OWNER}'" in said
    assert served(site, "shop.tr.test") == (200, OWNER)
    everyone_else_is_served(site)


def test_a_long_server_name_simply_works(site):
    # 58 characters: nginx's default server_names_hash_bucket_size (64) refuses 47 and more.
    name = "a" * 50 + ".tr.test"
    tenant_sets([{**OWN, "name": name}])
    result = playbook(site["inventory"], "proxy.yml")
    assert result.returncode == 0 and "left out" not in warnings(result), result.stdout[-3000:]
    assert served(site, name) == (200, TENANT)
    everyone_else_is_served(site)


def test_a_name_that_would_answer_mageproxys_own_probe_is_left_out(site):
    tenant_sets([OWN, {"name": "mage-lxd-probe.invalid", "pass": 8080}])
    result = playbook(site["inventory"], "proxy.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    said = warnings(result)
    assert f"instance '{TENANT}': proxy[1].name: 'mage-lxd-probe.invalid' is in the reserved .invalid domain" in said
    assert served(site, "own.tr.test")[0] == 503
    everyone_else_is_served(site)


def test_a_site_nginx_refuses_is_traced_to_its_route_and_the_rest_goes_live(site):
    """Anything that passes validation but not nginx -t (here a declared pair of PEM files that do
    not match) leaves that one site out, named; the rest goes live, and a rerun reloads nothing."""
    from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf

    ca = make_ca()
    cert, _ = make_leaf(ca, ["pair.tr.test"])
    _, other_key = make_leaf(ca, ["pair.tr.test"])
    for path, text in (("/etc/ssl/pair.crt", cert), ("/etc/ssl/pair.key", other_key)):
        lxc("exec", PROXY, "--project", PROJECT, "--", "sh", "-c", f"cat > {path}", stdin=text)
    tenant_sets([OWN])
    pair = {"name": "pair.tr.test", "pass": 8080, "tls": {"cert": "/etc/ssl/pair.crt", "key": "/etc/ssl/pair.key"}}
    declared = json.dumps({"mageproxy_declared_routes": {f"{PROJECT}/{OWNER}": [*OWNER_ROUTES, pair]}})
    try:
        result = playbook(site["inventory"], "proxy.yml", "-e", declared)
        assert result.returncode == 0, result.stdout[-3000:]
        said = warnings(result)
        assert f"instance '{OWNER}': proxy[3] pair.tr.test/: left out of /etc/nginx/conf.d/mage-sites.conf, the test " \
               "refused it: " in said, said
        assert "key values mismatch" in said and "The rest is served. Fix: correct that route, then rerun." in said
        # The declaration (here given with -e) is served, not the record on the instance.
        assert f"instance '{OWNER}' in project '{PROJECT}': its user.mage.proxy differs from its declaration" in said
        assert served(site, "pair.tr.test")[0] == 503
        assert served(site, "own.tr.test") == (200, TENANT)
        everyone_else_is_served(site)
        again = playbook(site["inventory"], "proxy.yml", "-e", declared)
        assert again.returncode == 0 and recap_changed(again.stdout)[PROXY] == 0, again.stdout[-3000:]
        assert "pair.tr.test/: left out" in warnings(again)
    finally:
        lxc("exec", PROXY, "--project", PROJECT, "--", "rm", "-f", "/etc/ssl/pair.crt", "/etc/ssl/pair.key")
