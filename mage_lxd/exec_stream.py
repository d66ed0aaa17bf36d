"""LXD's non-interactive exec over websockets, with stdin of any size and TLS checked like the API.

pylxd's `execute()` sends stdin while connecting the stdin websocket, before stdout/stderr are
connected; LXD starts the command only once all three are, so a payload larger than the socket and
pipe buffers (a few hundred KB, e.g. the setup module) deadlocks until LXD gives up ("Broken
pipe"). Here stdout and stderr are connected and read first, then stdin, then the payload is
streamed in chunks. Its websockets also skip server certificate checks; ours verify the server
exactly as the HTTPS API session does (pinned certificate, CA store, or off) before the upgrade
request, which carries the operation's secret, is sent.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from ws4py.client import WebSocketBaseClient

from mage_lxd.errors import RemoteError
from mage_lxd.remote import LxdApi, Remote, local_socket_path

STDIN_CHUNK = 256 * 1024
# After the command ends, LXD flushes and closes the output websockets; this bounds that wait.
DRAIN_SECONDS = 30.0


@dataclass(frozen=True)
class ExecRequest:
    """One command: argv, environment, numeric ids, working directory and stdin bytes."""

    argv: list[str]
    environment: Mapping[str, str]
    uid: int = 0
    gid: int = 0
    cwd: str | None = None
    stdin: bytes = b""


def run_exec(api: LxdApi, instance: str, request: ExecRequest) -> tuple[int, bytes, bytes]:
    """Run `request` in `instance`; return (exit code, stdout, stderr). LXD errors propagate."""
    body: dict[str, Any] = {
        "command": request.argv,
        "environment": dict(request.environment),
        "wait-for-websocket": True,
        "interactive": False,
        "user": request.uid,
        "group": request.gid,
    }
    if request.cwd:
        body["cwd"] = request.cwd
    response = api.client.api.instances[instance]["exec"].post(json=body).json()
    operation_url = response["operation"]
    secrets = response["metadata"]["metadata"]["fds"]
    path = urlparse(operation_url).path
    streams = {
        fd: _Websocket(api.remote, f"{path}/websocket?secret={secrets[fd]}", api.project)
        for fd in ("1", "2", "0")
    }
    readers = []
    try:
        for fd in ("1", "2"):
            streams[fd].connect()
            reader = threading.Thread(target=streams[fd].run, daemon=True)
            reader.start()
            readers.append(reader)
        _send_stdin(streams["0"], request.stdin)
        operation = api.client.operations.wait_for_operation(operation_url)
        for reader in readers:
            reader.join(DRAIN_SECONDS)
    finally:
        for stream in streams.values():
            stream.close_quietly()
    return int(operation.metadata["return"]), streams["1"].output(), streams["2"].output()


def _send_stdin(stdin: _Websocket, payload: bytes) -> None:
    # LXD starts the command only once every stream is connected, so a failed connect is an error.
    stdin.connect()
    try:
        for start in range(0, len(payload), STDIN_CHUNK):
            stdin.send(payload[start:start + STDIN_CHUNK], binary=True)
        # An empty text message is LXD's end-of-file for the command's stdin.
        stdin.send(b"", binary=False)
    except OSError:
        # The command exited (or closed its stdin) before reading all of it, e.g. 127 when python is
        # missing: LXD closes the stream (EPIPE, or a reset or TLS EOF over HTTPS). As with a pipe,
        # what counts is its exit code and output, which the operation still reports.
        pass


class _Websocket(WebSocketBaseClient):
    """One exec stream: collects what LXD sends; over HTTPS, checks the server before upgrading."""

    def __init__(self, remote: Remote, resource: str, project: str | None) -> None:
        self.remote = remote
        self.chunks: list[bytes] = []
        if project:
            resource += f"&project={quote(project)}"
        if remote.is_https:
            parsed = urlparse(remote.url)
            super().__init__(f"ws://{parsed.hostname}:{parsed.port or 8443}", exclude_headers=["origin"])
            # ws4py's own TLS never checks the server; ours is made here and checked below.
            plain = self.sock
            self.sock = _tls_context(remote).wrap_socket(
                socket.socket(plain.family, socket.SOCK_STREAM), server_hostname=parsed.hostname
            )
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            plain.close()
            self._is_secure = True
        else:
            super().__init__("ws+unix://" + local_socket_path(remote.url), exclude_headers=["origin"])
        self.resource = resource

    @property
    def handshake_request(self) -> bytes:
        # Reached once TLS is up and before the upgrade (and its secret) is sent.
        if self.remote.is_https and self.remote.validate_certs and self.remote.server_cert:
            _check_pinned(self.remote, self.sock.getpeercert(binary_form=True))
        return super().handshake_request

    def received_message(self, message: Any) -> None:
        if message.data:
            self.chunks.append(bytes(message.data))

    def unhandled_error(self, error: Exception) -> None:
        # LXD resets the output sockets once the command is done; that is the normal end.
        if not isinstance(error, (ConnectionResetError, BrokenPipeError)):
            raise error

    def output(self) -> bytes:
        """Everything received so far."""
        return b"".join(self.chunks)

    def close_quietly(self) -> None:
        """Close, ignoring a socket the server has already closed."""
        try:
            self.close()
        except OSError:
            pass
        try:
            self.close_connection()
        except OSError:
            pass


def _tls_context(remote: Remote) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if remote.client_cert:
        context.load_cert_chain(remote.client_cert, remote.client_key)
    if remote.validate_certs and not remote.server_cert:
        context.load_default_certs()
        return context
    # Pinned (checked against the fingerprint in handshake_request) or validation turned off.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _check_pinned(remote: Remote, peer_der: bytes | None) -> None:
    with open(remote.server_cert or "", "rb") as handle:
        pinned = x509.load_pem_x509_certificate(handle.read()).fingerprint(hashes.SHA256())
    if peer_der is None or hashlib.sha256(peer_der).digest() != pinned:
        raise RemoteError(
            f"LXD remote {remote.describe()}: the exec websocket's certificate is not the pinned "
            f"server_cert '{remote.server_cert}'; refusing to send the command."
        )
