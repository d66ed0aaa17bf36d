"""Where an LXD server is, as the user names it: a plugin's options, a task's arguments, a YAML
remote, the MAGE_LXD_* environment, or the lxc and incus clients' own remotes.

A `Remote` is one LXD server: the local unix socket, or an HTTPS endpoint with a client certificate
and the server's certificate pinned (verification is on by default). Options are checked here,
before anything connects; lxd_api.py connects to it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .cli_config import find_cli_remote
from .client_trust import apply_token_defaults
from .errors import OptionError
from .server_kind import INCUS, LXD, ServerKind
from .values import parse_bool

# Where Debian's package and the snap put LXD's socket, then Incus's (Debian and Zabbly packages);
# the first one that exists is used, so a host with both talks to LXD unless a url says otherwise.
LOCAL_SOCKETS = ("/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket", "/var/lib/incus/unix.socket")
DEFAULT_TIMEOUT = 10.0
# What a plugin's options or a task's arguments say about the remote (its name is option `remote`).
REMOTE_OPTIONS = ("url", "client_cert", "client_key", "server_cert", "validate_certs", "timeout", "trust_token")
REMOTE_KEYS = frozenset({"name", *REMOTE_OPTIONS})
# The environment variables the connection and lookup read (doc_fragments/mage_lxd.py); the
# instance action reads them too when its task leaves the option out, so one `export` points
# site.yml, its role and proxy.yml at a remote LXD or cluster.
# A remote's name names files (its pinned certificate) and is shown in messages: no control characters.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
REMOTE_ENV = {"url": "MAGE_LXD_URL", "client_cert": "MAGE_LXD_CLIENT_CERT", "client_key": "MAGE_LXD_CLIENT_KEY",
              "server_cert": "MAGE_LXD_SERVER_CERT", "trust_token": "MAGE_LXD_TRUST_TOKEN"}


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
    # The server certificate's SHA-256 the trust_token names: the server's certificate is checked
    # against it before the token is sent, whatever validate_certs says (client_trust.apply_token_defaults).
    token_fingerprint: str | None = None
    # True when server_cert is the default path the certificate is pinned to from the token at connect.
    pin_token: bool = False

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


def kind_from_url(url: str) -> ServerKind:
    """The kind a url suggests before any answer (Incus's socket path), for messages only."""
    return INCUS if not url.startswith("https://") and "incus" in local_socket_path(url) else LXD


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
    if CONTROL_CHARACTER.search(name):
        raise OptionError(f"{where}: the remote name {name!r} has a control character (a NUL, a line break, ...); "
                          "give it a name of printable characters")
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
    token_fingerprint, pin_token = None, False
    if given.get("trust_token") and url.startswith("https://"):
        given, token_fingerprint, pin_token = apply_token_defaults(
            given, name, url, validate_certs, f"{where} '{name}'", os.environ, os.path.expanduser("~"))
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
        pin_token=pin_token,
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
    if remote.pin_token:
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
