"""`remote: NAME` reads the lxc/incus CLI's own remotes, from config files the real CLIs wrote."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.cli_config import cli_config_dirs, find_cli_remote
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import remote_from_mapping, remote_from_task_args

RECORDED = Path(__file__).resolve().parent / "recorded" / "cli"


def cli_dir(root: Path, recorded: str, remote: str, client_pair: bool = True) -> Path:
    """A CLI config directory as `remote add` leaves it: config.yml, servercerts/REMOTE.crt, the pair."""
    directory = root / recorded
    (directory / "servercerts").mkdir(parents=True)
    shutil.copy(RECORDED / f"{recorded}-config.yml", directory / "config.yml")
    (directory / "servercerts" / f"{remote}.crt").write_text("server")
    if client_pair:
        (directory / "client.crt").write_text("crt")
        (directory / "client.key").write_text("key")
    return directory


@pytest.fixture
def no_cli(monkeypatch, tmp_path):
    """Every CLI location empty (HOME and both *_CONF in the test's directory)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LXD_CONF", raising=False)
    monkeypatch.delenv("INCUS_CONF", raising=False)
    monkeypatch.delenv("MAGE_LXD_URL", raising=False)
    return tmp_path


def test_the_clis_config_directories_in_order():
    assert [(c.cli, c.directory) for c in cli_config_dirs({}, "/h")] == [
        ("lxc", "/h/.config/lxc"), ("lxc", "/h/snap/lxd/common/config"), ("incus", "/h/.config/incus")]
    assert [c.directory for c in cli_config_dirs({"LXD_CONF": "/l", "INCUS_CONF": "/i"}, "/h")] == ["/l", "/i"]


def test_an_lxc_remote_gives_url_pinned_server_cert_and_client_pair(no_cli, monkeypatch):
    directory = cli_dir(no_cli, "lxc-5.0.2", "tremx")
    monkeypatch.setenv("LXD_CONF", str(directory))
    remote = remote_from_mapping({"name": "tremx"}, where="remotes")
    assert (remote.url, remote.server_cert) == ("https://127.0.0.1:18443", str(directory / "servercerts/tremx.crt"))
    assert (remote.client_cert, remote.client_key) == (str(directory / "client.crt"), str(directory / "client.key"))
    # lxc 5.0.2 writes no project for a remote added without --project.
    assert remote.project is None


def test_an_incus_remote_gives_its_project_and_explicit_options_win(no_cli, monkeypatch, tmp_path):
    directory = cli_dir(no_cli, "incus-6.0.4", "tremy")
    monkeypatch.setenv("INCUS_CONF", str(directory))
    remote = remote_from_mapping({"name": "tremy"}, where="remotes")
    assert (remote.url, remote.project) == ("https://127.0.0.1:18444", "default")
    own = tmp_path / "own.crt"
    own.write_text("x")
    pinned = remote_from_mapping({"name": "tremy", "server_cert": str(own), "timeout": 3}, where="remotes")
    assert (pinned.url, pinned.server_cert, pinned.timeout) == ("https://127.0.0.1:18444", str(own), 3.0)
    # A url of its own means the name is only a label: nothing is read from the CLI.
    labelled = remote_from_mapping({"name": "tremy", "url": "unix:/run/other.socket"}, where="remotes")
    assert (labelled.url, labelled.server_cert, labelled.project) == ("unix:/run/other.socket", None, None)


def test_a_token_never_makes_a_pair_in_the_clis_directory(no_cli, monkeypatch, tmp_path):
    directory = cli_dir(no_cli, "lxc-5.0.2", "tremx", client_pair=False)
    monkeypatch.setenv("LXD_CONF", str(directory))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    # The CLI has no pair: with a token, mage-lxd's own is used (and generated there at connect).
    token = base64.b64encode(json.dumps({"client_name": "x", "fingerprint": "ab" * 32, "addresses": ["h:8443"],
                                         "secret": "s"}).encode()).decode()
    remote = remote_from_mapping({"name": "tremx", "trust_token": token}, where="remotes")
    assert (remote.client_cert, remote.client_key) == (str(tmp_path / "xdg/mage-lxd/client.crt"),
                                                       str(tmp_path / "xdg/mage-lxd/client.key"))
    # The server certificate `lxc remote add` pinned is still the CLI's: nothing is pinned from the
    # token, whose fingerprint is still read, to be checked before the token is sent.
    assert remote.server_cert == str(directory / "servercerts/tremx.crt") and remote.pin_token is False
    assert remote.token_fingerprint == "ab" * 32
    # The CLI's pair, when it has one, is used as before.
    (directory / "client.crt").write_text("crt")
    (directory / "client.key").write_text("key")
    remote = remote_from_mapping({"name": "tremx", "trust_token": token}, where="remotes")
    assert remote.client_cert == str(directory / "client.crt")


def test_incus_per_remote_client_certificates_come_first(no_cli, monkeypatch):
    directory = cli_dir(no_cli, "incus-6.0.4", "tremy")
    (directory / "clientcerts").mkdir()
    for ext in ("crt", "key"):
        (directory / "clientcerts" / f"tremy.{ext}").write_text(ext)
    monkeypatch.setenv("INCUS_CONF", str(directory))
    remote = remote_from_mapping({"name": "tremy"}, where="remotes")
    assert remote.client_cert == str(directory / "clientcerts" / "tremy.crt")


def test_the_local_remote_and_the_environment_are_not_the_clis(no_cli, monkeypatch):
    directory = cli_dir(no_cli, "lxc-5.0.2", "tremx")
    monkeypatch.setenv("LXD_CONF", str(directory))
    assert remote_from_mapping({"name": "local"}).url == ""
    monkeypatch.setenv("MAGE_LXD_URL", "unix:/var/lib/incus/unix.socket")
    # MAGE_LXD_URL is an explicit option too: it wins over the CLI's remote.
    assert remote_from_task_args({"remote": "tremx"}, where="t").url == "unix:/var/lib/incus/unix.socket"
    monkeypatch.setenv("MAGE_LXD_URL", "")
    assert remote_from_task_args({"remote": "tremx"}, where="t").url == "https://127.0.0.1:18443"


def test_a_missing_remote_names_the_files_read_and_those_absent(no_cli, monkeypatch):
    directory = cli_dir(no_cli, "lxc-5.0.2", "tremx")
    monkeypatch.setenv("LXD_CONF", str(directory))
    with pytest.raises(OptionError) as error:
        remote_from_mapping({"name": "prod"}, where="remotes")
    message = str(error.value)
    assert message.startswith("remotes 'prod': no url is given and no lxc or incus remote is named 'prod'")
    assert f"read: {directory}/config.yml;" in message
    assert f"absent: {no_cli}/home/.config/incus/config.yml" in message
    assert "Fix: " in message


@pytest.mark.parametrize(("name", "expected"), [
    ("images", "is a simplestreams image server, which serves images only"),
])
def test_an_image_server_is_refused_for_api_access(no_cli, monkeypatch, name, expected):
    monkeypatch.setenv("LXD_CONF", str(cli_dir(no_cli, "lxc-5.0.2", "tremx")))
    with pytest.raises(OptionError, match=f"remotes '{name}': lxc remote '{name}' in .* {expected}.*Fix:"):
        remote_from_mapping({"name": name}, where="remotes")


def test_other_auth_types_and_broken_files_are_named(no_cli, monkeypatch):
    directory = no_cli / "conf"
    directory.mkdir()
    monkeypatch.setenv("INCUS_CONF", str(directory))
    (directory / "config.yml").write_text("remotes:\n  sso: {addr: 'https://h:8443', auth_type: oidc, protocol: incus}\n")
    with pytest.raises(OptionError, match="remote 'sso' .* authenticates with oidc.*Fix:"):
        find_cli_remote("sso", "remote")
    (directory / "config.yml").write_text("remotes: [\n")
    with pytest.raises(OptionError, match=f"{directory}/config.yml is not YAML.*Fix:"):
        find_cli_remote("sso", "remote")


def test_a_cli_remote_with_a_socket_address_is_the_socket(no_cli, monkeypatch):
    directory = no_cli / "conf"
    directory.mkdir()
    monkeypatch.setenv("LXD_CONF", str(directory))
    (directory / "config.yml").write_text("remotes:\n  here: {addr: 'unix:///var/lib/incus/unix.socket'}\n"
                                          "  there: {addr: 'unix://'}\n")
    assert remote_from_mapping({"name": "here"}).url == "unix:///var/lib/incus/unix.socket"
    assert remote_from_mapping({"name": "there"}).url == ""


def test_a_cli_remote_names_an_image_server_for_image_sources(no_cli, monkeypatch):
    from ansible_collections.mage.lxd.plugins.plugin_utils.cli_config import find_cli_image_remote

    directory = cli_dir(no_cli, "lxc-5.0.2", "tremx")
    monkeypatch.setenv("LXD_CONF", str(directory))
    # The simplestreams remote the client wrote, and an LXD server with its pinned certificate.
    assert find_cli_image_remote("images", "instance 'w'") == {
        "url": "https://images.linuxcontainers.org", "protocol": "simplestreams"}
    assert find_cli_image_remote("tremx", "instance 'w'") == {
        "url": "https://127.0.0.1:18443", "protocol": "lxd", "server_cert": str(directory / "servercerts" / "tremx.crt")}
    with pytest.raises(OptionError, match=r"image remote 'local': lxc remote 'local' .* is not an image server"):
        find_cli_image_remote("local", "instance 'w'")
    with pytest.raises(OptionError, match="no lxc or incus remote is named 'nowhere'"):
        find_cli_image_remote("nowhere", "instance 'w'")
