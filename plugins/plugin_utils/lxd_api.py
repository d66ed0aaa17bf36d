"""Our client of LXD's /1.0 API on transport.py's session: `LxdApi` talks to one `Remote` (it reads
`GET /1.0` as it is made, and asks for trust with a token when it has one), logs every request, and
turns every failure into a `RemoteError` naming the remote and the fix.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from .client_trust import (check_server_cert_is_tokens, check_token_fingerprint, decode_token, ensure_client_pair,
                           pin_from_token, token_request)
from .errors import NotFoundError, RemoteError, first_line
from .remote import LOCAL_SOCKETS, Remote, kind_from_url, local_socket_path
from .server_kind import INCUS, LXD, ServerKind, server_kind
from .transport import DEADLINE, UNIX_BASE, ApiError, ApiSession, Response, TransportError, error_answer

# Seconds between the looks at our trust after a refused token (about 3 s in all).
TRUST_RECHECKS = (0.0, 0.2, 0.4, 0.8, 1.6)

Log = Callable[[str], None]


def _no_log(_message: str) -> None:
    return None


@dataclass
class LxdApi:
    """One connected LXD server. Every call is logged and every failure names the remote."""

    remote: Remote
    session: ApiSession | None = None
    log: Log = _no_log
    # Set for clients that act in one project (the connection); the inventory passes it per call.
    project: str | None = None
    # The (connect, read) form lets exec wait long for output while connecting stays short.
    timeout: float | tuple[float, float | None] | None = None
    # `GET /1.0`, read once at connect: the server's kind, version, extensions and our trust.
    host_info: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        endpoint = self._endpoint()
        if self.remote.is_https and self.remote.pin_token and self.remote.token_fingerprint and self.remote.server_cert:
            # Before any request or file: nothing is made for, nor sent to,
            # a server whose certificate is not the token's.
            if pin_from_token(self.remote.url, self.remote.token_fingerprint, self.remote.server_cert,
                              self.remote.timeout, f"remote {self.remote.describe()}"):
                self.log(f"mage_lxd: {self.remote.name}: pinned the server certificate {self.remote.server_cert} "
                         f"(SHA-256 {self.remote.token_fingerprint}, as the trust token names)")
        if self.remote.is_https and self.remote.trust_token and self.remote.client_cert:
            if ensure_client_pair(self.remote.client_cert, self.remote.client_key or "",
                                  f"{self.remote.describe_as()}: client_cert"):
                self.log(f"mage_lxd: {self.remote.name}: generated the client pair {self.remote.client_cert}, "
                         f"{self.remote.client_key}")
        if self.session is None:
            self.session = ApiSession(self.remote, endpoint)
        self.base = f"{self.remote.url.rstrip('/') if self.remote.is_https else UNIX_BASE}/1.0"
        if self.timeout is None:
            self.timeout = self.remote.timeout
        self.log(f"mage_lxd: connecting to {self.remote.describe_as()}")
        # With a token, another controller may be adding this same pair right now (see _read_host_info).
        self.host_info = self._read_host_info(TRUST_RECHECKS if self.remote.trust_token else (0.0,))
        if self.remote.is_https and self.host_info.get("auth") != "trusted" and self.remote.trust_token:
            self._trust_with_token()
        if self.remote.is_https and self.host_info.get("auth") != "trusted":
            add = "config trust add" if self.kind is LXD else "config trust add-certificate"
            raise RemoteError(
                f"{self.describe()} does not trust the client certificate "
                f"'{self.remote.client_cert}'. Fix: on the server run "
                f"'{self.kind.cli} {add} {os.path.basename(self.remote.client_cert or 'client.crt')}' "
                "(or add a trust token), then retry."
            )

    def _trust_with_token(self) -> None:
        # Only a client the server does not trust yet gets here: a trusted one never sends the token.
        # The token goes only to the server it names, whatever validate_certs says (as `lxc remote add
        # --token`): a server_cert given must be the token's certificate, and the connection that
        # sends the token is checked against the token's fingerprint before anything is sent on it.
        where = f"remote {self.remote.describe()}"
        expected = self.remote.token_fingerprint or decode_token(self.remote.trust_token or "", where).fingerprint
        if self.remote.server_cert and not self.remote.pin_token:
            check_server_cert_is_tokens(self.remote.server_cert, expected, where)
        pin_path = self.remote.server_cert if self.remote.pin_token else None

        def check_peer(der: bytes | None) -> None:
            check_token_fingerprint(expected, der, where, pin_path)

        self.log(f"mage_lxd: {self.remote.name}: POST /1.0/certificates (adding {self.remote.client_cert} "
                 "with the trust token)")
        refused: ApiError | None = None
        with self._errors("POST /1.0/certificates"):
            try:
                self.request("post", "certificates", json=token_request(self.remote.trust_token or "", self.host_info,
                                                                        incus=self.kind is INCUS), peer_check=check_peer)
            except ApiError as exc:
                refused = exc
        # Refused: another controller with the same pair may have spent the token a moment before us,
        # and its add may not be visible yet (two at once on LXD 5.0.2), so trust is looked for briefly.
        for pause in (0.0,) if refused is None else TRUST_RECHECKS:
            time.sleep(pause)
            self.host_info = self._read_host_info(TRUST_RECHECKS)
            if self.host_info.get("auth") == "trusted":
                return
        cli = self.kind.cli
        add = f"{cli} config trust add --name NAME" if self.kind is LXD else f"{cli} config trust add NAME"
        answer = _api_message(refused) if refused else "it answered, but still does not trust the certificate"
        raise RemoteError(
            f"{self.describe()}: option trust_token: the server refused the token for the client certificate "
            f"'{self.remote.client_cert}' ({answer}); a token works once, and expires or is revoked "
            f"('{cli} config trust list-tokens' shows the valid ones). Fix: on the server run '{add}', "
            "set trust_token to the token it prints, and retry; or trust the certificate with "
            f"'{cli} config trust add{'-certificate' if self.kind is INCUS else ''} "
            f"{os.path.basename(self.remote.client_cert or 'client.crt')}'."
        )

    def _read_host_info(self, pauses: tuple[float, ...]) -> dict[str, Any]:
        """`GET /1.0`, asked again after each pause while the server answers it with an error.

        A request that arrives while a client certificate is being added can get an error answer
        instead of `auth` (Incus 6.0.4: "Failed to extract request details: Username not present in
        request context"), which says nothing about our trust yet. The last error answer is raised.
        """
        for attempt, pause in enumerate(pauses):
            time.sleep(pause if attempt else 0.0)
            with self._errors("connect"):
                try:
                    return self.request("get", "").json().get("metadata") or {}
                except ApiError:
                    if attempt == len(pauses) - 1:
                        raise
        return {}

    @property
    def kind(self) -> ServerKind:
        """LXD or Incus, as the server's own `GET /1.0` says (read once, at connect)."""
        return server_kind(self.host_info)

    def describe(self) -> str:
        """The remote as messages name it, with its kind: `Incus remote 'local' (unix:...)`."""
        return self.remote.describe_as(self.kind)

    def _endpoint(self) -> str:
        if self.remote.is_https:
            return self.remote.url.rstrip("/")
        path = local_socket_path(self.remote.url)
        kind = kind_from_url(self.remote.url)
        if not os.path.exists(path):
            raise RemoteError(
                f"{self.remote.describe_as(kind)}: the socket {path} does not exist. Fix: start "
                f"{kind.title} (lab/up.sh does it here), or set the remote's url (or MAGE_LXD_URL) to "
                f"the right socket (LXD: {LOCAL_SOCKETS[0]}, Incus: {INCUS.state_dir}/unix.socket) or "
                "an https:// endpoint."
            )
        if not os.access(path, os.R_OK | os.W_OK):
            group = "lxd" if kind is LXD else "incus-admin"
            raise RemoteError(
                f"{self.remote.describe_as(kind)}: no permission on {path}. Fix: run as root or "
                f"as a member of the '{group}' group."
            )
        return path

    @property
    def server_version(self) -> str:
        """The LXD server version string, e.g. '5.0.2'."""
        return str(self.host_info.get("environment", {}).get("server_version", ""))

    @property
    def clustered(self) -> bool:
        """True when the server is a member of an LXD cluster."""
        return bool(self.host_info.get("environment", {}).get("server_clustered", False))

    def has_extension(self, name: str) -> bool:
        """True when the server announces API extension `name` (probe before using it)."""
        return name in self.host_info.get("api_extensions", [])

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Response:
        """One request to /1.0/<path> (in this client's project, unless `params` names one);
        an error answer raises ApiError. `kwargs` go to the session (json, data, headers, stream,
        timeout)."""
        query = dict(params or {})
        if self.project and "project" not in query:
            query["project"] = self.project
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, f"{self.base}/{path}".rstrip("/"), params=query, **kwargs)
        error = error_answer(response, streamed=bool(kwargs.get("stream")))
        if error is not None:
            response.close()
            raise error
        return response

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET /1.0/<path> and return the response's metadata."""
        return self.get_with_etag(path, params)[0]

    def post(self, path: str, body: Any, params: Mapping[str, str] | None = None) -> Any:
        """POST /1.0/<path>; waits for the operation when LXD answers with one."""
        return self._write("post", path, body, params)

    def post_watched(self, path: str, body: Any, params: Mapping[str, str] | None,
                     watch: Callable[[Mapping[str, Any]], None], interval: int = 1) -> Any:
        """POST /1.0/<path> like post(), handing the operation's metadata to `watch` about every
        `interval` seconds while it runs (an image download's progress, say)."""
        what = f"POST /1.0/{path}"
        self.log(f"mage_lxd: {self.remote.name}: {what}" + (f" {dict(params)}" if params else ""))
        read_timeout = self.timeout[1] if isinstance(self.timeout, tuple) else self.timeout
        deadline = time.monotonic() + (read_timeout or float("inf"))
        with self._errors(what):
            data = self.request("post", path, params, json=body).json()
            if data.get("type") != "async":
                return data.get("metadata")
            while True:
                try:
                    operation = self.wait_operation(data["operation"], seconds=interval)
                except ApiError as exc:
                    # Incus answers a wait that timed out with "context deadline exceeded"; LXD with the
                    # operation as it is. The operation itself says how far it got.
                    if DEADLINE not in exc.reasons:
                        raise
                    operation = self.request("get", f"operations/{quote(_operation_id(data['operation']), safe='')}").json().get(
                        "metadata") or {}
                if operation.get("status") not in ("Running", "Pending"):
                    if operation.get("status") == "Failure":
                        raise ApiError(400, str(operation.get("err") or "the operation failed"))
                    return operation.get("metadata")
                watch(operation.get("metadata") or {})
                if time.monotonic() > deadline:
                    raise TransportError("timeout", TimeoutError(f"{what} still runs after {read_timeout:g}s"))

    def put(self, path: str, body: Any, params: Mapping[str, str] | None = None,
            etag: str | None = None) -> Any:
        """PUT /1.0/<path> (If-Match `etag` when given); waits for the operation when there is one."""
        return self._write("put", path, body, params, {"If-Match": etag} if etag else None)

    def delete(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """DELETE /1.0/<path>; waits for the operation when there is one."""
        return self._write("delete", path, None, params)

    def get_with_etag(self, path: str, params: Mapping[str, str] | None = None) -> tuple[Any, str]:
        """GET /1.0/<path>; return (metadata, ETag) so a later PUT can refuse a concurrent change."""
        what = f"GET /1.0/{path}" + (f" {dict(params)}" if params else "")
        self.log(f"mage_lxd: {self.remote.name}: {what}")
        with self._errors(what):
            response = self.request("get", path, params)
            return response.json().get("metadata"), response.headers.get("ETag", "")

    def _write(self, method: str, path: str, body: Any, params: Mapping[str, str] | None,
               headers: Mapping[str, str] | None = None) -> Any:
        what = f"{method.upper()} /1.0/{path}"
        self.log(f"mage_lxd: {self.remote.name}: {what}" + (f" {dict(params)}" if params else ""))
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["json"] = body
        if headers:
            kwargs["headers"] = dict(headers)
        with self._errors(what):
            data = self.request(method, path, params, **kwargs).json()
            if data.get("type") == "async":
                return self.wait_operation(data["operation"]).get("metadata")
        return data.get("metadata")

    def wait_operation(self, operation_url: str, seconds: int | None = None) -> dict[str, Any]:
        """The operation at `operation_url` once it has ended (or after `seconds`, still
        "Running"). A failed operation raises ApiError with LXD's own `err` text; Incus answers a
        failed operation's wait with an error answer (HTTP 200, type "error"), which request()
        raises as the same."""
        operation_id = _operation_id(operation_url)
        params = {"timeout": str(seconds)} if seconds is not None else None
        # A bounded wait leaves LXD room to answer; an unbounded one has this client's own timeout
        # (the batch's operation_timeout, none for the connection).
        timeout = self.timeout if seconds is None else (self.remote.timeout, seconds + self.remote.timeout)
        operation = self.request("get", f"operations/{quote(operation_id, safe='')}/wait", params,
                                 timeout=timeout).json().get("metadata") or {}
        if operation.get("status") == "Failure":
            raise ApiError(400, str(operation.get("err") or "the operation failed"))
        return operation

    def _errors(self, what: str) -> _ErrorMapper:
        return _ErrorMapper(self.remote, what, self.host_info)


class _ErrorMapper:
    """Context manager turning connection failures and LXD's error answers into RemoteErrors that
    name the remote."""

    def __init__(self, remote: Remote, what: str, host_info: Mapping[str, Any] | None = None) -> None:
        self.remote = remote
        self.what = what
        # Before the handshake only the url hints at the kind; after it, the server said.
        self.kind = server_kind(host_info) if host_info else kind_from_url(remote.url)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: Any) -> bool:
        if exc is None or isinstance(exc, RemoteError):
            return False
        where = self.remote.describe_as(self.kind)
        if isinstance(exc, TransportError) and exc.kind == "tls":
            fix = (
                "set server_cert to the server's certificate (on the server: "
                f"{self.kind.state_dir}/server.crt, or '{self.kind.cli} info' under 'certificate')."
                if not self.remote.server_cert
                else f"'{self.remote.server_cert}' is not this server's certificate; fetch the right one."
            )
            raise RemoteError(f"TLS verification failed ({first_line(exc)}).", where=where, action=self.what,
                              cause=first_line(exc), fix=fix) from exc
        if isinstance(exc, TransportError) and exc.kind == "timeout":
            raise RemoteError(f"no answer within {self.remote.timeout:g}s to {self.what}.", where=where,
                              action=self.what, cause="no answer",
                              fix="check the daemon is healthy, or raise the remote's timeout.") from exc
        if isinstance(exc, TransportError):
            raise RemoteError(
                f"cannot connect ({first_line(exc)}).", where=where, action=self.what, cause=first_line(exc),
                fix=f"is {self.kind.title} running and listening there (core.https_address for HTTPS)? Is the url right?"
            ) from exc
        if isinstance(exc, ApiError) and exc.status == 404:
            raise NotFoundError(f"{self.what}: not found ({_api_message(exc)})", where=where, action=self.what,
                                cause=_api_message(exc), status=404, reasons=exc.reasons) from exc
        if isinstance(exc, ApiError):
            raise RemoteError(where=where, action=self.what, cause=_api_message(exc), status=exc.status,
                              reasons=exc.reasons) from exc
        if isinstance(exc, json.JSONDecodeError):
            # A 200 that is not LXD's JSON: a path that names a file (an instance's log), or something
            # else answering at the url.
            raise RemoteError(f"{self.what}: the answer is not {self.kind.title}'s JSON ({first_line(exc)}).",
                              where=where, action=self.what, cause="not JSON",
                              fix=f"check that the url is {self.kind.title}'s API and the path names an object.") from exc
        return False


def _operation_id(operation_url: str) -> str:
    # LXD may append a query (`?project=...`, `?target=...`) to the operation's URL.
    return urlparse(operation_url).path.rstrip("/").rsplit("/", 1)[-1]


def _api_message(exc: ApiError) -> str:
    # LXD's own error text ("Instance not found", ...).
    return str(exc).strip()[:300] or type(exc).__name__
