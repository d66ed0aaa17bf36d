"""A remote with only a url and a trust_token: the token is decoded, the server's self-signed
certificate is accepted only when its SHA-256 is the token's, then pinned in mage-lxd's own config
directory with the client pair, so later runs (the token spent) pin it too. The servers here are
HTTPS servers on 127.0.0.1 with certificates no CA store has, as LXD's and Incus's are."""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import socket
import ssl
import stat
import threading

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils import lxd_api as lxd_api_module
from ansible_collections.mage.lxd.plugins.plugin_utils.client_trust import (
    FINGERPRINT_MISMATCH, NOT_A_TOKEN, FingerprintMismatchError, apply_token_defaults, check_server_cert_is_tokens,
    check_token_fingerprint, config_dir, decode_token, der_fingerprint, pem_fingerprint, pin_from_token, pin_name,
    stored_pin_matches, token_paths)
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError, RemoteError
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import remote_from_mapping, remote_from_task_args
from ansible_collections.mage.lxd.plugins.plugin_utils.transport import pinned_sha256
from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, make_leaf

# What `lxc config trust add --name probe-x` printed on the lab's LXD 5.0 (the secret changed): the
# fingerprint is the SHA-256 of /var/lib/lxd/server.crt. Incus 6.0's has the same keys.
LAB_TOKEN_JSON = {"client_name": "probe-x",
                  "fingerprint": "3cd889021961f92f183cc525377ec7551d812b69dc097e5e726fe3ec7fae3c38",
                  "addresses": ["127.0.0.1:18443"], "secret": "0" * 64, "expires_at": "0001-01-01T00:00:00Z"}


def make_token(**changes: object) -> str:
    return base64.b64encode(json.dumps({**LAB_TOKEN_JSON, **changes}).encode()).decode()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_token_is_decoded_as_the_clis_do():
    token = decode_token(make_token(), "remotes 'new'")
    assert (token.client_name, token.fingerprint, token.addresses) == (
        "probe-x", LAB_TOKEN_JSON["fingerprint"], ("127.0.0.1:18443",))
    # The secret is kept, but never shown.
    assert token.secret == "0" * 64 and "0" * 64 not in repr(token)
    # Copied with a line break, or an upper-case fingerprint: the same token.
    wrapped = make_token(fingerprint=LAB_TOKEN_JSON["fingerprint"].upper())
    assert decode_token(wrapped[:40] + "\n  " + wrapped[40:], "w").fingerprint == LAB_TOKEN_JSON["fingerprint"]


@pytest.mark.parametrize(("token", "lacks"), [
    ("eyJ-secret-token", "base64 of a JSON object"),
    (base64.b64encode(b"not a token").decode(), "base64 of a JSON object"),
    (base64.b64encode(b"[1, 2]").decode(), "base64 of a JSON object"),
    (make_token(fingerprint=""), "fingerprint"),
    (make_token(secret="", addresses=[]), "secret, addresses"),
    (make_token(fingerprint="abc"), "a SHA-256 fingerprint"),
])
def test_what_is_not_a_token_is_an_option_error_naming_the_remote_and_option(token, lacks):
    with pytest.raises(OptionError) as error:
        decode_token(token, "remotes 'new'")
    assert error.value.where == "remotes 'new'" and NOT_A_TOKEN in error.value.reasons
    assert str(error.value).startswith(f"remotes 'new': option trust_token is not an LXD or Incus trust token "
                                       f"(it lacks {lacks}).")
    assert "Fix: give the whole token that 'lxc config trust add --name NAME'" in str(error.value)
    assert token not in str(error.value) and "0" * 64 not in str(error.value)


def test_the_config_directory_is_mage_lxds_own_under_xdg_config_home_or_home():
    assert config_dir({}, "/home/u") == "/home/u/.config/mage-lxd"
    assert config_dir({"XDG_CONFIG_HOME": "/x/conf"}, "/home/u") == "/x/conf/mage-lxd"
    # A relative XDG_CONFIG_HOME is invalid (the XDG spec) and ignored.
    assert config_dir({"XDG_CONFIG_HOME": "conf"}, "/home/u") == "/home/u/.config/mage-lxd"
    assert token_paths("prod", "https://lxd.example.org:8443", {}, "/home/u") == {
        "client_cert": "/home/u/.config/mage-lxd/client.crt", "client_key": "/home/u/.config/mage-lxd/client.key",
        "server_cert": f"/home/u/.config/mage-lxd/servercerts/{pin_name('prod', 'https://lxd.example.org:8443')}.crt"}


def test_a_pinned_certificate_is_named_after_the_remote_and_its_server():
    assert re.fullmatch(r"prod-[0-9a-f]{16}", pin_name("prod", "https://h:1"))
    # A task's remote is 'local' unless named: its host and port tell servers apart.
    assert re.fullmatch(r"local-[0-9a-f]{16}", pin_name("local", "https://lxd.example.org"))
    assert pin_name("local", "https://lxd.example.org") != pin_name("local", "https://lxd.example.org:9443")
    assert pin_name("", "https://[fd00::1]:9443") == pin_name("local", "https://[fd00::1]:9443")
    assert pin_name("a/b", "https://h").startswith("a_b-")
    # The same server however its url is written: the default port, a trailing slash, the host's case.
    assert pin_name("prod", "https://H/") == pin_name("prod", "https://h:8443")
    # One file per (name, server): 'local' at h:8443 and a remote named 'h_8443' elsewhere do not
    # share one, nor do names that read alike once made safe for a file name.
    names = [pin_name("local", "https://h:8443"), pin_name("h_8443", "https://other:8443"),
             pin_name("h_8443", "https://h:8443"), pin_name("a/b", "https://h"), pin_name("a_b", "https://h"),
             pin_name("a-b", "https://c"), pin_name("a", "https://b-c")]
    assert len(set(names)) == len(names)


def test_options_given_win_over_the_tokens_defaults():
    token = make_token()
    given = {"trust_token": token}
    options, fingerprint, pin = apply_token_defaults(given, "prod", "https://h:8443", True, "w", {}, "/home/u")
    assert fingerprint == LAB_TOKEN_JSON["fingerprint"] and pin is True
    assert (options["client_cert"], options["client_key"], options["server_cert"]) == (
        "/home/u/.config/mage-lxd/client.crt", "/home/u/.config/mage-lxd/client.key",
        f"/home/u/.config/mage-lxd/servercerts/{pin_name('prod', 'https://h:8443')}.crt")
    assert given == {"trust_token": token}  # not changed in place
    # A server_cert given wins: nothing is pinned, but the token is still decoded, its fingerprint
    # checked before the token is sent.
    mine = {"trust_token": token, "client_cert": "/c.crt", "client_key": "/c.key", "server_cert": "/s.crt"}
    assert apply_token_defaults(mine, "prod", "https://h", True, "w", {}, "/home/u") == (
        mine, LAB_TOKEN_JSON["fingerprint"], False)
    # TLS turned off: nothing to pin, the fingerprint still checked; the pair still has its default.
    options, fingerprint, pin = apply_token_defaults({"trust_token": token}, "prod", "https://h", False, "w", {},
                                                     "/home/u")
    assert (fingerprint, pin) == (LAB_TOKEN_JSON["fingerprint"], False)
    assert "server_cert" not in options and options["client_cert"].endswith("client.crt")


def test_a_remote_with_only_a_url_and_a_token_is_complete(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "conf"))
    token = make_token()
    remote = remote_from_mapping({"name": "new", "url": "https://127.0.0.1:18443", "trust_token": token},
                                 where="remotes")
    directory = tmp_path / "conf" / "mage-lxd"
    assert (remote.client_cert, remote.client_key, remote.server_cert) == (
        str(directory / "client.crt"), str(directory / "client.key"),
        str(directory / "servercerts" / f"{pin_name('new', 'https://127.0.0.1:18443')}.crt"))
    assert remote.token_fingerprint == LAB_TOKEN_JSON["fingerprint"] and remote.validate_certs is True
    assert remote.pin_token is True
    # Nothing is written before a connection: parsing options stays pure.
    assert not (tmp_path / "conf").exists()
    # The host variables point the connection at the same files, never at the token.
    assert remote.connection_vars()["mage_lxd_server_cert"] == remote.server_cert
    assert token not in str(remote.connection_vars())
    with pytest.raises(OptionError, match=r"^remotes 'new': option trust_token is not an LXD or Incus trust token"):
        remote_from_mapping({"name": "new", "url": "https://127.0.0.1:18443", "trust_token": "bm90IGEgdG9rZW4="},
                            where="remotes")


def test_a_task_with_only_url_and_token_pins_under_host_and_port(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    remote = remote_from_task_args({"url": "https://127.0.0.1:18444", "trust_token": make_token()}, "task remote")
    assert remote.server_cert == str(tmp_path / "mage-lxd" / "servercerts" /
                                     f"{pin_name('local', 'https://127.0.0.1:18444')}.crt")


def test_a_fingerprint_that_is_not_the_tokens_is_refused_with_both_and_the_fix():
    der = ssl.PEM_cert_to_DER_cert(make_leaf(make_ca(), ["127.0.0.1"])[0])
    check_token_fingerprint(der_fingerprint(der), der, "w", "/p.crt")
    with pytest.raises(FingerprintMismatchError) as error:
        check_token_fingerprint("ab" * 32, der, "remote 'new' (https://h)", "/p.crt")
    assert (error.value.expected, error.value.presented) == ("ab" * 32, der_fingerprint(der))
    assert FINGERPRINT_MISMATCH in error.value.reasons and isinstance(error.value, RemoteError)
    message = str(error.value)
    assert message.startswith(f"remote 'new' (https://h): the server's certificate has the SHA-256 fingerprint "
                              f"{der_fingerprint(der)}, but the trust_token names {'ab' * 32}")
    assert "Fix: check that the url is the server that made the token" in message and "/p.crt" in message


class _FakeLxd:
    """A TLS server on 127.0.0.1 that answers GET /1.0 and POST /1.0/certificates as LXD 5.0 does:
    a token trusts the client once, and the same token is refused after. It does not read client
    certificates (Python's ssl cannot accept any self-signed one), so `trusted` is the state of the
    one client under test; a test sets it back to False to stand for another client."""

    def __init__(self, directory, cert_pem: str | None = None, key_pem: str | None = None) -> None:
        if cert_pem is None:
            cert_pem, key_pem = make_leaf(make_ca(), ["127.0.0.1"])
        (directory / "lxd.crt").write_text(cert_pem)
        (directory / "lxd.key").write_text(key_pem or "")
        self.der = ssl.PEM_cert_to_DER_cert(cert_pem)
        self.requests: list[tuple[str, str]] = []
        self.trusted = False
        self.spent: set[str] = set()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - the base class's name
                fake.requests.append(("GET", self.path))
                environment = {"environment": {"server": "lxd", "server_version": "5.0.2"}} if fake.trusted else {}
                self._answer(200, {"type": "sync", "metadata": {
                    "auth": "trusted" if fake.trusted else "untrusted", "api_extensions": ["certificate_token"],
                    **environment}})

            def do_POST(self):  # noqa: N802 - the base class's name
                fake.requests.append(("POST", self.path))
                secret = json.loads(self.rfile.read(int(self.headers["Content-Length"]))).get("password", "")
                if secret in fake.spent:
                    self._answer(403, {"type": "error", "error": "not authorized", "error_code": 403})
                    return
                fake.spent.add(secret)
                fake.trusted = True
                self._answer(200, {"type": "sync", "metadata": {}})

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(directory / "lxd.crt"), str(directory / "lxd.key"))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, fingerprint: str | None = None) -> str:
        """A token of this server (its certificate's fingerprint, unless another is given)."""
        return make_token(fingerprint=fingerprint or der_fingerprint(self.der), secret=os.urandom(16).hex(),
                          addresses=[self.url.removeprefix("https://")])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lxd(tmp_path):
    fake = _FakeLxd(tmp_path)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def no_pauses(monkeypatch):
    monkeypatch.setattr(lxd_api_module, "TRUST_RECHECKS", (0.0, 0.0))


def _connect(monkeypatch, url: str, token: str, home, name: str = "new") -> LxdApi:
    """A controller whose XDG_CONFIG_HOME is under `home`, given only the url and the token."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return LxdApi(remote_from_mapping({"name": name, "url": url, "trust_token": token, "timeout": 5},
                                      where="remotes"))


def test_a_fresh_controller_with_only_url_and_token_pins_the_server_and_is_trusted(lxd, tmp_path, monkeypatch):
    token = lxd.token()
    api = _connect(monkeypatch, lxd.url, token, tmp_path)
    assert api.host_info["auth"] == "trusted" and api.kind.title == "LXD"
    assert lxd.requests == [("GET", "/1.0"), ("POST", "/1.0/certificates"), ("GET", "/1.0")]
    directory = tmp_path / ".config" / "mage-lxd"
    pinned = directory / "servercerts" / f"{pin_name('new', lxd.url)}.crt"
    # The server's own certificate, pinned: 0644, in new 0700 directories, next to the 0600 key.
    assert ssl.PEM_cert_to_DER_cert(pinned.read_text()) == lxd.der
    assert _mode(pinned) == 0o644 and _mode(directory) == 0o700 and _mode(directory / "servercerts") == 0o700
    assert _mode(directory / "client.key") == 0o600
    assert sorted(os.listdir(directory)) == ["client.crt", "client.key", "servercerts"]
    assert os.listdir(directory / "servercerts") == [pinned.name]

    # The next run, the token spent: the pin and the pair are there, the token is never sent again.
    lxd.requests.clear()
    before = {path: path.read_bytes() for path in (pinned, directory / "client.crt", directory / "client.key")}
    again = _connect(monkeypatch, lxd.url, token, tmp_path)
    assert again.host_info["auth"] == "trusted" and lxd.requests == [("GET", "/1.0")]
    assert {path: path.read_bytes() for path in before} == before


def test_a_second_fresh_controller_with_the_spent_token_fails_clearly(lxd, tmp_path, no_pauses, monkeypatch):
    token = lxd.token()
    _connect(monkeypatch, lxd.url, token, tmp_path / "first")
    lxd.trusted = False  # another client pair
    with pytest.raises(RemoteError) as error:
        _connect(monkeypatch, lxd.url, token, tmp_path / "second")
    message = str(error.value)
    assert message.startswith(f"LXD remote 'new' ({lxd.url}): option trust_token: the server refused the token")
    assert "(not authorized)" in message and "Fix: on the server run 'lxc config trust add --name NAME'" in message
    # Its pin was still made from the token: the token names the server, spent or not.
    assert (tmp_path / "second" / ".config" / "mage-lxd" / "servercerts" / f"{pin_name('new', lxd.url)}.crt").exists()


def test_a_server_whose_certificate_is_not_the_tokens_gets_no_request_and_no_pin(lxd, tmp_path, monkeypatch):
    other = ssl.PEM_cert_to_DER_cert(make_leaf(make_ca(), ["127.0.0.1"])[0])
    with pytest.raises(FingerprintMismatchError) as error:
        _connect(monkeypatch, lxd.url, lxd.token(fingerprint=der_fingerprint(other)), tmp_path)
    assert (error.value.expected, error.value.presented) == (der_fingerprint(other), der_fingerprint(lxd.der))
    assert str(error.value).startswith(f"remote 'new' ({lxd.url}): the server's certificate has the SHA-256 "
                                       f"fingerprint {der_fingerprint(lxd.der)}, but the trust_token names "
                                       f"{der_fingerprint(other)}")
    # Nothing was sent, and nothing written: no pin, no client pair.
    assert lxd.requests == [] and not (tmp_path / ".config").exists()


def test_a_pin_another_token_made_is_replaced_only_when_the_server_shows_the_new_one(lxd, tmp_path):
    pinned = tmp_path / "servercerts" / "new.crt"
    pinned.parent.mkdir()
    old_pem = make_leaf(make_ca(), ["127.0.0.1"])[0]
    pinned.write_text(old_pem)
    expected = der_fingerprint(lxd.der)
    assert not stored_pin_matches(str(pinned), expected, "w")
    assert pin_from_token(lxd.url, expected, str(pinned), 5, "w") is True
    assert stored_pin_matches(str(pinned), expected, "w") and _mode(pinned) == 0o644
    # Pinned: no connection at all (the server is gone).
    lxd.stop()
    assert pin_from_token(lxd.url, expected, str(pinned), 5, "w") is False
    assert sorted(os.listdir(pinned.parent)) == ["new.crt"]  # no temporary file is left


def test_an_explicit_server_cert_wins_and_tls_stays_verified(lxd, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    wrong = tmp_path / "wrong.crt"
    wrong.write_text(make_leaf(make_ca(), ["127.0.0.1"])[0])
    remote = remote_from_mapping({"name": "new", "url": lxd.url, "trust_token": lxd.token(), "server_cert": str(wrong),
                                  "timeout": 5}, where="remotes")
    assert remote.pin_token is False and remote.token_fingerprint == der_fingerprint(lxd.der)
    # The given pin is not this server's: refused at the TLS check, before any request, and nothing
    # is pinned from the token instead.
    with pytest.raises(RemoteError, match=r"TLS verification failed .*is not this server's certificate"):
        LxdApi(remote)
    assert lxd.requests == [] and not (tmp_path / "mage-lxd" / "servercerts").exists()


def test_an_unreachable_server_is_named_while_pinning(tmp_path):
    port = _free_port()
    with pytest.raises(RemoteError) as error:
        pin_from_token(f"https://127.0.0.1:{port}", "ab" * 32, str(tmp_path / "p.crt"), 2, "remote 'new' (url)")
    assert error.value.where == "remote 'new' (url)" and not isinstance(error.value, FingerprintMismatchError)
    assert "reading the server's certificate to compare it with the trust_token failed" in str(error.value)
    assert not (tmp_path / "p.crt").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _connect_with(monkeypatch, home, **options) -> LxdApi:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return LxdApi(remote_from_mapping({"name": "new", "timeout": 5, **options}, where="remotes"))


@pytest.mark.parametrize("validate_certs", [False, "no"])
def test_without_tls_checks_the_token_still_goes_only_to_the_server_it_names(lxd, tmp_path, monkeypatch,
                                                                             validate_certs):
    other = ssl.PEM_cert_to_DER_cert(make_leaf(make_ca(), ["127.0.0.1"])[0])
    with pytest.raises(FingerprintMismatchError) as error:
        _connect_with(monkeypatch, tmp_path, url=lxd.url, trust_token=lxd.token(fingerprint=der_fingerprint(other)),
                      validate_certs=validate_certs)
    assert (error.value.expected, error.value.presented) == (der_fingerprint(other), der_fingerprint(lxd.der))
    # The untrusted GET /1.0 only: the token was never sent, and nothing was pinned.
    assert lxd.requests == [("GET", "/1.0")] and lxd.spent == set()
    assert not (tmp_path / ".config" / "mage-lxd" / "servercerts").exists()
    # The token's own server: trusted, still without a pin (TLS checks are off).
    api = _connect_with(monkeypatch, tmp_path, url=lxd.url, trust_token=lxd.token(), validate_certs=validate_certs)
    assert api.host_info["auth"] == "trusted" and api.remote.server_cert is None
    assert not (tmp_path / ".config" / "mage-lxd" / "servercerts").exists()


def test_a_server_cert_given_that_is_not_the_tokens_is_refused_naming_both(lxd, tmp_path, monkeypatch):
    wrong = tmp_path / "wrong.crt"
    wrong.write_text(make_leaf(make_ca(), ["127.0.0.1"])[0])
    with pytest.raises(FingerprintMismatchError) as error:
        _connect_with(monkeypatch, tmp_path, url=lxd.url, trust_token=lxd.token(), server_cert=str(wrong),
                      validate_certs=False)
    presented = der_fingerprint(ssl.PEM_cert_to_DER_cert(wrong.read_text()))
    assert (error.value.expected, error.value.presented) == (der_fingerprint(lxd.der), presented)
    assert str(wrong) in str(error.value) and presented in str(error.value) and der_fingerprint(lxd.der) in str(
        error.value)
    assert lxd.requests == [("GET", "/1.0")] and lxd.spent == set()
    # The server's own certificate as server_cert: the token is sent, and nothing is pinned from it.
    right = tmp_path / "right.crt"
    right.write_text(ssl.DER_cert_to_PEM_cert(lxd.der))
    api = _connect_with(monkeypatch, tmp_path, url=lxd.url, trust_token=lxd.token(), server_cert=str(right))
    assert api.host_info["auth"] == "trusted" and api.remote.server_cert == str(right)
    assert not (tmp_path / ".config" / "mage-lxd" / "servercerts").exists()


@pytest.mark.parametrize("options", [{"validate_certs": False}, {"server_cert": __file__}])
def test_a_malformed_token_is_an_option_error_whatever_tls_says(tmp_path, monkeypatch, options):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(OptionError) as error:
        remote_from_mapping({"name": "new", "url": "https://127.0.0.1:18443", "trust_token": "eyJ-not-a-token",
                             **options}, where="remotes")
    assert NOT_A_TOKEN in error.value.reasons


@pytest.mark.parametrize("kind", ["directory", "symlink loop"])
def test_a_pin_path_that_cannot_be_read_is_an_option_error_naming_the_remote_and_server_cert(tmp_path, kind):
    path = tmp_path / "pin.crt"
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(path)
    with pytest.raises(OptionError) as error:
        pin_from_token("https://127.0.0.1:1", "ab" * 32, str(path), 2, "remote 'new' (https://127.0.0.1:1)")
    assert error.value.where == "remote 'new' (https://127.0.0.1:1)"
    assert f"server_cert '{path}'" in str(error.value) and "Fix: " in str(error.value)


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "a\x1bb", "a\x7fb"])
def test_a_remote_name_with_a_control_character_is_refused(tmp_path, monkeypatch, name):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(OptionError, match=r"^remotes: the remote name .* has a control character"):
        remote_from_mapping({"name": name, "url": "https://127.0.0.1:18443", "trust_token": make_token()},
                            where="remotes")


def test_one_rule_for_a_pem_certificates_fingerprint(tmp_path):
    pem = make_leaf(make_ca(), ["127.0.0.1"])[0]
    expected = der_fingerprint(ssl.PEM_cert_to_DER_cert(pem))
    # As OpenSSL's pkcs12 export writes it: attributes before the block; and text after it.
    path = tmp_path / "server.crt"
    path.write_text(f"Bag Attributes\n    friendlyName: lxd\nsubject=/CN=lxd\n{pem}\ntrailing words\n")
    assert pem_fingerprint(path.read_bytes()) == expected == pinned_sha256(str(path)).hex()
    assert stored_pin_matches(str(path), expected, "w")
    check_server_cert_is_tokens(str(path), expected, "w")
    # No certificate, or a block that is not base64: none for either.
    for text in ("no certificate here", "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"):
        path.write_text(text)
        assert pem_fingerprint(text.encode()) is None
        with pytest.raises(OptionError):
            pinned_sha256(str(path))
