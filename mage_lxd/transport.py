"""How HTTP requests reach LXD: a requests session over the unix socket or over HTTPS.

This replaces pylxd. Everything we used of it was a session, a `GET /1.0` handshake and an error
type; its `Client` also imports all its models and introspects 13 managers on every construction,
about 100 ms of CPU in each Ansible worker that opens a connection (measured in a worker's
profile: 0.108 s of its 0.357 s), it imports ws4py, and it knows only LXD. `LxdApi` (remote.py)
drives the session; `ApiError` is what it raises for LXD's error answers.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mage_lxd.errors import OptionError

if TYPE_CHECKING:
    from mage_lxd.remote import Remote

# The base URL of the unix socket's session: the adapter mounted on it ignores the host name.
UNIX_BASE = "http://unix.socket"


class ApiError(Exception):
    """LXD answered with an error (or an operation failed): its HTTP status and its own text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def api_error(response: requests.Response) -> ApiError:
    """The ApiError for an error answer: LXD's `error` text, else the body's start."""
    try:
        message = str(response.json().get("error") or "")
    except ValueError:
        message = ""
    return ApiError(response.status_code, message or response.text[:300] or f"HTTP {response.status_code}")


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__("localhost", **kwargs)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixPool(urllib3.HTTPConnectionPool):
    def __init__(self, path: str) -> None:
        # Kept connections: as many as requests keeps per HTTPS host, for the batch's threads.
        super().__init__("localhost", maxsize=requests.adapters.DEFAULT_POOLSIZE)
        self.path = path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self.path, timeout=self.timeout.connect_timeout)


class UnixSocketAdapter(requests.adapters.HTTPAdapter):
    """Sends every request of the session to one unix socket, keeping connections for reuse."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.pool = _UnixPool(path)

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> _UnixPool:
        return self.pool

    def get_connection(self, url: Any, proxies: Any = None) -> _UnixPool:  # requests < 2.32
        return self.pool

    def close(self) -> None:
        self.pool.close()
        super().close()


class PinnedCertAdapter(requests.adapters.HTTPAdapter):
    """HTTPS to a server whose certificate must be exactly `server_cert` (LXD's is self-signed and
    names no host we could check), compared by its SHA-256 fingerprint."""

    def __init__(self, server_cert: str) -> None:
        self.fingerprint = pinned_sha256(server_cert).hex()
        super().__init__()

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The fingerprint is the check: no CA chain or host name applies to a pinned certificate.
        super().cert_verify(conn, url, False, cert)
        conn.assert_fingerprint = self.fingerprint


def pinned_sha256(server_cert: str) -> bytes:
    """The SHA-256 fingerprint of the PEM certificate in `server_cert` (the API's and the exec
    websockets' pin)."""
    with open(server_cert, "rb") as handle:
        try:
            return x509.load_pem_x509_certificate(handle.read()).fingerprint(hashes.SHA256())
        except ValueError as exc:
            raise OptionError(f"server_cert '{server_cert}' is not a PEM certificate ({exc}). Fix: copy the "
                              "server's own certificate (server.crt in its state directory).") from None


def make_session(remote: Remote, endpoint: str) -> requests.Session:
    """A requests session for `remote`: its unix socket (`endpoint` is the path), or HTTPS with
    the certificates it names.

    TLS is verified by default: a pinned `server_cert` (LXD's self-signed certificate) when given,
    else the system CA store; `validate_certs: false` turns it off, which only a lab should do.
    """
    session = requests.Session()
    # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace session.verify, which would silently
    # swap the pinned server certificate for a CA bundle, and proxy variables would send our
    # client certificate elsewhere: the remote's settings must win.
    session.trust_env = False
    if not remote.is_https:
        session.mount(UNIX_BASE, UnixSocketAdapter(endpoint))
        return session
    session.cert = (remote.client_cert, remote.client_key) if remote.client_cert else None
    session.verify = bool(remote.validate_certs)
    if remote.validate_certs and remote.server_cert:
        session.mount(endpoint, PinnedCertAdapter(remote.server_cert))
    return session
