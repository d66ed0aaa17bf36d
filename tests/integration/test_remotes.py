"""A new controller trusted with a token, and the lxc/incus CLI's own remotes, on the lab's HTTPS
listener (TLS verified, the server certificate pinned). Every certificate and token these tests add
to the server is named mage-test-trem-* (mage-test-inc-trem-* on Incus) and removed afterwards."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.client_trust import pin_name

from lxd_lab import (CLI, LAB, ON_INCUS, SERVER_CERT, TITLE, ansible, create_project, delete_project, instance_names,
                     inventory_list, launch, lxc, project_name, run_module)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-trem-tok")
CLI_PROJECT = project_name("mage-test-trem-cli")
# Certificate and token names: the server names a certificate added with a token after the token.
PREFIX = project_name("mage-test-trem-")
URL = f"https://{LAB['MAGE_LAB_HTTPS_ADDRESS']}"
# The image that has python, for ansible's ping and for mage_lxd_instance's bootstrap.
PYTHON_IMAGE = "mage/debian-12"


def new_token(name: str) -> str:
    """A trust token for a client called `name` (each CLI spells this its own way)."""
    out = lxc("config", "trust", "add", name) if ON_INCUS else lxc("config", "trust", "add", "--name", name)
    lines = out.stdout.splitlines()
    return next(lines[index + 1].strip() for index, line in enumerate(lines) if line.rstrip().endswith("token:"))


def trusted_names() -> dict[str, str]:
    """The server's trusted certificates as name -> fingerprint."""
    return {cert["name"]: cert["fingerprint"] for cert in json.loads(lxc("config", "trust", "list", "--format",
                                                                         "json").stdout)}


def fingerprint(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def remove_ours() -> None:
    """Remove the certificates and tokens these tests added (by their name), nothing else."""
    for name, print_ in trusted_names().items():
        if name.startswith(PREFIX):
            lxc("config", "trust", "remove", print_, check=False)
    for token in json.loads(lxc("config", "trust", "list-tokens", "--format", "json").stdout or "[]"):
        if token["client_name"].startswith(PREFIX):
            lxc("config", "trust", "revoke-token", token["client_name"], check=False)


@pytest.fixture(scope="module")
def lab_project(lab):
    remove_ours()
    create_project(PROJECT)
    try:
        launch(PROJECT, "trem1", image=PYTHON_IMAGE)
        yield PROJECT
    finally:
        delete_project(PROJECT)
        remove_ours()


def https_inventory(directory: Path, token: str, client: str = "client") -> Path:
    """An inventory of a fresh controller: the HTTPS url, a pinned server certificate, a token, and
    client pair paths where nothing exists yet."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mage_lxd.yml"
    path.write_text(textwrap.dedent(f"""\
        plugin: mage_lxd
        projects: [{PROJECT}]
        remotes:
          - name: trem
            url: {URL}
            server_cert: {SERVER_CERT}
            client_cert: {directory}/certs/{client}.crt
            client_key: {directory}/certs/{client}.key
            trust_token: "{token}"
        """))
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())


def ping(tmp_path: Path, host: str, variables: dict[str, str], env: dict[str, str] | None = None) -> None:
    """`ansible -m ping` of one host of a static inventory, reached by the mage_lxd connection with
    `variables`; fails the test with Ansible's own words unless it answers pong."""
    static = tmp_path / "hosts.yml"
    static.write_text(json.dumps({"all": {"hosts": {host: {"ansible_connection": "mage.lxd.mage_lxd", **variables}}}}))
    result = ansible("ansible", "-i", str(static), host, "-m", "ansible.builtin.ping", env=env, check=False)
    assert result.returncode == 0 and '"ping": "pong"' in result.stdout, one_line(result)


def lookup_status(instance: str, env: dict[str, str], **options: str) -> None:
    """The lookup of `instance`'s status, from a task on localhost; it must be running."""
    arguments = "".join(f", {key}='{value}'" for key, value in options.items())
    result = ansible("ansible", "-i", "localhost,", "localhost", "-c", "local", "-m", "ansible.builtin.debug", "-a",
                     f"msg={{{{ lookup('mage.lxd.mage_lxd', '{instance}', key='status'{arguments}) }}}}",
                     env=env, check=False)
    assert result.returncode == 0 and '"msg": "running"' in result.stdout, one_line(result)


@pytest.fixture(scope="module")
def trusted_controller(lab_project, tmp_path_factory):
    """A new controller whose first `ansible-inventory` trusts it with a token."""
    directory = tmp_path_factory.mktemp("controller")
    name = PREFIX + "first"
    token = new_token(name)
    inventory = https_inventory(directory, token)
    cert = directory / "certs" / "client.crt"
    assert not cert.exists() and name not in trusted_names()
    listed = inventory_list(inventory)
    return {"dir": directory, "inventory": inventory, "token": token, "name": name, "cert": cert,
            "key": directory / "certs" / "client.key", "listed": listed}


def test_a_token_trusts_a_new_controller_and_the_inventory_lists_its_instances(trusted_controller):
    listed = trusted_controller["listed"]
    host = listed["_meta"]["hostvars"]["trem1"]
    assert (host["lxd_project"], host["mage_lxd_url"]) == (PROJECT, URL)
    assert host["mage_lxd_client_cert"] == str(trusted_controller["cert"])
    # The token is spent and secret: it never reaches host variables.
    assert trusted_controller["token"] not in json.dumps(listed)
    # The pair was generated here (key 0600, its new directory 0700) and is the one the server trusts now.
    assert stat.S_IMODE(trusted_controller["key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(trusted_controller["cert"].parent.stat().st_mode) == 0o700
    assert trusted_names()[trusted_controller["name"]] == fingerprint(trusted_controller["cert"])


def test_the_trusted_controller_pings_and_creates_an_instance_without_spending_the_token_again(trusted_controller):
    # The inventory still carries the spent token: a trusted client never sends it, else this fails.
    pinged = ansible("ansible", "-i", str(trusted_controller["inventory"]), "trem1", "-m", "ansible.builtin.ping",
                     check=False)
    assert pinged.returncode == 0 and '"ping": "pong"' in pinged.stdout, one_line(pinged)
    created = run_module("mage.lxd.mage_lxd_instance", {
        "name": "trem2", "image": PYTHON_IMAGE, "project": PROJECT, "url": URL, "server_cert": SERVER_CERT,
        "client_cert": str(trusted_controller["cert"]), "client_key": str(trusted_controller["key"]),
        "trust_token": trusted_controller["token"]}, project=PROJECT)
    assert not created.get("failed"), created.get("msg")
    assert created["changed"] is True and created["status"] == "running"
    assert "trem2" in instance_names(PROJECT)


def test_the_connection_and_the_lookup_take_a_token_on_first_use_too(lab_project, tmp_path):
    # The connection's host variables, then the lookup's environment: each a new controller.
    ping(tmp_path, "trem1", {
        "ansible_mage_lxd_url": URL, "ansible_mage_lxd_project": PROJECT, "ansible_mage_lxd_server_cert": SERVER_CERT,
        "ansible_mage_lxd_client_cert": f"{tmp_path}/conn/client.crt",
        "ansible_mage_lxd_client_key": f"{tmp_path}/conn/client.key",
        "ansible_mage_lxd_trust_token": new_token(PREFIX + "conn")})
    assert trusted_names()[PREFIX + "conn"] == fingerprint(tmp_path / "conn" / "client.crt")
    env = {"MAGE_LXD_URL": URL, "MAGE_LXD_SERVER_CERT": SERVER_CERT, "MAGE_LXD_TRUST_TOKEN": new_token(PREFIX + "env"),
           "MAGE_LXD_CLIENT_CERT": f"{tmp_path}/env/client.crt", "MAGE_LXD_CLIENT_KEY": f"{tmp_path}/env/client.key"}
    lookup_status("trem1", env, project=PROJECT)
    assert trusted_names()[PREFIX + "env"] == fingerprint(tmp_path / "env" / "client.crt")


def wrong_secret(token: str) -> str:
    """The same token (this server's fingerprint, name and addresses) with a secret it never made."""
    data = json.loads(base64.b64decode(token))
    return base64.b64encode(json.dumps({**data, "secret": "0" * len(data["secret"])}).encode()).decode()


@pytest.mark.parametrize("which", ["spent", "wrong", "malformed"])
def test_a_spent_or_wrong_token_fails_clearly_and_trusts_nothing(trusted_controller, tmp_path, which):
    token = {"spent": trusted_controller["token"], "wrong": wrong_secret(trusted_controller["token"]),
             "malformed": "bm90IGEgdG9rZW4="}[which]
    inventory = https_inventory(tmp_path, token, client="other")
    result = ansible("ansible-inventory", "-i", str(inventory), "--list", check=False)
    message = one_line(result)
    assert result.returncode != 0
    if which == "malformed":
        # Refused before anything is sent: it is no token at all.
        assert "option trust_token is not an LXD or Incus trust token" in message
        assert not (tmp_path / "certs" / "other.crt").exists()
        return
    assert f"{TITLE} remote 'trem' ({URL}): option trust_token: the server refused the token" in message
    assert f"Fix: on the server run '{CLI} config trust add" in message
    other = tmp_path / "certs" / "other.crt"
    assert fingerprint(other) not in trusted_names().values()


def test_two_controllers_at_once_with_one_token_and_paths_share_one_good_pair(lab_project, tmp_path):
    token = new_token(PREFIX + "twice")
    inventory = https_inventory(tmp_path, token)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ansible("ansible-inventory", "-i", str(inventory), "--list",
                                                  check=False), range(2)))
    # One spends the token; the other is refused, finds the same pair trusted now, and goes on.
    assert [result.returncode for result in results] == [0, 0], [one_line(result) for result in results]
    assert sorted(os.listdir(tmp_path / "certs")) == ["client.crt", "client.key"]
    cert = tmp_path / "certs" / "client.crt"
    key_of_cert = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                                 capture_output=True, text=True, check=True).stdout
    key_public = subprocess.run(["openssl", "pkey", "-in", str(tmp_path / "certs" / "client.key"), "-pubout"],
                                capture_output=True, text=True, check=True).stdout
    assert key_of_cert == key_public
    assert trusted_names()[PREFIX + "twice"] == fingerprint(cert)


@pytest.fixture(scope="module")
def cli_remote(lab_project, tmp_path_factory):
    """A remote added by the real CLI (`remote add ... --project`) into a config directory of its own:
    LXD_CONF or INCUS_CONF point there, so the user's own remotes are never read nor changed."""
    directory = tmp_path_factory.mktemp("cliconf")
    name = "tremcli"
    create_project(CLI_PROJECT)
    try:
        launch(CLI_PROJECT, "trem3", image=PYTHON_IMAGE)
        token = new_token(PREFIX + "cli")
        env_name = "INCUS_CONF" if ON_INCUS else "LXD_CONF"
        # LXD 5.0.2's client has no --token: it sends a token given as --password (as its server reads it).
        secret = ["--token", token] if ON_INCUS else ["--password", token]
        added = subprocess.run([CLI, "remote", "add", name, URL, "--accept-certificate", *secret, "--project",
                                CLI_PROJECT], capture_output=True, text=True, env={**os.environ, env_name: str(directory)},
                               check=False)
        assert added.returncode == 0, added.stderr
        empty = tmp_path_factory.mktemp("nocli")
        env = {"LXD_CONF": str(empty), "INCUS_CONF": str(empty), env_name: str(directory),
               # The Incus pass exports MAGE_LXD_URL (the socket); a url given would win over the CLI's.
               "MAGE_LXD_URL": ""}
        yield {"name": name, "dir": directory, "env": env}
    finally:
        delete_project(CLI_PROJECT)
        # Only if the action had ignored the CLI remote's project (the test then failed): no leftovers.
        lxc("delete", "--force", "trem4", "--project", "default", check=False)


def cli_inventory(directory: Path, remote: str) -> Path:
    path = directory / "mage_lxd.yml"
    path.write_text(f"plugin: mage_lxd\nremotes: [{{name: {remote}}}]\n")
    return path


def test_the_inventory_reads_a_remote_the_cli_added(cli_remote, tmp_path):
    listed = inventory_list(cli_inventory(tmp_path, cli_remote["name"]), env=cli_remote["env"])
    # The CLI remote's project is read when the inventory names none.
    host = listed["_meta"]["hostvars"]["trem3"]
    assert (host["lxd_project"], host["lxd_remote"], host["mage_lxd_url"]) == (CLI_PROJECT, "tremcli", URL)
    assert host["mage_lxd_server_cert"] == f"{cli_remote['dir']}/servercerts/tremcli.crt"
    assert host["mage_lxd_client_cert"] == f"{cli_remote['dir']}/client.crt"
    assert host["mage_lxd_validate_certs"] is True


def test_connection_lookup_and_instance_action_read_the_cli_remote(cli_remote, tmp_path):
    ping(tmp_path, "trem3", {"ansible_mage_lxd_remote": cli_remote["name"]}, env=cli_remote["env"])
    lookup_status("trem3", cli_remote["env"], remote=cli_remote["name"])
    playbook = tmp_path / "create.yml"
    playbook.write_text(textwrap.dedent("""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - mage.lxd.mage_lxd_instance:
                remote: tremcli
                name: trem4
                image: mage/busybox
                bootstrap: false
                wait_for_address: none
        """))
    created = ansible("ansible-playbook", "-i", "localhost,", str(playbook), env=cli_remote["env"], check=False)
    assert created.returncode == 0, one_line(created)
    # In the CLI remote's project: the task named none.
    assert "trem4" in instance_names(CLI_PROJECT) and "trem4" not in instance_names("default")


@pytest.mark.parametrize(("remote", "expected"), [
    ("nosuch", "remotes 'nosuch': no url is given and no lxc or incus remote is named 'nosuch' (read: {conf};"),
    ("images", "remotes 'images': {cli} remote 'images' in {conf} is a simplestreams image server"),
])
def test_a_cli_remote_that_is_missing_or_no_api_is_named_with_the_files(cli_remote, tmp_path, remote, expected):
    result = ansible("ansible-inventory", "-i", str(cli_inventory(tmp_path, remote)), "--list", env=cli_remote["env"],
                     check=False)
    assert result.returncode != 0
    conf = f"{cli_remote['dir']}/config.yml"
    assert expected.format(conf=conf, cli=CLI) in one_line(result)
    assert "Fix:" in one_line(result)


def token_only_inventory(directory: Path, token: str, more: str = "") -> Path:
    """An inventory that gives a remote nothing but its url and a trust token, as `lxc remote add
    NAME URL --token T` needs nothing else: no server certificate, no client pair."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mage_lxd.yml"
    path.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\nremotes:\n  - {{name: trem, url: {URL}, "
                    f"trust_token: \"{token}\"{more}}}\n")
    return path


@pytest.fixture(scope="module")
def token_only_controller(lab_project, tmp_path_factory):
    """A fresh controller with a HOME of its own (XDG_CONFIG_HOME unset: ~/.config), whose first
    `ansible-inventory` pins the server from the token and trusts its new client pair."""
    directory = tmp_path_factory.mktemp("tokenonly")
    home = directory / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    name = PREFIX + "only"
    token = new_token(name)
    inventory = token_only_inventory(directory, token)
    listed = inventory_list(inventory, env=env)
    return {"env": env, "config": home / ".config" / "mage-lxd", "inventory": inventory, "token": token, "name": name,
            "listed": listed}


def test_a_url_and_a_token_alone_pin_the_server_and_trust_a_new_pair(token_only_controller):
    config, listed = token_only_controller["config"], token_only_controller["listed"]
    host = listed["_meta"]["hostvars"]["trem1"]
    assert (host["lxd_project"], host["mage_lxd_url"], host["mage_lxd_validate_certs"]) == (PROJECT, URL, True)
    # mage-lxd's own files, never the CLI's: the pin is the daemon's own server.crt, and the pair is trusted.
    pinned = config / "servercerts" / f"{pin_name('trem', URL)}.crt"
    assert host["mage_lxd_server_cert"] == str(pinned)
    assert host["mage_lxd_client_cert"] == str(config / "client.crt")
    assert fingerprint(pinned) == fingerprint(Path(SERVER_CERT))
    assert trusted_names()[token_only_controller["name"]] == fingerprint(config / "client.crt")
    assert stat.S_IMODE(pinned.stat().st_mode) == 0o644
    assert stat.S_IMODE((config / "client.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert token_only_controller["token"] not in json.dumps(listed)


def test_the_token_only_controller_pings_and_creates_an_instance_with_the_spent_token(token_only_controller, tmp_path):
    env = token_only_controller["env"]
    # The same options, the token spent: the pin and the pair are used, the token is not sent again.
    pinged = ansible("ansible", "-i", str(token_only_controller["inventory"]), "trem1", "-m", "ansible.builtin.ping",
                     env=env, check=False)
    assert pinged.returncode == 0 and '"ping": "pong"' in pinged.stdout, one_line(pinged)
    playbook = tmp_path / "create.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - mage.lxd.mage_lxd_instance:
                url: {URL}
                trust_token: "{token_only_controller['token']}"
                project: {PROJECT}
                name: trem5
                image: mage/busybox
                bootstrap: false
                wait_for_address: none
        """))
    created = ansible("ansible-playbook", "-i", "localhost,", str(playbook), env=env, check=False)
    assert created.returncode == 0, one_line(created)
    assert "trem5" in instance_names(PROJECT)
    # A task's remote has no name of its own: its pin is 'local' and a hash of that name, the host and port.
    assert fingerprint(token_only_controller["config"] / "servercerts" / f"{pin_name('local', URL)}.crt") == fingerprint(
        Path(SERVER_CERT))
    # Still the one certificate of that name: a trusted client never sends the (spent) token, which
    # the server would refuse.
    listed = json.loads(lxc("config", "trust", "list", "--format", "json").stdout)
    assert [cert["name"] for cert in listed].count(token_only_controller["name"]) == 1


@pytest.mark.parametrize("which", ["spent", "other server", "other server, no TLS checks"])
def test_a_second_fresh_controller_with_the_token_fails_clearly(token_only_controller, tmp_path, which):
    token = token_only_controller["token"]
    if which.startswith("other server"):
        # The same token naming another server's certificate: refused before anything is sent.
        data = json.loads(base64.b64decode(token))
        token = base64.b64encode(json.dumps({**data, "fingerprint": "ab" * 32}).encode()).decode()
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    (tmp_path / "home").mkdir()
    more = ", validate_certs: false" if which.endswith("no TLS checks") else ""
    result = ansible("ansible-inventory", "-i", str(token_only_inventory(tmp_path, token, more)), "--list", env=env,
                     check=False)
    message = one_line(result)
    assert result.returncode != 0
    config = tmp_path / "xdg" / "mage-lxd"
    if which == "spent":
        assert f"{TITLE} remote 'trem' ({URL}): option trust_token: the server refused the token" in message
        assert f"Fix: on the server run '{CLI} config trust add" in message
        assert fingerprint(config / "client.crt") not in trusted_names().values()
    elif which == "other server":
        assert (f"remote 'trem' ({URL}): the server's certificate has the SHA-256 fingerprint "
                f"{fingerprint(Path(SERVER_CERT))}, but the trust_token names {'ab' * 32}") in message
        assert "Fix: check that the url is the server that made the token" in message
        assert not config.exists()
    else:
        # TLS checks off: the token still goes only to the server it names, so it is never sent (the
        # client pair was made first, and stays untrusted); nothing is pinned.
        assert (f"remote 'trem' ({URL}): the server's certificate has the SHA-256 fingerprint "
                f"{fingerprint(Path(SERVER_CERT))}, but the trust_token names {'ab' * 32}; the trust_token was "
                "not sent to it.") in message
        assert fingerprint(config / "client.crt") not in trusted_names().values()
        assert not (config / "servercerts").exists()
