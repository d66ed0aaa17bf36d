"""The remotes users already have: the `lxc` and `incus` command line clients' config.yml.

`lxc remote add NAME URL` writes `remotes: {NAME: {addr, protocol, auth_type, project}}` to
config.yml, the server's certificate to servercerts/NAME.crt and uses the directory's
client.crt/client.key (Incus also looks for clientcerts/NAME.crt and .key first). Parsing is pure:
the text, its directory and which files exist go in, remote options come out.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import OptionError, missing_package

# Protocols that serve the /1.0 API; simplestreams is an image index only.
API_PROTOCOLS = ("lxd", "incus")


@dataclass(frozen=True)
class CliConfig:
    """One CLI's config directory: which client wrote it (`lxc` or `incus`) and where it is."""

    cli: str
    directory: str

    @property
    def path(self) -> str:
        """The config.yml in the directory."""
        return os.path.join(self.directory, "config.yml")


def cli_config_dirs(environ: Mapping[str, str], home: str) -> list[CliConfig]:
    """The config directories the two CLIs read, in the order we ask them: LXD_CONF (else
    ~/.config/lxc, then the snap's ~/snap/lxd/common/config), then INCUS_CONF (else ~/.config/incus)."""
    lxc = [environ["LXD_CONF"]] if environ.get("LXD_CONF") else [
        os.path.join(home, ".config", "lxc"), os.path.join(home, "snap", "lxd", "common", "config")]
    incus = [environ["INCUS_CONF"]] if environ.get("INCUS_CONF") else [os.path.join(home, ".config", "incus")]
    return [CliConfig("lxc", path) for path in lxc] + [CliConfig("incus", path) for path in incus]


def parse_cli_config(text: str, source: str) -> dict[str, Any]:
    """The `remotes` mapping of one config.yml's text; a file that is not such YAML is named."""
    try:
        import yaml
    except ImportError as exc:
        raise missing_package("PyYAML", exc) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise OptionError(f"{source} is not YAML ({str(exc).splitlines()[0]}). Fix: repair or move the file; "
                          "it is the lxc/incus client's config.") from None
    remotes = data.get("remotes") if isinstance(data, Mapping) else None
    if remotes is None:
        return {}
    if not isinstance(remotes, Mapping):
        raise OptionError(f"{source}: 'remotes' is not a mapping. Fix: repair the file.")
    return dict(remotes)


def remote_options(name: str, entry: Mapping[str, Any], config: CliConfig, where: str,
                   exists: Callable[[str], bool] = os.path.isfile) -> dict[str, Any]:
    """The remote options (url, client pair, pinned server certificate, project) of the CLI
    remote `name`, as `entry` of `config` describes it; a remote without the API is refused."""
    label = f"{where} '{name}'"
    protocol = str(entry.get("protocol") or "lxd")
    if protocol not in API_PROTOCOLS:
        raise OptionError(
            f"{label}: {config.cli} remote '{name}' in {config.path} is a {protocol} image server, which "
            "serves images only, not the LXD/Incus API. Fix: name an lxd or incus protocol remote "
            f"('{config.cli} remote list' shows the protocol), or give the remote a url.")
    auth_type = str(entry.get("auth_type") or "tls")
    if auth_type != "tls":
        raise OptionError(
            f"{label}: {config.cli} remote '{name}' in {config.path} authenticates with {auth_type}; only "
            "TLS client certificates are supported. Fix: add the server again with "
            f"'{config.cli} remote add {name} URL --auth-type=tls', or give the remote a url and client pair.")
    addr = str(entry.get("addr") or "")
    if not addr.startswith(("https://", "unix:")):
        raise OptionError(f"{label}: {config.cli} remote '{name}' in {config.path} has addr '{addr}', neither "
                          "https:// nor unix:. Fix: correct it with "
                          f"'{config.cli} remote set-url {name} URL'.")
    options: dict[str, Any] = {"url": "" if addr in ("unix:", "unix://") else addr}
    if addr.startswith("https://"):
        own = [os.path.join(config.directory, "clientcerts", f"{name}.{ext}") for ext in ("crt", "key")]
        shared = [os.path.join(config.directory, f"client.{ext}") for ext in ("crt", "key")]
        options["client_cert"], options["client_key"] = own if all(exists(path) for path in own) else shared
        server_cert = os.path.join(config.directory, "servercerts", f"{name}.crt")
        if exists(server_cert):
            options["server_cert"] = server_cert
    if entry.get("project"):
        options["project"] = str(entry["project"])
    return options


def image_remote_options(name: str, entry: Mapping[str, Any], config: CliConfig, where: str,
                         exists: Callable[[str], bool] = os.path.isfile) -> dict[str, Any]:
    """The image server (url, protocol, pinned server certificate) the CLI remote `name` is, for
    image sources such as `NAME:debian/12`: a simplestreams remote, or an LXD/Incus one whose
    public images LXD pulls."""
    label = f"{where}: image remote '{name}'"
    protocol = str(entry.get("protocol") or "lxd")
    addr = str(entry.get("addr") or "")
    if protocol not in (*API_PROTOCOLS, "simplestreams") or not addr.startswith("https://"):
        raise OptionError(
            f"{label}: {config.cli} remote '{name}' in {config.path} ({protocol}, {addr or 'no addr'}) is not an "
            "image server LXD can pull from: that needs an https:// simplestreams, lxd or incus remote. Fix: name "
            "another remote, or give image: {alias, server, protocol}.")
    options: dict[str, Any] = {"url": addr, "protocol": protocol}
    server_cert = os.path.join(config.directory, "servercerts", f"{name}.crt")
    if exists(server_cert):
        options["server_cert"] = server_cert
    return options


def find_cli_image_remote(name: str, where: str, environ: Mapping[str, str] | None = None,
                          home: str | None = None) -> dict[str, Any]:
    """The image server of the first lxc or incus CLI remote called `name` (image_remote_options)."""
    return find_cli_remote(name, where, environ, home, convert=image_remote_options)


def find_cli_remote(name: str, where: str, environ: Mapping[str, str] | None = None,
                    home: str | None = None, convert: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """The remote options of the first lxc or incus CLI remote called `name`
    (cli_config_dirs order); a name found nowhere is refused with the files that were read."""
    convert = convert or remote_options
    environ = os.environ if environ is None else environ
    configs = cli_config_dirs(environ, home or os.path.expanduser("~"))
    read: list[str] = []
    for config in configs:
        try:
            with open(config.path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OptionError(f"{where} '{name}': cannot read {config.path} ({exc.strerror}). Fix: make it "
                              "readable, or give the remote a url.") from None
        read.append(config.path)
        remotes = parse_cli_config(text, config.path)
        if name in remotes:
            entry = remotes[name]
            if not isinstance(entry, Mapping):
                raise OptionError(f"{where} '{name}': its entry in {config.path} is not a mapping. Fix: repair it.")
            return convert(name, entry, config, where)
    absent = [config.path for config in configs if config.path not in read]
    raise OptionError(
        f"{where} '{name}': no url is given and no lxc or incus remote is named '{name}' (read: "
        f"{', '.join(read) or 'none'}; absent: {', '.join(absent) or 'none'}). Fix: give the remote a url "
        f"(and client_cert, client_key), add it to a CLI ('lxc remote add {name} URL', "
        f"'incus remote add {name} URL'), or point LXD_CONF or INCUS_CONF at the config that has it.")
