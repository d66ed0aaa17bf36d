"""A new controller's client certificate: generated as the CLIs do, then trusted with a token.

`lxc remote add` and `incus remote add` make an EC P-384 self-signed certificate (O=Linux
Containers, CN=user@host, ten years, client authentication) when client.crt is missing, and add it
to the server with a trust token. We do the same at the remote's client_cert/client_key paths, so a
controller needs nothing but the token (from `lxc config trust add --name NAME` or
`incus config trust add NAME`) and, ideally, the server's certificate to pin.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import getpass
import os
import socket
from collections.abc import Iterator
from typing import Any

from .errors import OptionError, missing_package

# As the CLIs: shared/cert.go GenerateMemCert in LXD and Incus.
VALID_DAYS = 3650
ORGANIZATION = "Linux Containers"


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


def _make_private_dirs(directory: str, where: str) -> None:
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
            raise OptionError(f"{where}: cannot create {path} for the client certificate ({exc.strerror}). "
                              "Fix: set client_cert and client_key to paths you can write.") from None


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
