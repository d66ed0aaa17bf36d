"""Remote definitions are validated before any connection is tried."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from ansible_collections.mage.lxd.tests.unit.tls_material import make_ca, pem_cert

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import NotFoundError, OptionError, RemoteError
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote, local_socket_path, remote_from_mapping, remote_from_task_args, unique_remotes
from ansible_collections.mage.lxd.plugins.plugin_utils.server_kind import INCUS, LXD, server_kind
from ansible_collections.mage.lxd.plugins.plugin_utils.transport import ApiError, ApiSession, check_pinned, pinned_sha256, tls_context


def test_defaults_are_the_local_socket_with_verification_on():
    remote = remote_from_mapping({})
    assert remote == Remote(name="local", url="", validate_certs=True)
    assert not remote.is_https


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "colour": "red"}, "unknown key"),
        ({"name": "x", "url": "http://host:8443"}, "neither https://"),
        ({"name": "x", "url": "https://"}, "has no host name"),
        ({"name": "x", "url": "https://h:8443"}, "needs client_cert and client_key"),
        ({"name": "x", "url": "https://h:8443", "client_cert": "/nonexistent.crt"}, "go together"),
        ({"name": "x", "url": "https://h", "client_cert": "/no.crt", "client_key": "/no.key"}, "does not exist"),
        ({"name": "x", "timeout": "soon"}, "not a number"),
        ({"name": "x", "timeout": 0}, "more than 0"),
        ({"name": "x", "validate_certs": "maybe"}, "not a boolean"),
    ],
)
def test_bad_remotes_are_refused_with_the_remote_named(data, message):
    with pytest.raises(OptionError, match=message) as error:
        remote_from_mapping(data, where="remotes")
    assert "remotes 'x'" in str(error.value) or "remotes:" in str(error.value)


def test_two_remotes_with_one_name_are_refused():
    with pytest.raises(OptionError, match="used twice"):
        unique_remotes([Remote(name="a"), Remote(name="a")])


def test_the_pin_is_the_certificates_sha256_and_another_certificate_is_refused(tmp_path):
    certificate = make_ca()[0]
    other = make_ca()[0]
    cert = tmp_path / "c.pem"
    cert.write_text(pem_cert(certificate))
    remote = Remote(name="r", url="https://h:8443", server_cert=str(cert))
    assert pinned_sha256(str(cert)) == certificate.fingerprint(hashes.SHA256())
    # As `openssl x509 -text` writes it, and with a second certificate after it: the first is pinned.
    cert.write_text("Certificate:\n    Data: ...\n" + pem_cert(certificate) + pem_cert(other))
    assert pinned_sha256(str(cert)) == certificate.fingerprint(hashes.SHA256())
    cert.write_text(pem_cert(certificate))
    check_pinned(remote, certificate.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ssl.SSLCertVerificationError, match=f"not the pinned server_cert '{cert}'"):
        check_pinned(remote, other.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ssl.SSLCertVerificationError):
        check_pinned(remote, None)


def test_the_tls_context_checks_the_ca_store_unless_pinned_or_off(tmp_path):
    certificate = make_ca()[0]
    cert = tmp_path / "c.pem"
    cert.write_text(pem_cert(certificate))
    by_ca = tls_context(Remote(name="r", url="https://h:8443"))
    assert (by_ca.verify_mode, by_ca.check_hostname) == (ssl.CERT_REQUIRED, True)
    for remote in (Remote(name="r", url="https://h:8443", server_cert=str(cert)),
                   Remote(name="r", url="https://h:8443", validate_certs=False)):
        # The pin is compared in tls_socket (check_pinned); off is off.
        assert tls_context(remote).verify_mode == ssl.CERT_NONE


def test_a_server_cert_that_is_no_certificate_is_refused_naming_the_file(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    remote = Remote(name="r", url="https://h:8443", client_cert=str(cert), client_key=str(cert),
                    server_cert=str(cert))
    with pytest.raises(OptionError, match=f"server_cert '{cert}' is not a PEM certificate"):
        ApiSession(remote, remote.url)


def test_a_task_without_url_takes_the_whole_remote_from_the_environment(monkeypatch, tmp_path):
    for name in ("cluster.crt", "client.crt", "client.key", "own.crt", "own.key"):
        (tmp_path / name).write_text("x")
    monkeypatch.setenv("MAGE_LXD_URL", "https://10.187.40.11:8443")
    monkeypatch.setenv("MAGE_LXD_SERVER_CERT", str(tmp_path / "cluster.crt"))
    monkeypatch.setenv("MAGE_LXD_CLIENT_CERT", str(tmp_path / "client.crt"))
    monkeypatch.setenv("MAGE_LXD_CLIENT_KEY", str(tmp_path / "client.key"))
    remote = remote_from_task_args({}, where="test")
    assert (remote.url, remote.server_cert) == ("https://10.187.40.11:8443", str(tmp_path / "cluster.crt"))
    # A task naming its own url never borrows the environment's certificates (they pin another server).
    own = remote_from_task_args({"url": "https://127.0.0.1:18443", "client_cert": str(tmp_path / "own.crt"),
                                 "client_key": str(tmp_path / "own.key")}, where="test")
    assert (own.url, own.server_cert, own.client_cert) == ("https://127.0.0.1:18443", None, str(tmp_path / "own.crt"))


def test_the_server_kind_comes_from_get_1_0():
    recorded = Path(__file__).resolve().parent / "recorded"
    incus = json.loads((recorded / "incus-6.0.4-host.json").read_text())
    lxd = json.loads((recorded / "lxd-5.0.2.json").read_text())["GET /1.0"]
    assert server_kind(incus) is INCUS and server_kind(lxd) is LXD
    # What an untrusted client is told: no environment, the extension list only.
    assert server_kind({"api_extensions": incus["api_extensions"]}) is INCUS
    assert server_kind({"api_extensions": lxd["api_extensions"]}) is LXD
    # Incus reads only X-Incus-* file headers from 7.2 on; LXD only X-LXD-*.
    assert (INCUS.file_header_prefix, INCUS.cli) == ("X-Incus-", "incus")
    assert (LXD.file_header_prefix, LXD.cli) == ("X-LXD-", "lxc")


def test_the_incus_socket_is_found_only_when_lxds_is_absent(monkeypatch):
    present = {INCUS.state_dir + "/unix.socket"}
    monkeypatch.setattr(os.path, "exists", lambda path: path in present)
    assert local_socket_path("") == "/var/lib/incus/unix.socket"
    assert Remote().describe_as() == "Incus remote 'local' (unix:/var/lib/incus/unix.socket)"
    present.add("/var/lib/lxd/unix.socket")
    assert local_socket_path("") == "/var/lib/lxd/unix.socket"
    assert Remote().describe_as().startswith("LXD remote")
    # An explicit url always wins over discovery.
    assert local_socket_path("unix:/var/lib/incus/unix.socket") == "/var/lib/incus/unix.socket"


def test_a_missing_incus_socket_is_named_with_incus_fix(monkeypatch):
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    with pytest.raises(RemoteError, match=r"^Incus remote 'i' .*does not exist\. Fix: start Incus"):
        LxdApi(Remote(name="i", url="unix:/var/lib/incus/unix.socket"))


class Answer:
    """An answer as LxdApi reads it: status, JSON body."""

    def __init__(self, status: int, body: dict) -> None:
        self.status_code = status
        self.body = body
        self.headers = {"Content-Type": "application/json"}
        self.text = json.dumps(body)

    def json(self) -> dict:
        return self.body

    def close(self) -> None:
        return None


class AnsweringSession:
    """A session that records each request and answers from `answers` ({(method, path): (status, body)});
    the bodies are LXD's shapes, as recorded from the lab."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, dict]] = []

    def request(self, method: str, url: str, params=None, **_kwargs):
        path = url.split("/1.0", 1)[1] or "/"
        self.sent.append((method, path, dict(params or {})))
        return Answer(*self.answers[(method, path)])


HTTPS = Remote(name="h", url="https://h:8443")
TRUSTED = {"type": "sync", "metadata": {"auth": "trusted", "api_extensions": [], "environment": {}}}


def test_an_operation_url_with_a_query_is_waited_for_by_its_id():
    # A clustered LXD answers POST /1.0/instances?target=m1 with ".../operations/ID?target=m1".
    session = AnsweringSession({
        ("get", "/"): (200, TRUSTED),
        ("post", "/instances"): (202, {"type": "async", "operation": "/1.0/operations/abc?target=m1"}),
        ("get", "/operations/abc/wait"): (200, {"metadata": {"status": "Success", "metadata": {"id": 1}}}),
    })
    api = LxdApi(HTTPS, session=session, project="p")
    assert api.post("instances", {"name": "x"}, params={"target": "m1"}) == {"id": 1}
    assert session.sent[1:] == [("post", "/instances", {"target": "m1", "project": "p"}),
                                ("get", "/operations/abc/wait", {"project": "p"})]


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        ((404, {"type": "error", "error": "Instance not found", "error_code": 404}), NotFoundError,
         r"^LXD remote 'h' \(https://h:8443\): GET /1.0/instances/x: not found \(Instance not found\)$"),
        ((500, {"type": "error", "error": "Invalid value: lots", "error_code": 500}), RemoteError,
         r"GET /1.0/instances/x failed: Invalid value: lots$"),
    ],
)
def test_lxds_error_answers_name_the_remote_the_request_and_lxds_text(answer, error, message):
    session = AnsweringSession({("get", "/"): (200, TRUSTED), ("get", "/instances/x"): answer})
    with pytest.raises(error, match=message):
        LxdApi(HTTPS, session=session).get("instances/x")


def test_a_failed_operation_raises_lxds_own_text():
    session = AnsweringSession({
        ("get", "/"): (200, TRUSTED),
        ("put", "/instances/x/state"): (202, {"type": "async", "operation": "/1.0/operations/op"}),
        ("get", "/operations/op/wait"): (200, {"metadata": {"status": "Failure", "err": "address already in use"}}),
    })
    with pytest.raises(RemoteError, match=r"PUT /1.0/instances/x/state failed: address already in use$"):
        LxdApi(HTTPS, session=session).put("instances/x/state", {"action": "start"})


def test_an_error_answer_with_status_200_is_an_error_too():
    # What Incus 6.0 answers when an exec's command line is too long (recorded from the lab).
    session = AnsweringSession({
        ("get", "/"): (200, TRUSTED),
        ("get", "/operations/op/wait"): (200, {
            "type": "error", "status": "", "status_code": 0, "operation": "", "error_code": 500,
            "error": "fork/exec /usr/libexec/incus/incusd: argument list too long", "metadata": None}),
    })
    with pytest.raises(ApiError, match="argument list too long$") as error:
        LxdApi(HTTPS, session=session).wait_operation("/1.0/operations/op")
    assert error.value.status == 500


def test_an_untrusted_certificate_is_named_before_any_other_request():
    session = AnsweringSession({("get", "/"): (200, {"type": "sync", "metadata": {"auth": "untrusted"}})})
    with pytest.raises(RemoteError, match="does not trust the client certificate"):
        LxdApi(HTTPS, session=session)
    assert [sent[1] for sent in session.sent] == ["/"]
