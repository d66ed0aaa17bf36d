"""Certificates, keys and htpasswd users from the controller, checked before they reach mageproxy.

A route says `tls: provided` and the controller holds the pair (a file lookup or a vault
variable) in `mageproxy_certificates[server name]`; a route says `htpasswd: NAME` and the
controller holds the users in `mageproxy_htpasswd[NAME]`. This module checks them (the key
matches the certificate, the certificate is valid now and names the server) and gives the files
mageproxy must hold with their modes: keys 0600, htpasswd 0640 (group www-data, set by the role).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError, missing_package

TLS_DIR = "/etc/nginx/mage-lxd/tls"
ACME_DIR = "/etc/nginx/mage-lxd/acme"
_ACME_SERVER = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}")
HTPASSWD_DIR = "/etc/nginx/mage-lxd/htpasswd"
_HTPASSWD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# One user per line: a name, then a hash nginx reads (crypt, $apr1$, {SHA}, {SSHA}); no blanks.
_HTPASSWD_LINE = re.compile(r"[A-Za-z0-9._@-]{1,64}:[!-~]{1,255}")


@dataclass
class ProxyFiles:
    """Files for mageproxy beyond its config: path -> text, and path -> octal mode text."""

    files: dict[str, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    # Whether any site uses ACME: the role then installs mage-acme and its timer.
    acme: bool = False
    # Files routes name that must already be on mageproxy: path -> the route that names it.
    required: dict[str, str] = field(default_factory=dict)
    # Of those, the ones nginx reads as PEM: path -> the PEM label they must hold (nginx -t refuses
    # a certificate file that is not one, and the whole apply would roll back).
    pem: dict[str, str] = field(default_factory=dict)


def certificate_paths(server_name: str) -> tuple[str, str]:
    """Where a controller-provided pair lives on mageproxy (a wildcard's '*' becomes '_')."""
    stem = server_name.replace("*", "_")
    return f"{TLS_DIR}/{stem}.crt", f"{TLS_DIR}/{stem}.key"


def acme_certificate_paths(server_name: str) -> tuple[str, str]:
    """Where mage-acme (lego, in mageproxy) puts the live pair of an ACME route."""
    return f"{ACME_DIR}/live/{server_name}.crt", f"{ACME_DIR}/live/{server_name}.key"


def acme_files(names: list[str], settings: Mapping[str, Any]) -> dict[str, str]:
    """The domain list and settings mage-acme reads (a shell-sourced file, so every value is allow-listed)."""
    server = str(settings.get("server") or "")
    email = str(settings.get("email") or "")
    days = settings.get("days", 30)
    if not _ACME_SERVER.fullmatch(server):
        raise OptionError(f"mageproxy_acme_server: '{server}' is not an https:// directory URL. "
                          "Fix: set it to your ACME server's directory URL.")
    if not _EMAIL.fullmatch(email):
        raise OptionError(f"mageproxy_acme_email: '{email}' is not an e-mail address; routes with tls: acme "
                          "need one for the ACME account. Fix: set mageproxy_acme_email.")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        raise OptionError(f"mageproxy_acme_days: '{days}' must be a number of days (1-365). Fix: set it, e.g. 30.")
    ca_bundle = str(settings.get("ca_bundle") or "").strip()
    env = [f"MAGE_ACME_SERVER='{server}'", f"MAGE_ACME_EMAIL='{email}'", f"MAGE_ACME_DAYS={days}"]
    files = {f"{ACME_DIR}/domains": "".join(f"{name}\n" for name in names)}
    if ca_bundle:
        if not ca_bundle.startswith("-----BEGIN CERTIFICATE-----"):
            raise OptionError("mageproxy_acme_ca_bundle is not PEM certificates. Fix: give the PEM text of the "
                              "CA that signed your ACME server's HTTPS certificate, or leave it empty.")
        files[f"{ACME_DIR}/ca.pem"] = ca_bundle + "\n"
        env.append(f"LEGO_CA_CERTIFICATES='{ACME_DIR}/ca.pem'")
    files[f"{ACME_DIR}/env"] = "# Managed by mage-lxd (roles/mageproxy).\n" + "".join(f"{line}\n" for line in env)
    return files


def htpasswd_path(name: str) -> str:
    """Where a controller-provided htpasswd set lives on mageproxy."""
    return f"{HTPASSWD_DIR}/{name}"


def is_htpasswd_name(value: str) -> bool:
    """Whether a route's `htpasswd` names a controller set (not a file path on mageproxy)."""
    return bool(_HTPASSWD_NAME.fullmatch(value))


def _cryptography() -> tuple[Any, Any]:
    """cryptography's x509 and serialization modules, imported where a certificate is checked so
    that everything else works without the package."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError as exc:
        raise missing_package("cryptography", exc) from None
    return x509, serialization


def check_pair(server_name: str, cert_pem: Any, key_pem: Any, now: datetime.datetime) -> None:
    """Refuse a pair whose key does not match, or whose certificate is not valid now or for the name."""
    x509, serialization = _cryptography()

    where = f"mageproxy_certificates['{server_name}']"
    fix = f"Fix: give {where} the certificate (chain) and key of {server_name}, then rerun."
    try:
        leaf = x509.load_pem_x509_certificates(str(cert_pem).encode())[0]
    except (ValueError, IndexError):
        raise OptionError(f"{where}.cert is not a PEM certificate. {fix}") from None
    try:
        key = serialization.load_pem_private_key(str(key_pem).encode(), password=None)
    except (ValueError, TypeError):
        raise OptionError(f"{where}.key is not an unencrypted PEM private key. {fix}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise OptionError(f"{where}.key does not match its certificate. {fix}")
    if leaf.not_valid_after_utc <= now:
        raise OptionError(f"{where}.cert expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC. {fix}")
    if leaf.not_valid_before_utc > now:
        raise OptionError(f"{where}.cert is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC. {fix}")
    if not any(_covers(name, server_name) for name in _dns_names(leaf)):
        raise OptionError(f"{where}.cert does not name {server_name} (it names {', '.join(_dns_names(leaf)) or 'nothing'}). {fix}")


def _dns_names(leaf: Any) -> list[str]:
    x509 = _cryptography()[0]

    try:
        return [name.lower() for name in leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


def _covers(pattern: str, server_name: str) -> bool:
    if pattern == server_name:
        return True
    # '*.example.org' covers one label: a.example.org, not a.b.example.org nor example.org.
    return pattern.startswith("*.") and server_name.count(".") == pattern.count(".") and \
        server_name.split(".", 1)[1] == pattern[2:]


def htpasswd_text(name: str, users: Any) -> str:
    """The file text of one controller htpasswd set (a list of 'user:hash' lines, or their text)."""
    where = f"mageproxy_htpasswd['{name}']"
    lines = users.splitlines() if isinstance(users, str) else users
    if not isinstance(lines, list) or not lines:
        raise OptionError(f"{where} must be a list of 'user:hash' lines. Fix: generate them with htpasswd -nB USER.")
    for index, line in enumerate(lines):
        if not isinstance(line, str) or not _HTPASSWD_LINE.fullmatch(line):
            raise OptionError(f"{where}[{index}] is not a 'user:hash' line (no blanks). "
                              "Fix: generate it with htpasswd -nB USER.")
    return "\n".join(lines) + "\n"


def plan_proxy_files(
    sites: Iterable[Mapping[str, Any]], certificates: Mapping[str, Any], htpasswd: Mapping[str, Any],
    now: datetime.datetime | None = None, acme: Mapping[str, Any] | None = None,
) -> ProxyFiles:
    """The certificate, key and htpasswd files the planned sites need, each checked first."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    planned = ProxyFiles()
    acme_names = [site["server_name"] for site in sites if site.get("tls_source") == "acme"]
    if acme_names:
        planned.files.update(acme_files(acme_names, acme or {}))
        planned.acme = True
    for site in sites:
        name = site["server_name"]
        if site.get("tls_source") == "provided":
            pair = certificates.get(name)
            if not isinstance(pair, Mapping) or not pair.get("cert") or not pair.get("key"):
                raise OptionError(f"{site.get('tls_declared_at') or name}: tls: provided, but mageproxy_certificates "
                                  f"has no {{cert, key}} for {name}. Fix: add them (a file lookup or a vault "
                                  "variable), then rerun.")
            check_pair(name, pair["cert"], pair["key"], now)
            cert_path, key_path = certificate_paths(name)
            planned.files[cert_path] = str(pair["cert"]).strip() + "\n"
            planned.files[key_path] = str(pair["key"]).strip() + "\n"
            planned.modes[key_path] = "0600"
        if site.get("tls_source") == "files":
            for key, label in (("tls_cert", "CERTIFICATE"), ("tls_key", "PRIVATE KEY")):
                planned.required[site[key]] = f"{site.get('tls_declared_at') or name}: tls.{key[4:]}"
                planned.pem[site[key]] = label
        for location in site.get("locations") or []:
            if location["route"].get("htpasswd") and not location["route"].get("htpasswd_set"):
                planned.required[location["route"]["htpasswd"]] = f"{location.get('declared_at') or name}.htpasswd"
            set_name = location["route"].get("htpasswd_set")
            if set_name and htpasswd_path(set_name) not in planned.files:
                if set_name not in htpasswd:
                    raise OptionError(f"{location.get('declared_at') or name}: htpasswd: {set_name}, but "
                                      f"mageproxy_htpasswd has no '{set_name}'. Fix: add its users, then rerun.")
                planned.files[htpasswd_path(set_name)] = htpasswd_text(set_name, htpasswd[set_name])
                planned.modes[htpasswd_path(set_name)] = "0640"
    return planned
