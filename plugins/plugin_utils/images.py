"""Image sources as the lxc and incus clients name them, resolved to a fingerprint before any write.

`parse_image` (pure) reads what a declaration says: a local alias (`mage/debian-12`), the seed's
shorthand (`debian/12/amd64`: a local alias, else that alias on the default image server), a
client's `REMOTE:ALIAS` (`images:debian/12`, `ubuntu:24.04`, `local:web`, or a remote of the user's
lxc/incus config.yml) or `{alias, server, protocol, server_cert}`.

`server_for` names the server a source means on a given server kind: `images:` is LXD's
https://images.lxd.canonical.com on LXD and https://images.linuxcontainers.org on Incus (which no
longer serves LXD), `ubuntu:` is Canonical's https://cloud-images.ubuntu.com/releases (LXD images
only). `ImageResolver` then finds the alias on that server while the batch is planned - the
simplestreams index (streams/v1/index.json and the products files it names) or the LXD/Incus
image API (`GET /1.0/images/aliases/NAME`, public images) - TLS checked against the controller's
CA store, or a pinned `server_cert`. Each index (each alias of an image API) is read once per batch. The alias rules are the
servers' own (shared/simplestreams in LXD and Incus): an alias `A` of a product names its image of
the server's native architecture, `A/ARCH` the image of that architecture; the newest serial wins.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

from .errors import OptionError, first_line
from .transport import check_pinned_sha256, pinned_sha256

# LXD's own names for the remotes its client comes with; on Incus only `images` exists there.
LXD_IMAGES = "https://images.lxd.canonical.com"
INCUS_IMAGES = "https://images.linuxcontainers.org"
UBUNTU_REMOTES = {
    "ubuntu": "https://cloud-images.ubuntu.com/releases",
    "ubuntu-daily": "https://cloud-images.ubuntu.com/daily",
    "ubuntu-minimal": "https://cloud-images.ubuntu.com/minimal/releases",
    "ubuntu-minimal-daily": "https://cloud-images.ubuntu.com/minimal/daily",
}
# What a source's protocol may be called; `incus` is the same image API as `lxd`.
PROTOCOLS = ("simplestreams", "lxd", "incus")
# A bare remote name as the clients write one (`images`, `my-server`).
_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:+-]{0,255}")
_FINGERPRINT = re.compile(r"[0-9a-f]{12,64}")
# Simplestreams architecture names and the kernel's (LXD's) names for them.
ARCHITECTURES = {"amd64": "x86_64", "i386": "i686", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv6l",
                 "ppc64el": "ppc64le", "ppc": "ppc", "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
                 "loongarch64": "loongarch64", "mips64el": "mips64"}
ROOT_FILES = {"squashfs": "combined_squashfs_sha256", "root.tar.xz": "combined_rootxz_sha256",
              "disk-kvm.img": "combined_disk-kvm-img_sha256", "disk1.img": "combined_disk1-img_sha256",
              "uefi1.img": "combined_uefi1-img_sha256"}
VM_FILES = ("disk-kvm.img", "disk1.img", "uefi1.img")
ROOT_PREFERENCE = ("squashfs", "root.tar.xz", "disk-kvm.img", "uefi1.img", "disk1.img")
# An index bigger than this is not an image server's (images.linuxcontainers.org's is about 10 MB).
MAX_INDEX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ImageSource:
    """Where an instance's image comes from, as declared.

    `server` (a URL) or `remote` (a name resolved per server kind and the CLI config) names an image
    server; with neither, the alias is local. `local_first`: a local alias of that name wins (the
    seed's shorthand and bare aliases)."""

    alias: str
    server: str = ""
    protocol: str = "simplestreams"
    remote: str = ""
    server_cert: str = ""
    local_first: bool = False

    @property
    def is_remote(self) -> bool:
        """True when an image server is named (the alias may still be local first)."""
        return bool(self.server or self.remote)

    def describe(self) -> str:
        """The image as messages name it."""
        if self.remote and not self.server:
            return f"'{self.remote}:{self.alias}'"
        return f"'{self.alias}'" + (f" on {self.server} ({self.protocol})" if self.server else " (local)")


@dataclass(frozen=True)
class ImageServer:
    """One image server: its URL, protocol (simplestreams or lxd) and pinned certificate, if any."""

    url: str
    protocol: str = "simplestreams"
    server_cert: str = ""

    def describe(self) -> str:
        """The server as messages name it."""
        return f"{self.url} ({self.protocol})"


@dataclass(frozen=True)
class RemoteImage:
    """An alias resolved on its server: the image LXD will download (or already has)."""

    alias: str
    fingerprint: str
    server: ImageServer
    size: int = 0
    description: str = ""


def parse_image(value: Any, image_server: str | None, where: str) -> ImageSource | None:
    """What a declaration's `image` says, with the task's `image_server` (None: the server kind's
    default, '': local aliases only, a URL, or a remote name). Pure; names are resolved later."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - {"alias", "server", "protocol", "server_cert"})
        if unknown:
            raise OptionError(f"{where}: image has unknown key(s) {', '.join(unknown)}. Fix: use alias, server, "
                              "protocol and server_cert (image: {alias: debian/12, server: https://..., "
                              "protocol: simplestreams}).")
        alias = _alias(value.get("alias"), where)
        protocol = str(value.get("protocol") or "simplestreams")
        if protocol not in PROTOCOLS:
            raise OptionError(f"{where}: image.protocol '{protocol}' is not one of {', '.join(PROTOCOLS)}. Fix: "
                              "simplestreams for an image index, lxd (or incus) for an LXD or Incus server.")
        server = str(value.get("server") or "")
        cert = os.path.expanduser(str(value.get("server_cert") or ""))
        if server and not _https_url(server):
            raise OptionError(f"{where}: image.server '{server}' is not an https:// URL with a host. Fix: give the "
                              "image server's URL (https://images.example.org), or leave server out for a local alias.")
        if cert and not server:
            raise OptionError(f"{where}: image.server_cert needs image.server. Fix: give the server's URL.")
        return ImageSource(alias=alias, server=server, protocol=_protocol(protocol), server_cert=cert)
    if not isinstance(value, str):
        raise OptionError(f"{where}: image is a {type(value).__name__}, not an alias. Fix: quote it, and write an "
                          "alias (debian/12), REMOTE:ALIAS (images:debian/12) or {alias, server, protocol}.")
    if value.startswith(("https://", "http://")):
        raise OptionError(f"{where}: image '{value}' is a URL. Fix: write image: {{alias: ALIAS, server: URL}}.")
    remote, colon, alias = value.partition(":")
    if colon and _REMOTE_NAME.fullmatch(remote) and "/" not in remote:
        alias = _alias(alias, where)
        # `local:` is the client's name for the server itself.
        return ImageSource(alias=alias) if remote == "local" else ImageSource(alias=alias, remote=remote)
    alias = _alias(value, where)
    if image_server is None:
        return ImageSource(alias=alias, remote="images", local_first=True)
    text = str(image_server).strip()
    if not text:
        return ImageSource(alias=alias)
    if text.startswith("https://"):
        if not _https_url(text):
            raise OptionError(f"{where}: image_server '{text}' has no host. Fix: give an https:// URL, a remote "
                              "name (images, ubuntu), or '' for local aliases only.")
        return ImageSource(alias=alias, server=text, local_first=True)
    name = text.removesuffix(":")
    if not _REMOTE_NAME.fullmatch(name):
        raise OptionError(f"{where}: image_server '{text}' is neither an https:// URL nor a remote name. Fix: give "
                          "an https:// URL, a remote name (images, ubuntu), or '' for local aliases only.")
    return ImageSource(alias=alias, remote=name, local_first=True)


def server_for(source: ImageSource, kind: str, where: str,
               cli_remote: Callable[[str, str], Mapping[str, Any]] | None = None) -> ImageServer:
    """The image server `source` names on a server of `kind` ('lxd' or 'incus'). A remote other
    than images/ubuntu* is looked up with `cli_remote(name, where)` (the user's lxc/incus config)."""
    if source.server:
        return ImageServer(source.server, source.protocol, source.server_cert)
    name = source.remote
    if name == "images":
        return ImageServer(INCUS_IMAGES if kind == "incus" else LXD_IMAGES)
    if name in UBUNTU_REMOTES:
        if kind == "incus":
            raise OptionError(
                f"{where}: image {source.describe()}: '{name}:' is LXD's remote for Canonical's Ubuntu images, "
                "which serve LXD only. Fix: on Incus use images:ubuntu/RELEASE (for example images:ubuntu/24.04).")
        return ImageServer(UBUNTU_REMOTES[name])
    if cli_remote is None:
        raise OptionError(f"{where}: image {source.describe()}: no image remote is named '{name}'. Fix: use images:, "
                          "ubuntu: or a remote of your lxc/incus client, or give image: {alias, server}.")
    options = cli_remote(name, where)
    return ImageServer(str(options["url"]), _protocol(str(options.get("protocol") or "lxd")),
                       str(options.get("server_cert") or ""))


def protocol_for(kind: str, protocol: str) -> str:
    """How the server of `kind` names the image API protocol in an instance source."""
    if protocol == "simplestreams":
        return protocol
    return "incus" if kind == "incus" else "lxd"


def simplestreams_images(index: Mapping[str, Any], products: Mapping[str, Mapping[str, Any]], kind: str,
                         ) -> list[dict[str, Any]]:
    """The images a simplestreams index offers a server of `kind`, as LXD and Incus read it:
    dicts of fingerprint, type, architecture (the kernel's name), properties, aliases, size.
    `products` maps each products file path the index names to its JSON."""
    prefix = "incus" if kind == "incus" else "lxd"
    images = []
    for entry in (index.get("index") or {}).values():
        if not isinstance(entry, Mapping) or entry.get("datatype") != "image-downloads" or not entry.get("products"):
            continue
        for product in ((products.get(str(entry.get("path"))) or {}).get("products") or {}).values():
            images += _product_images(product, prefix)
    return images


def _product_images(product: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    architecture = ARCHITECTURES.get(str(product.get("arch")), "")
    if not architecture and str(product.get("arch")) in ARCHITECTURES.values():
        architecture = str(product.get("arch"))
    if not architecture:
        return []
    found = []
    for serial, version in (product.get("versions") or {}).items():
        if len(serial) < 8 or not serial[:8].isdigit():
            continue
        items = [item for item in ((version or {}).get("items") or {}).values() if isinstance(item, Mapping)]
        for item in items:
            if item.get("ftype") == f"{prefix}_combined.tar.gz" and item.get("sha256"):
                found.append(_image(product, architecture, serial, str(item["sha256"]), "tar.gz",
                                    int(item.get("size") or 0)))
            if item.get("ftype") == f"{prefix}.tar.xz":
                for root in items:
                    fingerprint = _root_fingerprint(item, root)
                    if fingerprint:
                        found.append(_image(product, architecture, serial, fingerprint, str(root["ftype"]),
                                            int(item.get("size") or 0) + int(root.get("size") or 0)))
    return found


def _root_fingerprint(meta: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    ftype = str(root.get("ftype"))
    if ftype not in ROOT_FILES:
        return ""
    if ftype == "root.tar.xz":
        return str(meta.get("combined_rootxz_sha256") or meta.get("combined_sha256") or "")
    return str(meta.get(ROOT_FILES[ftype]) or "")


def _image(product: Mapping[str, Any], architecture: str, serial: str, fingerprint: str, ftype: str,
           size: int) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint, "architecture": architecture, "size": size,
        "type": "virtual-machine" if ftype in VM_FILES else "container",
        "properties": {"os": str(product.get("os") or ""), "release": str(product.get("release") or ""),
                       "variant": str(product.get("variant") or ""), "serial": serial,
                       "architecture": str(product.get("arch") or ""), "type": ftype},
        "description": f"{product.get('os', '')} {product.get('release_title', '')} {product.get('arch', '')} "
                       f"({serial})",
        "aliases": [name for name in str(product.get("aliases") or "").split(",") if name],
    }


def find_alias(images: list[dict[str, Any]], name: str, instance_type: str, architectures: list[str],
               strip_prefix: str = "") -> dict[str, Any] | None:
    """The image alias `name` names for an instance of `instance_type` on a server whose
    architectures are `architectures` (native first), by the servers' own rules; else the image
    whose fingerprint starts with `name`. None: the server has no such image."""
    ordered = sorted(images, key=_preference)
    # (alias, type, architecture) -> the first (preferred) image; 'A' only for the native one.
    aliases: dict[tuple[str, str, str], dict[str, Any]] = {}
    for image in ordered:
        for alias in image["aliases"]:
            short = alias.removeprefix(strip_prefix) if strip_prefix else alias
            medium = f"{short}/{image['properties']['architecture']}"
            for entry in (short, medium):
                aliases.setdefault((entry, image["type"], image["architecture"]), image)
    # Native first, then the personalities the server runs (i686 on x86_64); others cannot run there.
    rank = {arch: index for index, arch in enumerate(architectures)}
    matches = sorted(((rank[arch], image) for (alias, kind, arch), image in aliases.items()
                      if alias == name and kind == instance_type and arch in rank), key=lambda pair: pair[0])
    if matches:
        return matches[0][1]
    if _FINGERPRINT.fullmatch(name):
        prefixed = [image for image in images if image["fingerprint"].startswith(name)
                    and image["type"] == instance_type]
        if len({image["fingerprint"] for image in prefixed}) == 1:
            return prefixed[0]
    return None


def _preference(image: Mapping[str, Any]) -> tuple[Any, ...]:
    # os, release, variant ascending, serial newest first, architecture, then the root file type.
    props = image["properties"]
    serial = props.get("serial", "")
    newest_first = tuple(-ord(char) for char in serial)
    ftype = props.get("type", "")
    score = ROOT_PREFERENCE.index(ftype) if ftype in ROOT_PREFERENCE else 0
    return (props.get("os", ""), props.get("release", ""), props.get("variant", ""), newest_first,
            props.get("architecture", ""), score)


# (URL, its server) -> the decoded JSON answer; raises FileNotFoundError (404), OSError, ssl.SSLError or ValueError.
Fetch = Callable[[str, ImageServer], Any]


@dataclass
class ImageResolver:
    """Resolves aliases on image servers for one batch: each server's index, and each alias an
    LXD/Incus image server is asked for, is read once (threads share it; a failure too), and every
    failure is an OptionError naming the instance, the alias and the server."""

    kind: str
    architectures: list[str]
    fetch: Fetch | None = None
    timeout: float = 10.0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _server_locks: dict[ImageServer, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    # What was read once for the batch (_once): (server,) -> a simplestreams catalog, (server, alias,
    # instance type) -> what an LXD/Incus image API answered for it; a failure is kept as it is.
    _read: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False)

    def resolve(self, server: ImageServer, alias: str, instance_type: str, where: str) -> RemoteImage:
        """The image `alias` names on `server` for an instance of `instance_type`."""
        label = f"{where}: image '{alias}' on {server.describe()}"
        try:
            if server.protocol == "simplestreams":
                return self._resolve_streams(server, alias, instance_type)
            return self._resolve_api(server, alias, instance_type)
        except _ServerError as exc:
            raise OptionError(f"{label}: {exc}") from None

    def _resolve_streams(self, server: ImageServer, alias: str, instance_type: str) -> RemoteImage:
        images = self._catalog(server)
        strip = "ubuntu/" if self.kind == "lxd" and server.url.startswith("https://cloud-images.ubuntu.com") else ""
        image = find_alias(images, alias, instance_type, self.architectures, strip)
        if image is None:
            known = sorted({name for item in images if item["type"] == instance_type
                            and item["architecture"] in self.architectures for name in item["aliases"]})
            raise _ServerError(
                f"the server has no such {instance_type} image for {'/'.join(self.architectures) or 'this host'} "
                f"({_sample(known)}). Fix: correct the alias; the server's own list names them "
                f"('{'incus' if self.kind == 'incus' else 'lxc'} image list REMOTE:').")
        return RemoteImage(alias, image["fingerprint"], server, image["size"], image["description"])

    def _resolve_api(self, server: ImageServer, alias: str, instance_type: str) -> RemoteImage:
        # One look per (server, alias, type) for the batch, shared by its instances, as an index is.
        return self._once(server, (server, alias, instance_type), lambda: self._look_up_api(server, alias, instance_type))

    def _look_up_api(self, server: ImageServer, alias: str, instance_type: str) -> RemoteImage:
        base = server.url.rstrip("/") + "/1.0/images"
        answer = self._get(f"{base}/aliases/{quote(alias, safe='')}", server, missing_ok=True)
        target = ""
        if answer is not None:
            metadata = answer.get("metadata") or {}
            if str(metadata.get("type") or "container") == instance_type:
                target = str(metadata.get("target") or "")
        if not target and _FINGERPRINT.fullmatch(alias):
            image = self._get(f"{base}/{alias}", server, missing_ok=True)
            if image is not None and str((image.get("metadata") or {}).get("type") or "container") == instance_type:
                target = str((image.get("metadata") or {}).get("fingerprint") or "")
        if not target:
            raise _ServerError(f"the server has no public {instance_type} image of that alias. Fix: correct the "
                               "alias, or make the image public on that server.")
        return RemoteImage(alias, target, server)

    def _catalog(self, server: ImageServer) -> list[dict[str, Any]]:
        return self._once(server, (server,), lambda: self._read_streams(server))

    def _once(self, server: ImageServer, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        """What `read` gives for `key`, read once for the batch under `server`'s lock (threads share
        it). A failure is kept too: every instance of the batch is refused for it, once read."""
        with self._lock:
            lock = self._server_locks.setdefault(server, threading.Lock())
        with lock:
            if key not in self._read:
                try:
                    self._read[key] = read()
                except _ServerError as exc:
                    self._read[key] = exc
            found = self._read[key]
        if isinstance(found, _ServerError):
            raise found
        return found

    def _read_streams(self, server: ImageServer) -> list[dict[str, Any]]:
        base = server.url.rstrip("/")
        index = self._get(f"{base}/streams/v1/index.json", server)
        if not isinstance(index, Mapping) or not isinstance(index.get("index"), Mapping):
            raise _ServerError(f"{base}/streams/v1/index.json is not a simplestreams index. Fix: check the URL and "
                               "protocol (simplestreams, or lxd for an LXD or Incus server).")
        products = {}
        for entry in index["index"].values():
            if isinstance(entry, Mapping) and entry.get("datatype") == "image-downloads" and entry.get("products"):
                path = str(entry.get("path") or "")
                products[path] = self._get(f"{base}/{path.lstrip('/')}", server)
        return simplestreams_images(index, products, self.kind)

    def _get(self, url: str, server: ImageServer, missing_ok: bool = False) -> Any:
        fetch = self.fetch or (lambda address, where: fetch_json(address, where, self.timeout))
        try:
            return fetch(url, server)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise _ServerError(f"{url} is not there (HTTP 404). Fix: check the server's URL and protocol "
                               "(simplestreams, or lxd for an LXD or Incus server).") from None
        except ssl.SSLError as exc:
            hint = (f"'{server.server_cert}' is not this server's certificate; fetch the right one" if server.server_cert
                    else "add the server's CA to the CA store of the controller and of the LXD host "
                    "(update-ca-certificates), or pin its certificate with image.server_cert")
            raise _ServerError(f"TLS verification failed ({first_line(exc)}). Fix: {hint}.") from None
        except (OSError, ValueError) as exc:
            raise _ServerError(f"the server cannot be read ({first_line(exc)}). Fix: check the URL and that the "
                               "controller reaches it, or set image_server: '' for local aliases only.") from None


class _ServerError(Exception):
    """Why an image server cannot answer for an alias (the caller names the instance)."""


def _sample(names: list[str]) -> str:
    if not names:
        return "it lists none for this instance type and architecture"
    shown = ", ".join(names[:8])
    return f"it has {shown}{', ...' if len(names) > 8 else ''}"


def _alias(value: Any, where: str) -> str:
    text = "" if value is None else str(value)
    if not _ALIAS.fullmatch(text):
        raise OptionError(f"{where}: image alias '{text}' is not an image alias (letters, digits and '-_./:+', "
                          "starting with a letter or digit). Fix: write it as the server lists it (debian/12).")
    return text


def _https_url(text: str) -> bool:
    parsed = urlparse(text)
    return parsed.scheme == "https" and bool(parsed.hostname)


def _protocol(name: str) -> str:
    return "lxd" if name == "incus" else name


def tls_context(server: ImageServer) -> ssl.SSLContext:
    """The controller's CA store, or (with server_cert) only that certificate, checked by fingerprint."""
    if server.server_cert:
        pinned_sha256(server.server_cert)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context()


def fetch_json(url: str, server: ImageServer, timeout: float) -> Any:
    """GET `url` over HTTPS (verified) and decode its JSON; 404 is FileNotFoundError."""
    import http.client

    parsed = urlparse(url)
    connection = http.client.HTTPSConnection(parsed.hostname or "", parsed.port or 443, timeout=timeout,
                                             context=tls_context(server))
    try:
        connection.connect()
        if server.server_cert:
            check_pinned_sha256(server.server_cert, connection.sock.getpeercert(binary_form=True))
        connection.request("GET", parsed.path + (f"?{parsed.query}" if parsed.query else ""),
                           headers={"User-Agent": "mage-lxd", "Accept": "application/json"})
        response = connection.getresponse()
        if response.status == 404:
            raise FileNotFoundError(url)
        if response.status != 200:
            raise OSError(f"HTTP {response.status} {response.reason} for {url}")
        body = response.read(MAX_INDEX_BYTES + 1)
        if len(body) > MAX_INDEX_BYTES:
            raise ValueError(f"{url} is larger than {MAX_INDEX_BYTES} bytes")
        return json.loads(body)
    except http.client.HTTPException as exc:
        raise OSError(str(exc) or type(exc).__name__) from exc
    finally:
        connection.close()


def certificate_text(path: str, where: str) -> str:
    """The PEM text of a pinned server_cert, for LXD's own check of the image server."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"{where}: image.server_cert '{path}' cannot be read ({exc}). Fix: give the image "
                          "server's PEM certificate.") from None
