#!/usr/bin/env python3
"""Copies of the lab's images for the lab's image servers, and the simplestreams index of them.

    image_streams.py copy SOURCE TARGET TAG
        TARGET is SOURCE with TAG written into its gzip header's timestamp: the same files, another
        sha256, so a pull from an image server is never satisfied by the local alias's image.
    image_streams.py index ROOT ARCH PRODUCT...
        PRODUCT is OS:RELEASE:ALIASES:FILE (ALIASES comma-separated, FILE under ROOT). Writes
        ROOT/streams/v1/index.json and ROOT/streams/v1/images.json, listing each file as LXD's
        (lxd_combined.tar.gz) and Incus's (incus_combined.tar.gz) unified image.

Run by lab/image_server.sh.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time


def copy(source: str, target: str, tag: int) -> None:
    """TARGET: SOURCE with gzip MTIME (bytes 4-7) set to TAG; written whole, then renamed."""
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    if data[:2] != b"\x1f\x8b":
        raise SystemExit(f"{source} is not gzip")
    data[4:8] = struct.pack("<I", tag)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(target + ".tmp", target)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def index(root: str, arch: str, products: list[str]) -> None:
    """Write the two simplestreams files for `products`."""
    entries = {}
    for spec in products:
        os_name, release, aliases, path = spec.split(":", 3)
        full = os.path.join(root, path)
        serial = time.strftime("%Y%m%d_%H:%M", time.gmtime(os.stat(full).st_mtime))
        item = {"path": path, "sha256": sha256(full), "size": os.stat(full).st_size}
        entries[f"{os_name}:{release}:{arch}:default"] = {
            "aliases": aliases, "arch": arch, "os": os_name, "release": release, "release_title": release,
            "variant": "default",
            "versions": {serial: {"items": {
                "lxd_combined.tar.gz": {"ftype": "lxd_combined.tar.gz", **item},
                "incus_combined.tar.gz": {"ftype": "incus_combined.tar.gz", **item},
            }}},
        }
    streams = os.path.join(root, "streams", "v1")
    os.makedirs(streams, exist_ok=True)
    images = {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
              "products": entries}
    stream = {"format": "index:1.0", "index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json", "format": "products:1.0",
        "products": sorted(entries)}}}
    for name, content in (("images.json", images), ("index.json", stream)):
        with open(os.path.join(streams, name + ".tmp"), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=1, sort_keys=True)
        os.replace(os.path.join(streams, name + ".tmp"), os.path.join(streams, name))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "copy":
        copy(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "index":
        index(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
