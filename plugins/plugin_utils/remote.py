"""Where an LXD server is and how to talk to it safely.

A `Remote` is one LXD server as the user names it: the local unix socket, or an HTTPS endpoint
with a client certificate and the server's certificate pinned (verification is on by default).
`LxdApi` is our client of LXD's /1.0 API (on transport.py's session): every request is logged
and every failure becomes a `RemoteError` naming the remote and the fix.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from .cli_config import find_cli_remote
from .client_trust import apply_token_defaults, ensure_client_pair, pin_from_token, token_request
from .errors import NotFoundError, OptionError, RemoteError
from .transport import DEADLINE, UNIX_BASE, ApiError, ApiSession, Response, TransportError, error_answer
from .values import parse_bool

# Where Debian's package and the snap put LXD's socket, then Incus's (Debian and Zabbly packages);
# the first one that exists is used, so a host with both talks to LXD unless a url says otherwise.
LOCAL_SOCKETS = ("/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket", "/var/lib/incus/unix.socket")
DEFAULT_TIMEOUT = 10.0
# Seconds between the looks at our trust after a refused token (about 3 s in all).
TRUST_RECHECKS = (0.0, 0.2, 0.4, 0.8, 1.6)
# What a plugin's options or a task's arguments say about the remote (its name is option `remote`).
REMOTE_OPTIONS = ("url", "client_cert", "client_key", "server_cert", "validate_certs", "timeout", "trust_token")
REMOTE_KEYS = frozenset({"name", *REMOTE_OPTIONS})
# The environment variables the connection and lookup read (doc_fragments/mage_lxd.py); the
# instance action reads them too when its task leaves the option out, so one `export` points
# site.yml, its role and proxy.yml at a remote LXD or cluster.
REMOTE_ENV = {"url": "MAGE_LXD_URL", "client_cert": "MAGE_LXD_CLIENT_CERT", "client_key": "MAGE_LXD_CLIENT_KEY",
              "server_cert": "MAGE_LXD_SERVER_CERT", "trust_token": "MAGE_LXD_TRUST_TOKEN"}

Log = Callable[[str], None]


@dataclass(frozen=True)
class ServerKind:
    """LXD or its fork Incus: both serve the same /1.0 API; these are the parts that differ."""

    title: str  # how messages name the server
    cli: str  # the command line client a Fix hint tells the user to run
    state_dir: str  # where the server keeps its socket and server.crt
    # Prefix of the files API headers (type, mode, uid, gid, write). Incus answers with X-Incus-*
    # only, and since 7.2 reads only X-Incus-* (lxc/incus commit ba407ebf09b8 "shared/api: Remove
    # legacy logic" dropped its X-LXD-* fallback): sent X-LXD-* headers would be ignored there.
    file_header_prefix: str


LXD = ServerKind(title="LXD", cli="lxc", state_dir="/var/lib/lxd", file_header_prefix="X-LXD-")
INCUS = ServerKind(title="Incus", cli="incus", state_dir="/var/lib/incus", file_header_prefix="X-Incus-")


def server_kind(host_info: Mapping[str, Any]) -> ServerKind:
    """The server kind `GET /1.0` announces (`environment.server` is 'incus' on Incus, else LXD)."""
    server = host_info.get("environment", {}).get("server")
    if server:
        return INCUS if server == "incus" else LXD
    # An untrusted client gets no `environment`; Incus's extension list still tells (its guest API
    # is dev_incus where LXD's is devlxd), so its Fix hints name incus to a client it refused.
    return INCUS if "dev_incus_events" in host_info.get("api_extensions", []) else LXD


def kind_from_url(url: str) -> ServerKind:
    """The kind a url suggests before any answer (Incus's socket path), for messages only."""
    return INCUS if not url.startswith("https://") and "incus" in local_socket_path(url) else LXD


def _no_log(_message: str) -> None:
    return None


@dataclass(frozen=True)
class Remote:
    """One LXD server: a name for groups and messages, where it is, and how we authenticate."""

    name: str = "local"
    url: str = ""
    client_cert: str | None = None
    client_key: str | None = None
    server_cert: str | None = None
    validate_certs: bool = True
    timeout: float = DEFAULT_TIMEOUT
    # Used once, by a client the server does not trust yet; a secret, so never shown.
    trust_token: str | None = field(default=None, repr=False)
    # The project a CLI remote names (`lxc remote add --project`); plugins use it when they name none.
    project: str | None = None
    # The server certificate's SHA-256 the trust_token names, when server_cert is the default path
    # the certificate is pinned to from the token at connect (client_trust.apply_token_defaults).
    token_fingerprint: str | None = None

    @property
    def is_https(self) -> bool:
        """True when the remote is reached over HTTPS rather than a unix socket."""
        return self.url.startswith("https://")

    def describe(self) -> str:
        """The remote as messages name it: `'local' (unix:/var/lib/lxd/unix.socket)`."""
        return f"'{self.name}' ({self.url or 'unix:' + local_socket_path('')})"

    def describe_as(self, kind: ServerKind | None = None) -> str:
        """`LXD remote 'local' (...)` or `Incus remote ...`; without a kind, guessed from the url."""
        return f"{(kind or kind_from_url(self.url)).title} remote {self.describe()}"

    def connection_vars(self) -> dict[str, Any]:
        """The host variables the mage_lxd connection reads to reach this remote."""
        variables: dict[str, Any] = {"mage_lxd_remote": self.name, "mage_lxd_url": self.url}
        for option in ("client_cert", "client_key", "server_cert"):
            if getattr(self, option):
                variables[f"mage_lxd_{option}"] = getattr(self, option)
        if self.is_https:
            variables["mage_lxd_validate_certs"] = self.validate_certs
        return variables


def local_socket_path(url: str) -> str:
    """The unix socket path for `url` ('', 'unix:', 'unix:/path' or '/path')."""
    path = url.removeprefix("unix://").removeprefix("unix:")
    if path:
        return path
    for candidate in LOCAL_SOCKETS:
        if os.path.exists(candidate):
            return candidate
    return LOCAL_SOCKETS[0]


def remote_from_mapping(data: Mapping[str, Any], where: str = "remote") -> Remote:
    """Validate one remote as written in YAML and return it; unknown keys are refused.

    A remote with a name other than `local` and no url is the lxc or incus CLI remote of that name
    (cli_config.py); the options given here win over the CLI's."""
    unknown = sorted(set(data) - REMOTE_KEYS)
    if unknown:
        raise OptionError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(REMOTE_KEYS))}"
        )
    name = str(data.get("name") or "local")
    url = str(data.get("url") or "")
    if url and not (url.startswith(("https://", "unix:", "/"))):
        raise OptionError(
            f"{where} '{name}': url '{url}' is neither https://HOST[:PORT] nor a unix socket "
            "(unix:/path or /path)"
        )
    if url.startswith("https://") and not urlparse(url).hostname:
        raise OptionError(f"{where} '{name}': url '{url}' has no host name")
    timeout = data.get("timeout", DEFAULT_TIMEOUT)
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise OptionError(f"{where} '{name}': timeout '{timeout}' is not a number of seconds") from None
    if timeout <= 0:
        raise OptionError(f"{where} '{name}': timeout must be more than 0 seconds")
    validate_certs = parse_bool(data.get("validate_certs", True), f"{where} '{name}': validate_certs")
    given = {key: value for key, value in data.items() if value not in (None, "")}
    if not url and name != "local":
        given = {**cli_options_for(find_cli_remote(name, where), bool(given.get("trust_token"))), **given}
        url = str(given.get("url") or "")
    token_fingerprint = None
    if given.get("trust_token") and url.startswith("https://"):
        given, token_fingerprint = apply_token_defaults(given, name, url, validate_certs, f"{where} '{name}'",
                                                        os.environ, os.path.expanduser("~"))
    remote = Remote(
        name=name,
        url=url,
        client_cert=_optional_path(given.get("client_cert")),
        client_key=_optional_path(given.get("client_key")),
        server_cert=_optional_path(given.get("server_cert")),
        validate_certs=validate_certs,
        timeout=timeout,
        trust_token=str(given["trust_token"]).strip() if given.get("trust_token") else None,
        project=str(given["project"]) if given.get("project") else None,
        token_fingerprint=token_fingerprint,
    )
    _check_files(remote, where)
    return remote


def cli_options_for(cli: Mapping[str, Any], token: bool, exists: Callable[[str], bool] = os.path.isfile) -> dict[str, Any]:
    """A CLI remote's options as a remote with (or without) a trust_token takes them: with a token,
    a client pair the CLI does not have is left out, so mage-lxd's own is generated rather than
    one in the CLI's directory (which only the CLI writes)."""
    pair = ("client_cert", "client_key")
    if token and not all(cli.get(option) and exists(str(cli[option])) for option in pair):
        return {key: value for key, value in cli.items() if key not in pair}
    return dict(cli)


def remote_from_options(option: Callable[[str], Any], where: str) -> Remote:
    """The remote a plugin's options (or a task's arguments) describe; unset ones take defaults."""
    data = {key: option(key) for key in REMOTE_OPTIONS}
    return remote_from_mapping(
        {key: value for key, value in data.items() if value is not None} | {"name": option("remote") or "local"},
        where=where,
    )


def remote_from_task_args(args: Mapping[str, Any], where: str) -> Remote:
    """The remote of a task: its own options when it names a url, else the MAGE_LXD_* environment,
    else the local socket. Never a mix: the environment's certificates belong to its url."""
    from_environment = args.get("url") is None

    def option(key: str) -> Any:
        if args.get(key) is not None:
            return args[key]
        return os.environ.get(REMOTE_ENV[key]) if from_environment and key in REMOTE_ENV else None

    return remote_from_options(option, where)


def mapping_with_environment(data: Mapping[str, Any]) -> dict[str, Any]:
    """An inventory remote that names no url takes MAGE_LXD_URL and its certificates, as a task
    does, so one export points every plugin at another server (Incus's socket, a cluster)."""
    if data.get("url") or not os.environ.get(REMOTE_ENV["url"]):
        return dict(data)
    return {**data, **{key: os.environ[name] for key, name in REMOTE_ENV.items() if os.environ.get(name)}}


def _optional_path(value: Any) -> str | None:
    return os.path.expanduser(str(value)) if value else None


def _check_files(remote: Remote, where: str) -> None:
    if bool(remote.client_cert) != bool(remote.client_key):
        raise OptionError(f"{where} '{remote.name}': client_cert and client_key go together; give both")
    # With a token, a missing client pair is generated and the server certificate pinned at first
    # connect (client_trust.py).
    generated = ("client_cert", "client_key") if remote.trust_token and remote.is_https else ()
    if remote.token_fingerprint:
        generated = (*generated, "server_cert")
    for option in ("client_cert", "client_key", "server_cert"):
        path = getattr(remote, option)
        if path and option not in generated and not os.path.isfile(path):
            raise OptionError(f"{where} '{remote.name}': {option} file '{path}' does not exist")
    if remote.is_https and not remote.client_cert:
        raise OptionError(
            f"{where} '{remote.name}': an HTTPS remote needs client_cert and client_key "
            "(a certificate the server trusts: 'lxc config trust add CERT' on LXD, "
            "'incus config trust add-certificate CERT' on Incus; or give trust_token)"
        )


def unique_remotes(remotes: Iterable[Remote]) -> list[Remote]:
    """Refuse two remotes with the same name: hostvars and groups are keyed by it."""
    seen: dict[str, Remote] = {}
    for remote in remotes:
        if remote.name in seen:
            raise OptionError(f"remotes: the name '{remote.name}' is used twice; give each remote its own name")
        seen[remote.name] = remote
    return list(seen.values())


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
        if self.remote.is_https and self.remote.token_fingerprint and self.remote.server_cert:
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
        with self._errors("connect"):
            self.host_info = self.request("get", "").json().get("metadata") or {}
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
        self.log(f"mage_lxd: {self.remote.name}: POST /1.0/certificates (adding {self.remote.client_cert} "
                 "with the trust token)")
        refused: ApiError | None = None
        with self._errors("POST /1.0/certificates"):
            try:
                self.request("post", "certificates", json=token_request(self.remote.trust_token or "", self.host_info,
                                                                        incus=self.kind is INCUS))
            except ApiError as exc:
                refused = exc
        # Refused: another controller with the same pair may have spent the token a moment before us,
        # and its add may not be visible yet (two at once on LXD 5.0.2), so trust is looked for briefly.
        for pause in (0.0,) if refused is None else TRUST_RECHECKS:
            time.sleep(pause)
            with self._errors("connect"):
                self.host_info = self.request("get", "").json().get("metadata") or {}
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
            raise RemoteError(f"TLS verification failed ({_first_line(exc)}).", where=where, action=self.what,
                              cause=_first_line(exc), fix=fix) from exc
        if isinstance(exc, TransportError) and exc.kind == "timeout":
            raise RemoteError(f"no answer within {self.remote.timeout:g}s to {self.what}.", where=where,
                              action=self.what, cause="no answer",
                              fix="check the daemon is healthy, or raise the remote's timeout.") from exc
        if isinstance(exc, TransportError):
            raise RemoteError(
                f"cannot connect ({_first_line(exc)}).", where=where, action=self.what, cause=_first_line(exc),
                fix=f"is {self.kind.title} running and listening there (core.https_address for HTTPS)? Is the url right?"
            ) from exc
        if isinstance(exc, ApiError) and exc.status == 404:
            raise NotFoundError(f"{self.what}: not found ({_api_message(exc)})", where=where, action=self.what,
                                cause=_api_message(exc), status=404, reasons=exc.reasons) from exc
        if isinstance(exc, ApiError):
            raise RemoteError(where=where, action=self.what, cause=_api_message(exc), status=exc.status,
                              reasons=exc.reasons) from exc
        return False


def _operation_id(operation_url: str) -> str:
    # LXD may append a query (`?project=...`, `?target=...`) to the operation's URL.
    return urlparse(operation_url).path.rstrip("/").rsplit("/", 1)[-1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _api_message(exc: ApiError) -> str:
    # LXD's own error text ("Instance not found", ...).
    return str(exc).strip()[:300] or type(exc).__name__
