"""LXD or its fork Incus: what differs between the two servers, and which one answered.

Both serve the same /1.0 API; a `ServerKind` holds the few parts that differ (how messages name
it, its command line client, its state directory, its files API headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerKind:
    """LXD or its fork Incus: both serve the same /1.0 API; these are the parts that differ."""

    title: str  # how messages name the server
    cli: str  # the command line client a Fix hint tells the user to run
    state_dir: str  # where the server keeps its socket and server.crt
    # Prefix of the files API headers (type, mode, uid, gid, write). Incus answers with X-Incus-*
    # only, and since 7.2 reads only X-Incus-* (lxc/incus commit ba407ebf09b8 "shared/api: Remove
    # legacy logic" dropped its X-LXD-* fallback): sent X-LXD-* headers would be ignored there.
    file_header_prefix: str


LXD = ServerKind(title="LXD", cli="lxc", state_dir="/var/lib/lxd", file_header_prefix="X-LXD-")
INCUS = ServerKind(title="Incus", cli="incus", state_dir="/var/lib/incus", file_header_prefix="X-Incus-")


def server_kind(host_info: Mapping[str, Any]) -> ServerKind:
    """The server kind `GET /1.0` announces (`environment.server` is 'incus' on Incus, else LXD)."""
    server = host_info.get("environment", {}).get("server")
    if server:
        return INCUS if server == "incus" else LXD
    # An untrusted client gets no `environment`; Incus's extension list still tells (its guest API
    # is dev_incus where LXD's is devlxd), so its Fix hints name incus to a client it refused.
    return INCUS if "dev_incus_events" in host_info.get("api_extensions", []) else LXD
