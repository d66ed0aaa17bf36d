"""Remote definitions are validated before any connection is tried."""

from __future__ import annotations

import pytest

from mage_lxd.errors import OptionError
from mage_lxd.remote import Remote, make_session, remote_from_mapping, unique_remotes


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


def test_https_session_pins_the_server_certificate_and_ignores_ca_bundle_variables(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    remote = Remote(name="r", url="https://h:8443", client_cert=str(cert), client_key=str(cert),
                    server_cert=str(cert))
    session = make_session(remote, remote.url)
    assert session.verify == str(cert)
    assert session.cert == (str(cert), str(cert))
    assert session.trust_env is False
    insecure = make_session(Remote(name="r", url="https://h:8443", validate_certs=False), "https://h:8443")
    assert insecure.verify is False
