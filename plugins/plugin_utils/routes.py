"""Web routes for mageproxy: each route's values checked by allow-list, into a `Route`.

Every value that reaches nginx config is checked here, before anything is rendered: nginx itself
accepts injected directives (a server_name such as `x.example.com; location /pwn {...} #` passes
`nginx -t`), so escaping after the fact is never enough. A refused value names the instance and
the route. What mageproxy serves from the routes of many instances is proxy_plan.py's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import OptionError
from .proxy_files import acme_certificate_paths, certificate_paths, htpasswd_path, is_htpasswd_name
from .values import is_instance_name, parse_bool, parse_port, read_address, read_bool

ROUTE_KEYS = frozenset({
    "name", "path", "pass", "strip_prefix", "client_max_body_size", "websockets", "tls", "redirect_https",
    "htpasswd", "allow", "deny", "balance", "hsts",
})
# HSTS max-age when a route says `hsts: true` (or yes, on, ...): one year. A number is a max-age in
# seconds, 1 included: a route's hsts is a duration that also takes booleans, not a boolean.
HSTS_DEFAULT = 31536000
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SERVER_NAME = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$")
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_PASS_URL = re.compile(r"^(https?)://:([0-9]{1,5})(/[A-Za-z0-9._~/-]*)?$")
_SIZE = re.compile(r"^[0-9]{1,9}[kKmMgG]?$")
_FILE = re.compile(r"^/[A-Za-z0-9._/-]{1,255}$")
_PORT = re.compile(r"[0-9]{1,5}")
# What an IP address or network may be made of, before ipaddress reads it: no scope id ('%').
_IP_TEXT = re.compile(r"[0-9A-Fa-f.:]{2,39}(?:/[0-9]{1,3})?")
# mageproxy's own check asks for a name in the reserved .invalid domain (RFC 2606) and expects the
# catch-all's 503: a site there would answer it instead.
RESERVED_DOMAIN = "invalid"


@dataclass(frozen=True)
class Route:
    """One validated route of one instance."""

    instance: str
    server_name: str
    path: str
    port: int
    scheme: str = "http"
    prefix: str = "/"
    strip_prefix: bool = False
    client_max_body_size: str = "1m"
    websockets: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    redirect_https: bool = False
    htpasswd: str = ""
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    balance: bool = False
    tls_source: str = ""
    htpasswd_set: str = ""
    hsts: int = 0

    def site_options(self) -> list[str]:
        """The options it sets that only a declaration may set (they change the whole site, or name
        a file on mageproxy)."""
        return [key for key, value in (("tls", self.tls_source), ("redirect_https", self.redirect_https),
                                       ("hsts", self.hsts), ("htpasswd", self.htpasswd)) if value]

    def settings(self) -> tuple[Any, ...]:
        """What must agree between backends that share one (server name, path)."""
        return (self.scheme, self.prefix, self.strip_prefix, self.client_max_body_size, self.websockets,
                self.htpasswd, self.allow, self.deny)


def parse_route(instance: str, index: int, raw: Any) -> Route:
    """Validate one route declared by `instance` (its `proxy[index]`)."""
    where = f"instance '{instance}': proxy[{index}]"
    if not isinstance(raw, Mapping):
        raise OptionError(f"{where} must be a mapping {{name, path, pass}}")
    unknown = sorted(set(raw) - ROUTE_KEYS)
    if unknown:
        raise OptionError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ROUTE_KEYS))}")
    name = _text(raw.get("name"), f"{where}.name").lower()
    if len(name) > 253 or not _SERVER_NAME.fullmatch(name):
        raise OptionError(f"{where}.name: '{raw.get('name')}' is not a host name (letters, digits, '-', '.', optional leading '*.')")
    if name.rsplit(".", 1)[-1] == RESERVED_DOMAIN:
        raise OptionError(f"{where}.name: '{name}' is in the reserved .{RESERVED_DOMAIN} domain, which mageproxy's "
                          "own check of nginx uses; use a real name")
    path = _text(raw.get("path", "/"), f"{where}.path")
    if len(path) > 1024 or not _PATH.fullmatch(path):
        raise OptionError(f"{where}.path: '{path}' is not allowed; a path is '/' then letters, digits and . _ ~ / -")
    scheme, port, prefix = _parse_pass(raw.get("pass"), f"{where}.pass")
    size = _text(raw.get("client_max_body_size", "1m"), f"{where}.client_max_body_size")
    if not _SIZE.fullmatch(size):
        raise OptionError(f"{where}.client_max_body_size: '{size}' is not a size such as 10m, 512k or 1g")
    source, cert, key = _parse_tls(raw.get("tls"), name, f"{where}.tls")
    redirect = parse_bool(raw.get("redirect_https", False), f"{where}.redirect_https")
    if redirect and not source:
        raise OptionError(f"{where}.redirect_https needs tls")
    hsts = _hsts(raw.get("hsts", False), f"{where}.hsts")
    if hsts and not source:
        raise OptionError(f"{where}.hsts needs tls")
    htpasswd, htpasswd_set = _htpasswd(raw.get("htpasswd"), f"{where}.htpasswd")
    return Route(
        instance=instance, server_name=name, path=path, port=port, scheme=scheme, prefix=prefix,
        strip_prefix=parse_bool(raw.get("strip_prefix", False), f"{where}.strip_prefix"),
        client_max_body_size=size.lower(),
        websockets=parse_bool(raw.get("websockets", True), f"{where}.websockets"),
        tls_cert=cert, tls_key=key, redirect_https=redirect, tls_source=source, hsts=hsts,
        htpasswd=htpasswd, htpasswd_set=htpasswd_set,
        allow=_networks(raw.get("allow"), f"{where}.allow"),
        deny=_networks(raw.get("deny"), f"{where}.deny"),
        balance=parse_bool(raw.get("balance", False), f"{where}.balance"),
    )


def _parse_tls(value: Any, server_name: str, what: str) -> tuple[str, str, str]:
    """(source, cert path, key path): files already on mageproxy, or a pair `provided` by the controller."""
    if value in (None, "", False):
        return "", "", ""
    if value == "provided":
        return ("provided", *certificate_paths(server_name))
    if value == "acme":
        if server_name.startswith("*."):
            raise OptionError(f"{what}: acme (HTTP-01) cannot issue a wildcard such as {server_name}; "
                              "use tls: provided for it")
        return ("acme", *acme_certificate_paths(server_name))
    if not isinstance(value, Mapping) or set(value) - {"cert", "key"}:
        raise OptionError(f"{what} must be 'acme' (issued and renewed in mageproxy), 'provided' "
                          "(mageproxy_certificates on the controller) or {cert: /path, key: /path} (files on mageproxy)")
    cert = _file(value.get("cert"), f"{what}.cert")
    key = _file(value.get("key"), f"{what}.key")
    if not (cert and key):
        raise OptionError(f"{what} needs both cert and key")
    return "files", cert, key


def _hsts(value: Any, what: str) -> int:
    """The max-age: a number (ASCII digits, as for ports) is seconds, `1` and `"1"` included; any
    other value is a boolean as values.read_bool reads it, true being HSTS_DEFAULT."""
    if not isinstance(value, bool) and ((isinstance(value, int) and 0 <= value < 10**9)
                                        or (isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value))):
        return int(value)
    enabled = read_bool(value)
    if enabled is None:
        raise OptionError(f"{what}: '{value}' must be true, false or a max-age in seconds")
    return HSTS_DEFAULT if enabled else 0


def _htpasswd(value: Any, what: str) -> tuple[str, str]:
    """(path on mageproxy, controller set name or '')."""
    if isinstance(value, str) and is_htpasswd_name(value):
        return htpasswd_path(value), value
    path = _file(value, what)
    if value not in (None, "") and not path:
        raise OptionError(f"{what}: '{value}' is neither a file path nor a mageproxy_htpasswd name")
    return path, ""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise OptionError(f"{what}: '{value}' must be a non-empty string")
    return value


def _file(value: Any, what: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _FILE.fullmatch(value) or "/../" in value + "/":
        raise OptionError(f"{what}: '{value}' is not an absolute file path (letters, digits, . _ / -)")
    return value


def _networks(value: Any, what: str) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise OptionError(f"{what} must be a list of networks such as 10.0.0.0/8")
    found = []
    for item in value:
        # ipaddress alone takes IPv6 scope ids such as 'fe80::1%x;allow all;#': allow-list first.
        try:
            if not isinstance(item, str) or not _IP_TEXT.fullmatch(item):
                raise ValueError(item)
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise OptionError(f"{what}: '{item}' is not an IP network such as 10.0.0.0/8 or fd00::/8") from None
    return tuple(found)


def upstream_address(value: Any, what: str) -> str:
    """An address read from LXD as nginx's `server` takes it (IPv6 in brackets), checked by allow-list."""
    address = read_address(value)
    if address is None:
        raise OptionError(f"{what}: {value!r} is not an IP address.",
                          fix="check the instance's network in LXD (lxc list), then rerun.")
    return f"[{address}]" if address.version == 6 else str(address)


def hosts_file_name(value: Any, what: str) -> str:
    """An instance name fit for a line of /etc/hosts (an LXD instance name: letters, digits, '-')."""
    if not is_instance_name(value):
        raise OptionError(f"{what}: {value!r} is not an instance name (letters, digits, '-', starting with a letter).",
                          fix="correct that name (an instance name), then rerun.")
    return value


def _parse_pass(value: Any, what: str) -> tuple[str, int, str]:
    if isinstance(value, bool):
        raise OptionError(f"{what}: '{value}' is not a port or http[s]://:PORT/prefix")
    # ASCII digits only: str.isdigit() and int() also take digits of other scripts.
    if isinstance(value, int) or (isinstance(value, str) and _PORT.fullmatch(value)):
        return "http", parse_port(value, what), "/"
    match = _PASS_URL.fullmatch(str(value)) if isinstance(value, str) else None
    if not match:
        raise OptionError(f"{what}: '{value}' is not a port or http[s]://:PORT/prefix")
    return match.group(1), parse_port(match.group(2), what), match.group(3) or "/"
