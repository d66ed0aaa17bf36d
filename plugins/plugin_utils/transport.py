"""How HTTP requests reach LXD: one kept-alive connection per thread, over the unix socket or TLS.

Standard library only (http.client, ssl): every Ansible task on every host opens a connection in
a fresh worker process, so the client is small to import and to build (the README's comparison
has the figures). It gives a request, a response, LXD's error answer as an `ApiError` whose text
is classified once (`classify_answer`), and TLS checked the way we want (`tls_socket`, shared with
the exec websockets, whose TLS `tls_relay` hands to websockets as a plain socket).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json as json_module
import os
import re
import select
import selectors
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlparse

from .errors import OptionError

if TYPE_CHECKING:
    from .remote import Remote

# The base URL of the unix socket's session: the host name is never resolved.
UNIX_BASE = "http://unix.socket"
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
# The port of an https:// url that names none (LXD's and Incus's own).
DEFAULT_HTTPS_PORT = 8443
# Bytes per read and write when a body is streamed (files).
BLOCK_SIZE = 1024 * 1024
# Bytes per read when tls_relay passes an exec websocket's traffic on.
RELAY_CHUNK = 64 * 1024
Timeout = float | tuple[float | None, float | None] | None


# Methods that may be sent again when a kept connection turns out closed before any answer.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class _StaleConnection(Exception):
    """A kept connection the server had closed; the request never reached it."""


# What an answer of LXD's (or Incus's) says, beyond its status: classify_answer sorts the text
# once, here, and everything else decides on these.
INSTANCE_MISSING = "instance missing"  # a 404 that names an instance
NOT_RUNNING = "not running"  # the instance is stopped
FROZEN = "frozen"  # the instance is frozen
DEADLINE = "deadline exceeded"  # a bounded operation wait ended (Incus's answer to it)
ARGUMENTS_TOO_LONG = "arguments too long"  # the kernel refused an exec's command line (E2BIG)


def classify_answer(status: int, text: str) -> frozenset[str]:
    """The reasons (above) LXD's or Incus's error `text` with `status` gives."""
    lowered = text.lower()
    reasons = set()
    if status == 404 and "instance" in lowered:
        reasons.add(INSTANCE_MISSING)
    if "not running" in lowered or "is stopped" in lowered:
        reasons.add(NOT_RUNNING)
    if "frozen" in lowered:
        reasons.add(FROZEN)
    if "deadline exceeded" in lowered:
        reasons.add(DEADLINE)
    if "argument list too long" in lowered:
        reasons.add(ARGUMENTS_TOO_LONG)
    return frozenset(reasons)


class ApiError(Exception):
    """LXD answered with an error (or an operation failed): its HTTP status, its own text, and the
    reasons that text gives (classify_answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reasons = classify_answer(status, message)


class TransportError(Exception):
    """The server could not be reached, failed the TLS check, or stopped answering: `kind` is
    "tls", "timeout" or "connect"; the cause is chained. Only raised for the connection itself,
    so a local file's OSError is never mistaken for it."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.kind = kind


def _transport_error(exc: BaseException) -> TransportError:
    if isinstance(exc, ssl.SSLError):
        return TransportError("tls", exc)
    if isinstance(exc, TimeoutError):
        return TransportError("timeout", exc)
    return TransportError("connect", exc)


def error_answer(response: Response, streamed: bool) -> ApiError | None:
    """The ApiError an answer carries, or None. An error status is one; so is a JSON answer of
    type "error" whatever its status: Incus answers a failed operation's wait with HTTP 200 and
    {"type": "error", "error_code": 500, "error": "..."}. A streamed answer (file content) is
    judged by its status only."""
    if response.status_code < 400 and (streamed or "json" not in str(response.headers.get("Content-Type", ""))):
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    if response.status_code < 400 and body.get("type") != "error":
        return None
    status = response.status_code if response.status_code >= 400 else int(body.get("error_code") or 500)
    return ApiError(status, str(body.get("error") or "") or response.text[:300] or f"HTTP {status}")


_UNREAD = object()


class Response:
    """One answer: status, headers (case-insensitive `get`), and the body read whole (`content`,
    `json()`) or, for a streamed request, in blocks (`iter_content`) until `close()`."""

    def __init__(self, raw: http.client.HTTPResponse, done: Any) -> None:
        self.status_code = raw.status
        self.headers = raw.headers
        self._raw = raw
        self._done = done  # called with True when the connection may be used again
        self._content: bytes | None = None
        self._json: Any = _UNREAD

    @property
    def content(self) -> bytes:
        return self.read()

    def read(self) -> bytes:
        """The whole body, read once; the connection is released when it has been read."""
        if self._content is None:
            try:
                self._content = self._raw.read()
            except (OSError, http.client.HTTPException) as exc:
                raise _transport_error(exc) from exc
            finally:
                self.close()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        if self._json is _UNREAD:  # parsed once: error_answer reads it before the caller does
            self._json = json_module.loads(self.content)
        return self._json

    def iter_content(self, size: int) -> Iterator[bytes]:
        while True:
            try:
                block = self._raw.read(size)
            except (OSError, http.client.HTTPException) as exc:
                raise _transport_error(exc) from exc
            if not block:
                return
            yield block

    def close(self) -> None:
        if self._done is not None:
            finished = self._raw.isclosed()  # read to its end: the connection can take the next request
            self._raw.close()
            self._done(finished)
            self._done = None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("unix.socket", timeout=timeout, blocksize=BLOCK_SIZE)
        self.path = path

    def connect(self) -> None:
        self.sock = unix_socket(self.path, self.timeout)


class _TlsConnection(http.client.HTTPConnection):
    def __init__(self, remote: Remote, timeout: float | None) -> None:
        parsed = urlparse(remote.url)
        super().__init__(parsed.hostname or "", parsed.port or DEFAULT_HTTPS_PORT, timeout=timeout, blocksize=BLOCK_SIZE)
        self.remote = remote

    def connect(self) -> None:
        self.sock = tls_socket(self.remote, self.host, self.port, self.timeout)


class ApiSession:
    """Requests to one LXD server, each thread on a connection of its own that is kept open."""

    def __init__(self, remote: Remote, endpoint: str) -> None:
        self.remote = remote
        self.endpoint = endpoint  # the socket's path, or the https:// URL
        self._local = threading.local()
        if remote.is_https and remote.validate_certs and remote.server_cert:
            pinned_sha256(remote.server_cert)  # a bad pin is an OptionError now, not at the first request

    def request(self, method: str, url: str, params: Mapping[str, Any] | None = None, json: Any = None,
                data: Any = None, headers: Mapping[str, str] | None = None, stream: bool = False,
                timeout: Timeout = None, peer_check: Callable[[bytes | None], None] | None = None) -> Response:
        """`method` `url` (its path is used) with `params` as the query; `json` or `data` (bytes or
        a file, streamed) as the body. The body is read at once unless `stream`. `peer_check` is
        given the server's certificate (DER) of every TLS connection the request is to go on, before
        anything is sent on it, and refuses it by raising."""
        connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        target = urlparse(url).path + (f"?{urlencode(params)}" if params else "")
        sent_headers = dict(headers or {})
        body = data
        if json is not None:
            body = json_module.dumps(json).encode()
            sent_headers["Content-Type"] = "application/json"
        if hasattr(body, "fileno"):
            # A file is streamed with its length, not chunked (LXD's files API wants the length).
            sent_headers["Content-Length"] = str(os.fstat(body.fileno()).st_size - body.tell())
        method = method.upper()
        start = body.tell() if hasattr(body, "seek") else None
        try:
            raw = self._send(method, target, body, sent_headers, connect_timeout, read_timeout, peer_check)
        except _StaleConnection:
            # The server had closed the kept connection (a race a poll cannot see): the request did
            # not reach it, so it is sent once more, on a new connection.
            if start is not None:
                body.seek(start)
            raw = self._send(method, target, body, sent_headers, connect_timeout, read_timeout, peer_check)
        response = Response(raw, self._release)
        if not stream:
            response.read()
        return response

    def _send(self, method: str, target: str, body: Any, headers: dict[str, str], connect_timeout: float | None,
              read_timeout: float | None, peer_check: Callable[[bytes | None], None] | None = None
              ) -> http.client.HTTPResponse:
        connection, reused = self._connection(connect_timeout)
        try:
            if peer_check is not None:
                if connection.sock is None:
                    connection.connect()
                peer_check(connection.sock.getpeercert(binary_form=True))
            try:
                connection.request(method, target, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as exc:
                if reused:  # refused while sending: the server never had the whole request
                    raise _StaleConnection from exc
                raise
            connection.sock.settimeout(read_timeout)
            try:
                return connection.getresponse()
            except ConnectionResetError as exc:  # RemoteDisconnected included
                # Closed (or reset) without a word: only a request that may be repeated is sent
                # again (Go's client has the same rule).
                if reused and method in IDEMPOTENT:
                    raise _StaleConnection from exc
                raise
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise _transport_error(exc) from exc
        except BaseException:  # _StaleConnection included: the connection is never used again
            self._drop()
            raise

    def _connection(self, timeout: float | None) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before (kept open)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and _closed_by_peer(connection.sock):
            self._drop()
            connection = None
        reused = connection is not None and connection.sock is not None
        if connection is None:
            connection = (_TlsConnection(self.remote, timeout) if self.remote.is_https
                          else _UnixConnection(self.endpoint, timeout))
            self._local.connection = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection, reused

    def _release(self, reusable: bool) -> None:
        if not reusable:
            self._drop()

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()


def _closed_by_peer(sock: socket.socket | None) -> bool:
    """True when a kept connection can no longer be used: the server closed it while idle (it is
    readable, and nothing is owed to us between requests)."""
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()  # not select(): a descriptor above 1023 is fine here
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def pem_sha256(pem: bytes) -> str:
    """The SHA-256 fingerprint (lowercase hex) of the first certificate in PEM text `pem`: the first
    BEGIN/END CERTIFICATE block, whatever comes before or after it (OpenSSL's "Bag Attributes", a
    chain), its base64 strict. ValueError when there is none. The one rule for a pinned
    certificate (pinned_sha256) and one pinned from a token (client_trust.pem_fingerprint)."""
    block = PEM_CERTIFICATE.search(pem.decode(errors="replace"))
    if block is None:
        raise ValueError("no BEGIN/END CERTIFICATE block")
    return hashlib.sha256(base64.b64decode("".join(block.group(1).split()), validate=True)).hexdigest()


def pinned_sha256(server_cert: str) -> bytes:
    """The SHA-256 fingerprint of the (first) PEM certificate in `server_cert` (pem_sha256)."""
    with open(server_cert, "rb") as handle:
        pem = handle.read()
    try:
        return bytes.fromhex(pem_sha256(pem))
    except ValueError as exc:  # binascii.Error included
        raise OptionError(f"server_cert '{server_cert}' is not a PEM certificate ({exc}). Fix: copy the "
                          "server's own certificate (server.crt in its state directory).") from None


def unix_socket(path: str, timeout: float | None) -> socket.socket:
    """A socket connected to the unix socket `path` (API requests and exec websockets alike)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


# Built once per remote and process: every exec opens three TLS websockets, and loading the system
# CA store took 18.8 ms per context here (0.7 ms with a pinned server_cert).
@functools.lru_cache(maxsize=16)
def tls_context(remote: Remote) -> ssl.SSLContext:
    """Client certificate, and the server checked: against the system's CA store by default; by
    its fingerprint when `server_cert` pins it (checked in tls_socket); not at all when
    validate_certs is off."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if remote.client_cert:
        context.load_cert_chain(remote.client_cert, remote.client_key)
    if remote.validate_certs and not remote.server_cert:
        context.load_default_certs()
        return context
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_socket(remote: Remote, host: str, port: int, timeout: float | None) -> ssl.SSLSocket:
    """A TLS socket to `host:port`, the server checked before anything is sent (API requests and
    exec websockets alike)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        sock = tls_context(remote).wrap_socket(raw, server_hostname=host)
        if remote.validate_certs and remote.server_cert:
            check_pinned(remote, sock.getpeercert(binary_form=True))
    except BaseException:
        raw.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def check_pinned(remote: Remote, peer_der: bytes | None) -> None:
    """Refuse a server whose certificate is not the pinned server_cert."""
    check_pinned_sha256(remote.server_cert or "", peer_der)


def check_pinned_sha256(server_cert: str, peer_der: bytes | None) -> None:
    """Refuse a peer certificate (DER) that is not the one in the PEM file `server_cert`."""
    if peer_der is None or hashlib.sha256(peer_der).digest() != pinned_sha256(server_cert):
        raise ssl.SSLCertVerificationError(f"the server's certificate is not the pinned server_cert '{server_cert}'")


def tls_relay(tls: ssl.SSLSocket) -> socket.socket:
    """A plain socket relayed to `tls` by a thread of its own.

    websockets waits for input with select() on the socket's descriptor, which never wakes for
    bytes OpenSSL has already decrypted and holds (SSLSocket.pending()): given a TLS socket, one
    exec in 40 waited for a handshake answer that had arrived (measured here over 400 execs).
    The relay reads what is pending before it waits.
    """
    ours, theirs = socket.socketpair()
    threading.Thread(target=_relay, args=(tls, theirs), daemon=True).start()
    return ours


def _relay(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    # Reads from TLS never block: a readable descriptor may carry only a TLS 1.3 session ticket,
    # and a blocking read would then wait for data the server sends only after our request.
    tls.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(plain, selectors.EVENT_READ)
            while True:
                ready = [tls] if tls.pending() else [key.fileobj for key, _events in selector.select()]
                if tls in ready and not _pass_on(tls, plain):
                    return
                if plain in ready and not _pass_on(plain, tls):
                    return
    except OSError:
        return  # a reset or a TLS error ends the stream the same way
    finally:
        plain.close()
        tls.close()


def _pass_on(source: socket.socket, target: socket.socket) -> bool:
    """Move what `source` has to `target`; False once `source` is closed."""
    try:
        data = source.recv(RELAY_CHUNK)
    except ssl.SSLWantReadError:
        return True  # TLS records without data (a session ticket): nothing to pass on yet
    if not data:
        return False  # either side closed: close both, the other side sees the end
    if isinstance(target, ssl.SSLSocket):
        target.setblocking(True)  # sendall must finish; the server reads stdin on its own
        try:
            target.sendall(data)
        finally:
            target.setblocking(False)
    else:
        target.sendall(data)
    return True
