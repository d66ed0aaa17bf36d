"""A new controller's client certificate: generated as the CLIs do, then trusted with a token.

`lxc remote add` and `incus remote add` make an EC P-384 self-signed certificate (O=Linux
Containers, CN=user@host, ten years, client authentication) when client.crt is missing, and add it
to the server with a trust token. We do the same at the remote's client_cert/client_key paths, so a
controller needs nothing but the url and the token (from `lxc config trust add --name NAME` or
`incus config trust add NAME`).

The token is base64 of JSON that names the server certificate's SHA-256 fingerprint (with
client_name, addresses, secret, expires_at), which is how the CLIs trust a self-signed server
they have never seen: they read its certificate without trusting it, go on only when its
fingerprint is the token's, and keep it as the remote's pinned certificate (servercerts/NAME.crt).
Without a server_cert we do the same, in mage-lxd's own config directory (token_paths), and never
touch the CLIs' files. Whatever validate_certs says, and with a server_cert given too, the token
is sent only on a connection whose certificate has the token's fingerprint (lxd_api.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import fcntl
import getpass
import hashlib
import json
import os
import re
import secrets
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .errors import OptionError, RemoteError, first_line, missing_package
from .transport import DEFAULT_HTTPS_PORT, pem_sha256

# As the CLIs: shared/cert.go GenerateMemCert in LXD and Incus.
VALID_DAYS = 3650
ORGANIZATION = "Linux Containers"
# mage-lxd's own config directory, under $XDG_CONFIG_HOME or ~/.config: the client pair a token
# trusts and the server certificates pinned from tokens (servercerts/).
CONFIG_DIR_NAME = "mage-lxd"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# MageLxdError.reasons of the errors below, for callers to decide on.
NOT_A_TOKEN = "not a trust token"
FINGERPRINT_MISMATCH = "server fingerprint is not the token's"


@dataclass(frozen=True)
class TrustToken:
    """What an LXD or Incus trust token says (`lxc config trust add`, `incus config trust add`)."""

    client_name: str
    fingerprint: str  # SHA-256 of the server certificate (DER), lowercase hex
    addresses: tuple[str, ...]
    expires_at: str = ""
    secret: str = field(default="", repr=False)


class FingerprintMismatchError(RemoteError):
    """The server presented a certificate whose fingerprint is not the one its trust token names."""

    def __init__(self, said: str = "", *, expected: str = "", presented: str = "", **fields: Any) -> None:
        self.expected = expected
        self.presented = presented
        super().__init__(said, reasons=(FINGERPRINT_MISMATCH,), **fields)


def decode_token(token: str, where: str) -> TrustToken:
    """The trust token `token` decoded (base64 of JSON, as the CLIs read it); anything else is an
    OptionError that names `where` and the option, never the secret itself."""
    try:
        data = json.loads(base64.b64decode("".join(token.split()), validate=True))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        data = None
    missing = [] if isinstance(data, dict) else ["base64 of a JSON object"]
    if not missing:
        missing = [key for key in ("client_name", "fingerprint", "secret", "addresses") if not data.get(key)]
    if not missing and not SHA256_HEX.fullmatch(str(data["fingerprint"]).lower()):
        missing = ["a SHA-256 fingerprint"]
    if missing:
        raise OptionError(
            f"option trust_token is not an LXD or Incus trust token (it lacks {', '.join(missing)}).", where=where,
            reasons=(NOT_A_TOKEN,),
            fix="give the whole token that 'lxc config trust add --name NAME' (LXD) or 'incus config trust add NAME' "
                "(Incus) printed on the server, or leave trust_token out and set server_cert, client_cert and client_key.")
    addresses = data["addresses"] if isinstance(data["addresses"], list) else [data["addresses"]]
    return TrustToken(client_name=str(data["client_name"]), fingerprint=str(data["fingerprint"]).lower(),
                      addresses=tuple(str(address) for address in addresses),
                      expires_at=str(data.get("expires_at") or ""), secret=str(data["secret"]))


def apply_token_defaults(given: Mapping[str, Any], name: str, url: str, validate_certs: bool, where: str,
                         environ: Mapping[str, str], home: str) -> tuple[dict[str, Any], str, bool]:
    """The options of an HTTPS remote with a trust_token, completed as `lxc remote add URL --token`
    needs nothing else: a client pair left out is mage-lxd's own (token_paths), and a server
    certificate left out (with validate_certs on) is pinned from the token at the default path.
    Returns the options, the fingerprint the token names (always decoded, so a malformed token
    fails here; the server's certificate is checked against it before the token is sent, whatever
    validate_certs says) and whether server_cert is the default path to pin it to. Options given
    always win."""
    options = dict(given)
    fingerprint = decode_token(str(options["trust_token"]), where).fingerprint
    defaults = token_paths(name, url, environ, home)
    if not options.get("client_cert") and not options.get("client_key"):
        options["client_cert"], options["client_key"] = defaults["client_cert"], defaults["client_key"]
    if not validate_certs or options.get("server_cert"):
        return options, fingerprint, False
    options["server_cert"] = defaults["server_cert"]
    return options, fingerprint, True


def config_dir(environ: Mapping[str, str], home: str) -> str:
    """mage-lxd's own config directory: $XDG_CONFIG_HOME/mage-lxd, else ~/.config/mage-lxd."""
    base = environ.get("XDG_CONFIG_HOME") or ""
    # The XDG spec: a relative $XDG_CONFIG_HOME is invalid and ignored.
    return os.path.join(base if os.path.isabs(base) else os.path.join(home, ".config"), CONFIG_DIR_NAME)


def pin_name(name: str, url: str) -> str:
    """The file name (without .crt) of a remote's certificate pinned from its token: NAME-HASH, the
    remote's name ('local' for a task's) and 16 hex digits of the SHA-256 of the name, the host and
    the port, so no two remotes share a file (neither 'local' at h:8443 and a remote named h_8443,
    nor names that read alike once made safe for a file name)."""
    name = name or "local"
    parsed = urlparse(url)
    server = json.dumps([name, parsed.hostname or "", parsed.port or DEFAULT_HTTPS_PORT])
    return f"{name.replace(os.sep, '_')}-{hashlib.sha256(server.encode()).hexdigest()[:16]}"


def token_paths(name: str, url: str, environ: Mapping[str, str], home: str) -> dict[str, str]:
    """Where a remote with a trust_token keeps what the token's options leave out: the client pair
    (client.crt, client.key) and the server certificate pinned from the token
    (servercerts/NAME-HASH.crt, pin_name), in mage-lxd's config directory."""
    directory = config_dir(environ, home)
    return {"client_cert": os.path.join(directory, "client.crt"), "client_key": os.path.join(directory, "client.key"),
            "server_cert": os.path.join(directory, "servercerts", f"{pin_name(name, url)}.crt")}


def der_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, lowercase hex (as the CLIs and tokens print it)."""
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str | None:
    """The fingerprint of the first certificate in `pem` (transport.pem_sha256, the rule a pinned
    server_cert is checked by), or None when there is none."""
    try:
        return pem_sha256(pem)
    except ValueError:  # binascii.Error included
        return None


def check_token_fingerprint(expected: str, presented_der: bytes | None, where: str, pin_path: str | None) -> None:
    """Refuse a server certificate (DER) whose fingerprint is not `expected`, the trust token's.
    `pin_path` is where it is pinned once it agrees (None when nothing is pinned)."""
    presented = der_fingerprint(presented_der or b"")
    if presented != expected:
        pinned = ("nothing was sent to it and nothing was pinned.", f" {pin_path} is written once the fingerprints "
                  "agree.") if pin_path else ("the trust_token was not sent to it.", "")
        raise FingerprintMismatchError(
            f"the server's certificate has the SHA-256 fingerprint {presented}, but the trust_token names "
            f"{expected}; {pinned[0]}", where=where,
            expected=expected, presented=presented,
            fix="check that the url is the server that made the token (another server, or something between us and "
                "it, answers there); or make a new token on that server, or set server_cert to its certificate "
                f"(server.crt in its state directory).{pinned[1]}")


def check_server_cert_is_tokens(server_cert: str, expected: str, where: str) -> None:
    """Refuse a server_cert given with a trust_token that is not the certificate the token names."""
    try:
        with open(server_cert, "rb") as handle:
            presented = pem_fingerprint(handle.read())
    except OSError as exc:
        raise OptionError(f"cannot read server_cert '{server_cert}' ({exc.strerror or exc}).", where=where,
                          fix="set server_cert to a readable copy of the server's certificate.") from None
    if presented is None:
        raise OptionError(f"server_cert '{server_cert}' is not a PEM certificate.", where=where,
                          fix="copy the server's own certificate (server.crt in its state directory).")
    if presented != expected:
        raise FingerprintMismatchError(
            f"server_cert '{server_cert}' has the SHA-256 fingerprint {presented}, but the trust_token names "
            f"{expected}; the trust_token was not sent.", where=where, expected=expected, presented=presented,
            fix="set server_cert to the certificate of the server that made the token, or leave server_cert out to "
                "pin it from the token; or make a new token on the server that server_cert names.")


def stored_pin_matches(path: str, expected: str, where: str) -> bool:
    """True when `path` holds the certificate whose fingerprint is `expected` (pinned on an earlier
    run); False when there is no file. A path that cannot be read (a directory, a symlink loop,
    another user's file) is an OptionError naming `where` and server_cert."""
    try:
        with open(path, "rb") as handle:
            return pem_fingerprint(handle.read()) == expected
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OptionError(f"cannot read the pinned server certificate, server_cert '{path}' ({exc.strerror or exc}).",
                          where=where, fix="remove it (it is pinned again from the trust_token), or set server_cert "
                          "to a readable copy of the server's certificate.") from None


def fetch_server_certificate(host: str, port: int, timeout: float | None) -> bytes:
    """The certificate (DER) the server at host:port presents, read WITHOUT verifying it: only to
    compare its fingerprint with a trust token's. No request is sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            der = sock.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return der


def pin_from_token(url: str, expected: str, path: str, timeout: float | None, where: str) -> bool:
    """Pin the server at `url` from its trust token: when `path` does not hold the certificate
    whose fingerprint is `expected` already, read the server's certificate (unverified), refuse it
    unless its fingerprint is `expected`, and write it to `path`. True when it was written."""
    if stored_pin_matches(path, expected, where):
        return False
    parsed = urlparse(url)
    try:
        der = fetch_server_certificate(parsed.hostname or "", parsed.port or DEFAULT_HTTPS_PORT, timeout)
    except OSError as exc:  # ssl.SSLError and TimeoutError included
        raise RemoteError(where=where, action="reading the server's certificate to compare it with the trust_token",
                          cause=first_line(exc), fix="is LXD or Incus running and listening there (core.https_address)? "
                          "Is the url right?") from None
    check_token_fingerprint(expected, der, where, path)
    write_pinned_cert(path, der, where)
    return True


def write_pinned_cert(path: str, der: bytes, where: str) -> None:
    """Write the pinned server certificate (PEM, mode 0644) to `path`: under a new name created with
    O_EXCL, then renamed over it, so a reader never sees half a file. New directories are 0700."""
    _make_private_dirs(os.path.dirname(os.path.abspath(path)), where, "the pinned server certificate", "server_cert")
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchmod(descriptor, 0o644)
            os.write(descriptor, ssl.DER_cert_to_PEM_cert(der).encode("ascii"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as exc:
        raise OptionError(f"cannot write the pinned server certificate {path} ({exc.strerror}).", where=where,
                          fix="set server_cert to the server's certificate, or make the directory writable.") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def generate_client_pair() -> tuple[bytes, bytes]:
    """A new self-signed client certificate and its key, PEM, the way lxc and incus make them."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise missing_package("cryptography", exc) from None
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{_user()}@{socket.gethostname()}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A minute back: a server whose clock is slightly behind still takes it.
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return str(os.getuid())


def ensure_client_pair(cert_path: str, key_path: str, where: str) -> bool:
    """Generate the client pair at `cert_path`/`key_path` unless both exist; True when generated.

    Two controllers doing this at once get the same pair: each holds a lock on the key's directory
    while it looks and writes, and every file is written under a temporary name created with
    O_EXCL, then linked to its final name (a link never replaces a file, so no file is ever seen
    half written or overwritten). Directories made here are 0700, the key 0600."""
    if os.path.isfile(cert_path) and os.path.isfile(key_path):
        return False
    for directory in {os.path.dirname(os.path.abspath(path)) for path in (cert_path, key_path)}:
        _make_private_dirs(directory, where)
    with _locked(os.path.dirname(os.path.abspath(key_path))):
        have = [os.path.isfile(path) for path in (cert_path, key_path)]
        if all(have):
            return False
        if any(have):
            present, absent = (cert_path, key_path) if have[0] else (key_path, cert_path)
            raise OptionError(
                f"{where}: {present} exists but {absent} does not, so no client pair can be used or made. "
                f"Fix: restore {absent}, or remove {present} to have a new pair generated.")
        cert_pem, key_pem = generate_client_pair()
        # The key first: a pair is only complete (and used) once its certificate exists too.
        _write_new(key_path, key_pem, 0o600, where)
        _write_new(cert_path, cert_pem, 0o644, where)
    return True


def _make_private_dirs(directory: str, where: str, what: str = "the client certificate",
                       options: str = "client_cert and client_key") -> None:
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise OptionError(f"{where}: cannot create {path} for {what} ({exc.strerror}). "
                              f"Fix: set {options} to paths you can write.") from None


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _write_new(path: str, data: bytes, mode: int, where: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(descriptor, mode)
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.link(temporary, path)
    except OSError as exc:
        raise OptionError(f"{where}: cannot write {path} ({exc.strerror}). Fix: set client_cert and client_key "
                          "to paths you can write (or remove a stale file).") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def token_request(token: str, host_info: dict[str, Any], incus: bool) -> dict[str, Any]:
    """The body of `POST /1.0/certificates` that adds our TLS certificate with `token`.

    Incus (always, so it announces no extension for it) and LXD with the `explicit_trust_token`
    API extension (5.21+) read it from `trust_token`; LXD 5.0 reads a token from `password` (both
    checked on the lab: LXD 5.0.2 refuses `trust_token`, Incus 6.0.4 refuses `password`)."""
    explicit = incus or "explicit_trust_token" in host_info.get("api_extensions", [])
    return {"type": "client", "trust_token" if explicit else "password": token}
