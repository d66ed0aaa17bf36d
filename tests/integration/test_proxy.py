"""mageproxy end to end on the lab: two backends, nginx in front, routes from the inventory.

Requests go from this host to the mageproxy container on the lab bridge.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lxd_lab import (LAB, REPO, ansible, create_project, delete_project, lxc, project_name, recap_changed, run_module,
                     wait_for_leases)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-proxy")
BACKEND = Path(__file__).resolve().parent / "backend_server.py"
ROUTES = {
    "web-a": [{"name": "a.example.test", "path": "/", "pass": 8080},
              {"name": "shop.example.test", "path": "/a/", "pass": 8080, "client_max_body_size": "1k"}],
    "web-b": [{"name": "b.example.test", "path": "/", "pass": 8080},
              {"name": "shop.example.test", "path": "/b/", "pass": "http://:8080/", "strip_prefix": True}],
}
CONF = "/etc/nginx/conf.d/mage-sites.conf"
# LXD wants instance names unique on a shared bridge, across projects: not the demo's "mageproxy".
PROXY = "mage-test-px"


def instance(name: str, **extra) -> dict:
    args = {"name": name, "project": PROJECT, "image": "mage/debian-12", "image_server": "", **extra}
    return run_module("mage_lxd_instance", args, project=PROJECT)


@pytest.fixture(scope="module")
def lab_proxy(lab, tmp_path_factory):
    create_project(PROJECT)
    inventory = tmp_path_factory.mktemp("proxy-inv") / "mage_lxd.yml"
    inventory.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    try:
        for name, routes in ROUTES.items():
            instance(name, proxy=routes)
            lxc("file", "push", str(BACKEND), f"{name}/srv/backend_server.py", "--project", PROJECT)
            lxc("exec", name, "--project", PROJECT, "--", "sh", "-c",
                f"setsid -f python3 /srv/backend_server.py {name} 8080 >/dev/null 2>&1")
        result = apply_proxy(inventory)
        assert result.returncode == 0, result.stdout[-3000:]
        address = wait_for_leases(PROJECT, [PROXY])[PROXY]
        yield {"inventory": inventory, "address": address}
    finally:
        delete_project(PROJECT)


# As site.yml declares them: a bad route of these instances is refused before any change.
DECLARED = json.dumps({"mageproxy_strict_instances": [f"{PROJECT}/{name}" for name in ROUTES]})
FAULTS = Path(__file__).resolve().parent / "faults"


def apply_proxy(inventory: Path, *extra: str, fault: str = "") -> subprocess.CompletedProcess[str]:
    """proxy.yml on the test project; `fault` arms tests/integration/faults/sitecustomize.py."""
    env = {"PYTHONPATH": str(FAULTS), "MAGE_TEST_FAULT": fault} if fault else None
    return ansible("ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "proxy.yml"),
                   "-e", f"mageproxy_project={PROJECT}", "-e", f"mageproxy_name={PROXY}", *extra,
                   check=False, env=env)


def request(address: str, host: str, path: str = "/", *extra: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "-H", f"Host: {host}",
                          *extra, f"http://{address}{path}"], capture_output=True, text=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def proxy_conf() -> str:
    # Through the files API: under load, `lxc exec` output was once seen to arrive empty.
    return lxc("file", "pull", f"{PROXY}{CONF}", "-", "--project", PROJECT).stdout


def test_requests_reach_the_right_backend(lab_proxy):
    address = lab_proxy["address"]
    assert request(address, "a.example.test")[1].startswith("backend=web-a path=/ ")
    assert request(address, "b.example.test", "/x")[1].startswith("backend=web-b path=/x ")
    assert request(address, "shop.example.test", "/a/item")[1].startswith("backend=web-a path=/a/item ")
    # strip_prefix: /b/ is taken off before the request reaches web-b.
    assert request(address, "shop.example.test", "/b/item")[1].startswith("backend=web-b path=/item ")


def test_unknown_host_gets_503(lab_proxy):
    assert request(lab_proxy["address"], "nobody.example.test")[0] == 503


def test_forwarded_for_is_set_by_the_proxy_not_the_client(lab_proxy):
    code, body = request(lab_proxy["address"], "a.example.test", "/", "-H", "X-Forwarded-For: 203.0.113.9")
    assert code == 200 and "203.0.113.9" not in body and "xff=10." in body


def test_websocket_upgrade_passes_through(lab_proxy):
    code, _ = request(lab_proxy["address"], "a.example.test", "/ws", "-H", "Connection: Upgrade",
                      "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
                      "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    assert code == 101


def test_body_size_limit_per_route(lab_proxy):
    small = request(lab_proxy["address"], "shop.example.test", "/a/upload", "--data-binary", "x" * 500)
    big = request(lab_proxy["address"], "shop.example.test", "/a/upload", "--data-binary", "x" * 5000)
    assert small == (200, "backend=web-a received=500\n")
    assert big[0] == 413


def test_rerun_changes_nothing_and_does_not_reload(lab_proxy):
    pid_before = lxc("exec", PROXY, "--project", PROJECT, "--", "cat", "/run/nginx.pid").stdout
    workers_before = nginx_workers()
    result = apply_proxy(lab_proxy["inventory"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(recap_changed(result.stdout).values()) == {0}, result.stdout[-2000:]
    # A reload replaces nginx's workers; none was replaced.
    assert nginx_workers() == workers_before
    assert lxc("exec", PROXY, "--project", PROJECT, "--", "cat", "/run/nginx.pid").stdout == pid_before


def nginx_workers() -> str:
    """The process ids of nginx's workers (a reload replaces them)."""
    return lxc("exec", PROXY, "--project", PROJECT, "--", "sh", "-c",
               "grep -l '^nginx: worker' /proc/[0-9]*/cmdline").stdout



def test_a_certificate_file_that_is_not_pem_is_refused_before_any_change(lab_proxy):
    before = proxy_conf()
    # Valid by allow-list, refused by nginx -t: the files exist on the proxy but are no certificate.
    route = {"name": "tls.example.test", "pass": 8080, "tls": {"cert": "/etc/hosts", "key": "/etc/hosts"}}
    lxc("config", "set", "web-a", f"user.mage.proxy={json.dumps([*ROUTES['web-a'], route])}", "--project", PROJECT)
    try:
        result = apply_proxy(lab_proxy["inventory"], "-e", DECLARED)
        assert result.returncode != 0
        message = " ".join(result.stdout.split())
        # Both paths are /etc/hosts: the key is named (a certificate file is checked the same way).
        assert "instance 'web-a': route tls.example.test/: tls.key: /etc/hosts holds no PEM private key" in message, \
            message[-2000:]
        assert "nothing was changed" in message and proxy_conf() == before
        assert request(lab_proxy["address"], "a.example.test")[0] == 200
    finally:
        lxc("config", "set", "web-a", f"user.mage.proxy={json.dumps(ROUTES['web-a'])}", "--project", PROJECT)


HOSTILE = [
    {"name": "x.example.com; location /pwn { return 200 owned; } #", "pass": 8080},
    {"name": "x.example.com\nserver { listen 81; }", "pass": 8080},
    {"name": "x.example.com{", "pass": 8080},
    {"name": "x.example.com'", "pass": 8080},
    {"name": "x.example.com\"", "pass": 8080},
    {"name": "x example.com", "pass": 8080},
    {"name": "x" * 70 + ".example.com", "pass": 8080},
    {"name": "a.example.test", "path": "/; return 200 owned", "pass": 8080},
    {"name": "a.example.test", "path": "/x {", "pass": 8080},
    {"name": "a.example.test", "path": "/x\n}", "pass": 8080},
    {"name": "a.example.test", "path": "~ ^/(.*)$", "pass": 8080},
    {"name": "a.example.test", "path": "/x$1", "pass": 8080},
    {"name": "a.example.test", "path": "/x*", "pass": 8080},
    {"name": "z.example.test", "pass": 0},
    {"name": "z.example.test", "pass": 65536},
    {"name": "z.example.test", "pass": "8080; proxy_pass http://203.0.113.1"},
    {"name": "z.example.test", "pass": "http://203.0.113.1:80/"},
    {"name": "z.example.test", "pass": 8080, "client_max_body_size": "1m; root /"},
    {"name": "z.example.test", "pass": 8080, "htpasswd": "/etc/shadow; allow all"},
    {"name": "z.example.test", "pass": 8080, "allow": ["0.0.0.0/0; deny none"]},
    # ipaddress takes a scope id, int() takes digits of other scripts: not allow-lists.
    {"name": "z.example.test", "pass": 8080, "allow": ["fe80::1%x;allow all;#"]},
    {"name": "z.example.test", "pass": "\u0668\u0660\u0668\u0660"},
    # A duplicate of web-b's route without balance on both sides.
    {"name": "b.example.test", "path": "/", "pass": 8080},
]


@pytest.mark.parametrize("route", HOSTILE, ids=[f"hostile-{index}" for index in range(len(HOSTILE))])
def test_hostile_declared_route_fails_and_the_proxy_keeps_serving_byte_identically(lab_proxy, route):
    before = hashlib.sha256(proxy_conf().encode()).hexdigest()
    routes = [*ROUTES["web-a"], route]
    # Written straight into LXD (the action itself refuses such values), and named as declared by
    # this run: then nothing changes at all.
    lxc("config", "set", "web-a", f"user.mage.proxy={json.dumps(routes)}", "--project", PROJECT)
    try:
        result = apply_proxy(lab_proxy["inventory"], "-e", DECLARED)
        assert result.returncode != 0
        message = " ".join(result.stdout.split())
        assert "instance 'web-a': proxy[2]" in message, result.stdout[-2000:]
        assert hashlib.sha256(proxy_conf().encode()).hexdigest() == before
        assert request(lab_proxy["address"], "a.example.test")[0] == 200
    finally:
        lxc("config", "set", "web-a", f"user.mage.proxy={json.dumps(ROUTES['web-a'])}", "--project", PROJECT)


def test_the_action_refuses_a_hostile_route_before_recording_it(lab_proxy):
    result = instance("web-a", proxy=[*ROUTES["web-a"], HOSTILE[0]])
    assert "actions" not in result and "instance 'web-a': proxy[2].name" in result["msg"]


def test_a_stopped_backend_gives_503_and_comes_back(lab_proxy):
    instance("web-b", proxy=ROUTES["web-b"], state="stopped")
    try:
        assert apply_proxy(lab_proxy["inventory"]).returncode == 0
        assert request(lab_proxy["address"], "b.example.test")[0] == 503
        assert request(lab_proxy["address"], "a.example.test")[0] == 200
    finally:
        instance("web-b", proxy=ROUTES["web-b"])
        lxc("exec", "web-b", "--project", PROJECT, "--", "sh", "-c",
            "setsid -f python3 /srv/backend_server.py web-b 8080 >/dev/null 2>&1")
        apply_proxy(lab_proxy["inventory"])


def set_routes(name: str, routes: list[dict]) -> None:
    lxc("config", "set", name, f"user.mage.proxy={json.dumps(routes)}", "--project", PROJECT)


def in_proxy(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lxc("exec", PROXY, "--project", PROJECT, "--", *argv, check=check)


NEW_ROUTE = {"name": "new.example.test", "path": "/", "pass": 8080}


def test_a_run_killed_between_write_and_reload_is_completed_by_the_next(lab_proxy):
    set_routes("web-a", [*ROUTES["web-a"], NEW_ROUTE])
    try:
        killed = apply_proxy(lab_proxy["inventory"], fault="kill:mage_reload")
        assert killed.returncode == -9, killed.stdout[-2000:]
        # Written and tested, never loaded: nginx still serves the old routes.
        assert "new.example.test" in proxy_conf()
        assert request(lab_proxy["address"], "new.example.test")[0] == 503
        rerun = apply_proxy(lab_proxy["inventory"])
        assert rerun.returncode == 0, rerun.stdout[-3000:]
        assert recap_changed(rerun.stdout)[PROXY] == 1
        assert request(lab_proxy["address"], "new.example.test")[1].startswith("backend=web-a ")
        assert recap_changed(apply_proxy(lab_proxy["inventory"]).stdout)[PROXY] == 0
    finally:
        set_routes("web-a", ROUTES["web-a"])
        apply_proxy(lab_proxy["inventory"])


def test_an_exception_at_nginx_t_rolls_back(lab_proxy):
    before = proxy_conf()
    set_routes("web-a", [*ROUTES["web-a"], NEW_ROUTE])
    try:
        result = apply_proxy(lab_proxy["inventory"], fault="raise:mage_test")
        message = " ".join(result.stdout.split())
        assert result.returncode == 2 and "BrokenPipeError" in message, result.stdout[-3000:]
        assert "The previous files were put back. The service answered a request" in message
        assert proxy_conf() == before
        assert request(lab_proxy["address"], "new.example.test")[0] == 503
        assert request(lab_proxy["address"], "a.example.test")[0] == 200
        assert apply_proxy(lab_proxy["inventory"]).returncode == 0
        assert request(lab_proxy["address"], "new.example.test")[0] == 200
    finally:
        set_routes("web-a", ROUTES["web-a"])
        apply_proxy(lab_proxy["inventory"])


def test_a_stopped_nginx_is_started_by_a_run_with_no_route_change(lab_proxy):
    in_proxy("nginx", "-s", "stop")
    in_proxy("sh", "-c", "for i in $(seq 50); do [ -e /run/nginx.pid ] || exit 0; sleep 0.1; done; exit 1")
    assert request(lab_proxy["address"], "a.example.test")[0] == 0
    result = apply_proxy(lab_proxy["inventory"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap_changed(result.stdout)[PROXY] == 1
    assert request(lab_proxy["address"], "a.example.test")[1].startswith("backend=web-a ")


def test_a_foreign_broken_conf_d_file_is_reported(lab_proxy):
    in_proxy("sh", "-c", "echo 'this is not nginx config' > /etc/nginx/conf.d/zz-foreign.conf")
    try:
        result = apply_proxy(lab_proxy["inventory"])
        message = " ".join(result.stdout.split())
        assert result.returncode == 2
        assert "/etc/nginx/conf.d/zz-foreign.conf is not managed by mage-lxd" in message, message[-2000:]
        # nginx keeps what it loaded.
        assert request(lab_proxy["address"], "a.example.test")[0] == 200
    finally:
        in_proxy("rm", "-f", "/etc/nginx/conf.d/zz-foreign.conf")
    assert apply_proxy(lab_proxy["inventory"]).returncode == 0


def test_an_out_of_band_malformed_record_leaves_only_that_instance_out(lab_proxy):
    # Set by hand on web-a, not declared by this run.
    set_routes("web-a", [*ROUTES["web-a"], HOSTILE[0]])
    try:
        result = apply_proxy(lab_proxy["inventory"])
        assert result.returncode == 0, result.stdout[-3000:]
        warning = " ".join(result.stderr.split())
        assert "instance 'web-a': proxy[2].name" in warning and "left out of mageproxy" in warning, warning
        assert request(lab_proxy["address"], "b.example.test")[1].startswith("backend=web-b ")
        assert request(lab_proxy["address"], "a.example.test")[0] == 503
        assert "pwn" not in proxy_conf()
    finally:
        set_routes("web-a", ROUTES["web-a"])
        apply_proxy(lab_proxy["inventory"])
    assert request(lab_proxy["address"], "a.example.test")[0] == 200


def test_tls_from_the_controller_with_redirect_hsts_basic_auth_and_ipv6(lab_proxy, tmp_path):
    from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf, pem_cert

    ca = make_ca()
    (tmp_path / "ca.pem").write_text(pem_cert(ca[0]))
    cert, key = make_leaf(ca, ["tls.example.test"])
    user = subprocess.run(["openssl", "passwd", "-apr1", "s3cret"], capture_output=True, text=True, check=True).stdout
    variables = {"mageproxy_certificates": {"tls.example.test": {"cert": cert, "key": key}},
                 "mageproxy_htpasswd": {"staff": [f"alice:{user.strip()}"]}}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    route = {"name": "tls.example.test", "pass": 8080, "tls": "provided", "redirect_https": True, "hsts": 600,
             "htpasswd": "staff"}
    set_routes("web-a", [*ROUTES["web-a"], route])
    address = lab_proxy["address"]
    https = ["curl", "-s", "-m", "5", "--resolve", f"tls.example.test:443:{address}", "--cacert",
             str(tmp_path / "ca.pem"), "-D", "-", "https://tls.example.test/x"]
    try:
        result = apply_proxy(lab_proxy["inventory"], "-e", f"@{tmp_path / 'vars.json'}", "-e", DECLARED)
        assert result.returncode == 0, result.stdout[-3000:]
        answer = subprocess.run([*https, "-u", "alice:s3cret"], capture_output=True, text=True).stdout
        assert answer.startswith("HTTP/1.1 200") and "backend=web-a path=/x " in answer, answer
        assert "Strict-Transport-Security: max-age=600" in answer
        assert subprocess.run(https, capture_output=True, text=True).stdout.startswith("HTTP/1.1 401")
        code, _ = request(address, "tls.example.test", "/x", "-u", "alice:s3cret")
        assert code == 301
        modes = in_proxy("stat", "-c", "%a %U %G", "/etc/nginx/mage-lxd/tls/tls.example.test.key",
                         "/etc/nginx/mage-lxd/htpasswd/staff").stdout.split("\n")
        assert modes[:2] == ["600 root root", "640 root www-data"]
        # IPv6 listeners: the lab bridge has no IPv6, so ask from inside mageproxy over ::1.
        over_v6 = in_proxy("python3", "-c", "import http.client as h; c = h.HTTPConnection('::1', 80); "
                           "c.request('GET', '/', headers={'Host': 'a.example.test'}); print(c.getresponse().status)")
        assert over_v6.stdout.strip() == "200"

        # A key that does not match its certificate is refused before anything changes.
        before = proxy_conf()
        variables["mageproxy_certificates"]["tls.example.test"]["key"] = make_leaf(ca, ["tls.example.test"])[1]
        (tmp_path / "vars.json").write_text(json.dumps(variables))
        set_routes("web-a", [*ROUTES["web-a"], {**route, "hsts": 900}])
        refused = apply_proxy(lab_proxy["inventory"], "-e", f"@{tmp_path / 'vars.json'}", "-e", DECLARED)
        message = " ".join(refused.stdout.split())
        assert refused.returncode == 2
        assert "mageproxy_certificates['tls.example.test'].key does not match its certificate" in message, message[-2000:]
        assert proxy_conf() == before
    finally:
        set_routes("web-a", ROUTES["web-a"])
        apply_proxy(lab_proxy["inventory"])


LEGO_DEB = Path("/tmp/mage-test-px-debs")
PEBBLE_PORTS = {"acme": 14730, "management": 15730, "dns": 8753, "challtest": 8755}


def served_certificate(address: str, name: str) -> bytes:
    """The certificate mageproxy presents for `name` (SNI), unverified, DER."""
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return tls.getpeercert(binary_form=True)


@pytest.fixture
def pebble(lab_proxy, tmp_path):
    """Debian's pebble on the lab bridge, its DNS (pebble-challtestsrv) answering every name with
    mageproxy's address; lego put into mageproxy from this host's apt, as a mirror would."""
    from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf, pem_cert

    for tool in ("pebble", "pebble-challtestsrv"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            pytest.fail(f"{tool} is missing. Fix: apt-get install pebble")
    gateway = LAB["MAGE_LAB_SUBNET"].split("/")[0]
    ca = make_ca()
    cert, key = make_leaf(ca, [gateway, "localhost"])
    (tmp_path / "pebble.crt").write_text(cert)
    (tmp_path / "pebble.key").write_text(key)
    (tmp_path / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{gateway}:{PEBBLE_PORTS['acme']}",
        "managementListenAddress": f"127.0.0.1:{PEBBLE_PORTS['management']}",
        "certificate": str(tmp_path / "pebble.crt"), "privateKey": str(tmp_path / "pebble.key"),
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    dns = subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", lab_proxy["address"], "-defaultIPv6", "",
                            "-dns01", f"127.0.0.1:{PEBBLE_PORTS['dns']}", "-http01", "", "-https01", "",
                            "-tlsalpn01", "", "-management", f"127.0.0.1:{PEBBLE_PORTS['challtest']}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen(["pebble", "-config", str(tmp_path / "pebble.json"),
                               "-dnsserver", f"127.0.0.1:{PEBBLE_PORTS['dns']}"],
                              stdout=open(tmp_path / "pebble.log", "w"), stderr=subprocess.STDOUT, env=env)
    try:
        if in_proxy("sh", "-c", "command -v lego", check=False).returncode != 0:
            LEGO_DEB.mkdir(exist_ok=True)
            subprocess.run(["apt-get", "download", "lego"], cwd=LEGO_DEB, check=True, capture_output=True)
            deb = sorted(LEGO_DEB.glob("lego_*.deb"))[-1]
            lxc("file", "push", str(deb), f"{PROXY}/tmp/lego.deb", "--project", PROJECT)
            in_proxy("dpkg", "-i", "/tmp/lego.deb")
        yield {"server": f"https://{gateway}:{PEBBLE_PORTS['acme']}/dir", "ca": pem_cert(ca[0]), "log": tmp_path / "pebble.log",
               "roots": f"https://127.0.0.1:{PEBBLE_PORTS['management']}/roots/0"}
    finally:
        for process in (server, dns):
            process.terminate()
            process.wait(timeout=10)


def test_tls_acme_against_pebble_issues_serves_and_renews(lab_proxy, pebble, tmp_path):
    address = lab_proxy["address"]
    route = {"name": "acme.example.test", "pass": 8080, "tls": "acme", "redirect_https": True}
    settings = {"mageproxy_acme": {"server": pebble["server"], "email": "ops@example.test", "days": 30,
                                   "ca_bundle": pebble["ca"]}}
    (tmp_path / "acme.json").write_text(json.dumps(settings))
    set_routes("web-a", [*ROUTES["web-a"], route])
    try:
        result = apply_proxy(lab_proxy["inventory"], "-e", f"@{tmp_path / 'acme.json'}", "-e", DECLARED)
        assert result.returncode == 0, result.stdout[-3000:] + pebble["log"].read_text()[-2000:]
        roots = subprocess.run(["curl", "-sk", pebble["roots"]], capture_output=True, text=True, check=True).stdout
        (tmp_path / "root.pem").write_text(roots)
        https = ["curl", "-s", "-m", "5", "--resolve", f"acme.example.test:443:{address}", "--cacert",
                 str(tmp_path / "root.pem"), "https://acme.example.test/p"]
        # curl verifies the chain up to pebble's root, for this name.
        answer = subprocess.run(https, capture_output=True, text=True)
        assert answer.returncode == 0 and answer.stdout.startswith("backend=web-a path=/p "), answer
        assert request(address, "acme.example.test", "/p")[0] == 301
        assert in_proxy("systemctl", "is-active", "mage-acme.timer").stdout.strip() == "active"
        first = served_certificate(address, "acme.example.test")

        # Renewal runs in mageproxy (the timer's service), no playbook: forced here.
        renewed = in_proxy("/usr/local/sbin/mage-acme", "run", "--force")
        assert "renewed acme.example.test" in renewed.stdout
        # nginx -s reload is asynchronous: new workers take the new certificate within moments.
        for _ in range(50):
            if served_certificate(address, "acme.example.test") != first:
                break
            time.sleep(0.1)
        assert served_certificate(address, "acme.example.test") != first
        assert subprocess.run(https, capture_output=True, text=True).stdout.startswith("backend=web-a ")
        # And the next playbook run changes nothing.
        again = apply_proxy(lab_proxy["inventory"], "-e", f"@{tmp_path / 'acme.json'}", "-e", DECLARED)
        assert again.returncode == 0 and recap_changed(again.stdout)[PROXY] == 0, again.stdout[-3000:]

        # The last ACME route goes: the timer stops, and mage-acme and its files (keys too) are removed.
        set_routes("web-a", ROUTES["web-a"])
        gone = apply_proxy(lab_proxy["inventory"], "-e", DECLARED)
        assert gone.returncode == 0, gone.stdout[-3000:]
        assert in_proxy("systemctl", "is-enabled", "mage-acme.timer", check=False).returncode != 0
        left = in_proxy("sh", "-c", "ls -d /etc/nginx/mage-lxd/acme /usr/local/sbin/mage-acme "
                        "/etc/systemd/system/mage-acme.timer 2>/dev/null", check=False).stdout
        assert left == "", left
        assert request(address, "a.example.test")[0] == 200
    finally:
        set_routes("web-a", ROUTES["web-a"])
        apply_proxy(lab_proxy["inventory"])


def test_a_route_naming_a_file_missing_on_the_proxy_is_refused_naming_the_route(lab_proxy):
    before = proxy_conf()
    route = {"name": "tls.example.test", "pass": 8080, "tls": {"cert": "/etc/ssl/none.pem", "key": "/etc/ssl/none.key"}}
    set_routes("web-a", [*ROUTES["web-a"], route])
    try:
        result = apply_proxy(lab_proxy["inventory"], "-e", DECLARED)
        message = " ".join(result.stdout.split())
        assert result.returncode == 2
        assert "instance 'web-a': route tls.example.test/: tls.cert: /etc/ssl/none.pem" in message, message[-2000:]
        assert "nothing was changed" in message and proxy_conf() == before
    finally:
        set_routes("web-a", ROUTES["web-a"])
