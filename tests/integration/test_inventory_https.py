"""The inventory over HTTPS (the lab's LXD on loopback) with a client certificate; TLS checks on."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from lxd_lab import (CLI, LAB, SERVER_CERT, ansible, create_project, delete_project, inventory_list, launch, lxc,
                     project_name, trust_certificate)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-inv-https")


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway self-signed client certificate and key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
        check=True, capture_output=True,
    )
    return cert, key


def fingerprint(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


@pytest.fixture(scope="module")
def https_remote(lab, tmp_path_factory):
    """A trusted client certificate and one running instance in a test project."""
    directory = tmp_path_factory.mktemp("certs")
    cert, key = make_certificate(directory, "mage-test-trusted")
    untrusted_cert, untrusted_key = make_certificate(directory, "mage-test-untrusted")
    create_project(PROJECT)
    trust_certificate(cert)
    try:
        launch(PROJECT, "remote1")
        yield {"cert": cert, "key": key, "untrusted_cert": untrusted_cert, "untrusted_key": untrusted_key}
    finally:
        lxc("config", "trust", "remove", fingerprint(cert), check=False)
        delete_project(PROJECT)


def config(directory: Path, remote: str) -> Path:
    path = directory / "mage_lxd.yml"
    path.write_text("plugin: mage_lxd\n" + f"projects: [{PROJECT}]\n" + "remotes:\n" + textwrap.indent(remote, "  "))
    return path


def url() -> str:
    return f"https://{LAB['MAGE_LAB_HTTPS_ADDRESS']}"


def test_https_remote_with_client_cert_and_pinned_server_cert(https_remote, tmp_path):
    path = config(tmp_path, f"""\
- name: lab-https
  url: {url()}
  client_cert: {https_remote['cert']}
  client_key: {https_remote['key']}
  server_cert: {SERVER_CERT}
""")
    inventory = inventory_list(path)
    host = inventory["_meta"]["hostvars"]["remote1"]
    assert host["lxd_remote"] == "lab-https"
    assert host["mage_lxd_url"] == url()
    assert host["mage_lxd_validate_certs"] is True
    assert host["mage_lxd_server_cert"] == SERVER_CERT


@pytest.mark.parametrize(
    ("remote_extra", "expected"),
    [
        ("", "TLS verification failed"),
        ("  server_cert: WRONG\n", "is not this server's certificate"),
    ],
)
def test_server_certificate_is_verified_by_default(https_remote, tmp_path, remote_extra, expected):
    remote_extra = remote_extra.replace("WRONG", str(https_remote["untrusted_cert"]))
    path = config(tmp_path, f"""\
- name: lab-https
  url: {url()}
  client_cert: {https_remote['cert']}
  client_key: {https_remote['key']}
""" + remote_extra)
    result = ansible("ansible-inventory", "-i", str(path), "--list", check=False)
    message = " ".join(result.stderr.split())
    assert result.returncode != 0
    # Before a TLS handshake the server has not said what it is: the message names the remote only
    # as its url suggests (LXD for https), so the kind is not asserted here.
    assert f"remote 'lab-https' ({url()}): TLS verification failed" in message
    assert expected in message


def test_untrusted_client_certificate_is_named(https_remote, tmp_path):
    path = config(tmp_path, f"""\
- name: lab-https
  url: {url()}
  client_cert: {https_remote['untrusted_cert']}
  client_key: {https_remote['untrusted_key']}
  server_cert: {SERVER_CERT}
""")
    result = ansible("ansible-inventory", "-i", str(path), "--list", check=False)
    message = " ".join(result.stderr.split())
    assert result.returncode != 0
    assert f"does not trust the client certificate '{https_remote['untrusted_cert']}'" in message
    assert f"{CLI} config trust add" in message


def test_unreachable_https_endpoint_is_named(https_remote, tmp_path):
    path = config(tmp_path, f"""\
- name: nowhere
  url: https://127.0.0.1:1
  client_cert: {https_remote['cert']}
  client_key: {https_remote['key']}
  server_cert: {SERVER_CERT}
  timeout: 3
""")
    result = ansible("ansible-inventory", "-i", str(path), "--list", check=False)
    message = " ".join(result.stderr.split())
    assert result.returncode != 0
    assert "LXD remote 'nowhere' (https://127.0.0.1:1): cannot connect" in message
