"""LXD clusters: member status, placement targets, and instances on members the cluster cannot reach.

A cluster answers on any member's address and forwards each request to the member that hosts the
instance, so the rest of mage_lxd has no cluster code path; only these three questions differ.
When a member's daemon is down, LXD still lists its instances, with status "Error"; the member
itself turns "Offline" only after the heartbeat misses it (cluster.offline_threshold, 20 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import MageLxdError, OptionError, RemoteError
from .lxd_api import LxdApi


def member_statuses(api: LxdApi) -> dict[str, str]:
    """{member name: status in lower case} ("online", "offline", "evacuated", ...); {} off a cluster."""
    if not api.clustered:
        return {}
    members = api.get("cluster/members", {"recursion": "1"}) or []
    return {str(member["server_name"]): str(member.get("status") or "unknown").lower() for member in members}


def member_name(location: str) -> str:
    """The cluster member an instance's `location` names; "" off a cluster, where LXD says "none"."""
    return "" if location == "none" else location


def unreachable(instance: Mapping[str, Any]) -> bool:
    """True when LXD lists the instance but cannot read its state (its member is down)."""
    return str(instance.get("status")) == "Error" and bool(instance.get("location"))


def listed_instance(api: LxdApi, name: str) -> Mapping[str, Any]:
    """The instance as the cluster database lists it; {} if absent or unreadable.

    GET /instances/NAME is forwarded to the instance's member and fails when that member is down;
    the (filtered) list is answered from the database and marks such an instance "Error".
    """
    try:
        found = api.get("instances", {"recursion": "1", "filter": f"name eq {name}"}) or []
    except MageLxdError:
        return {}
    return next((item for item in found if item.get("name") == name), {})


def check_reachable(api: LxdApi, instance: Mapping[str, Any], where: str) -> None:
    """Fail before any change, naming the member, when the instance's cluster member is unreachable."""
    if not api.clustered or not unreachable(instance):
        return
    member = str(instance["location"])
    try:
        status = str((api.get(f"cluster/members/{member}") or {}).get("status") or "unknown").lower()
    except MageLxdError:
        status = "unknown"
    raise RemoteError(
        f"is on cluster member '{member}' (member status: {status}), and {api.kind.title} cannot reach it "
        "there (instance status: Error). Nothing was changed.", where=where, sep=" ",
        fix=f"start {api.kind.title} on '{member}'; if that member is gone for good, remove it "
        f"({api.kind.cli} cluster remove --force {member}) and recreate the instance elsewhere."
    )


def check_target(api: LxdApi, target: str, where: str) -> None:
    """A placement target needs a cluster, and `@group` needs a server with cluster groups."""
    if not target:
        return
    if not api.clustered:
        raise OptionError(
            f"{where}: target '{target}' places instances on cluster members, but "
            f"{api.describe()} is not a cluster. Fix: leave target out."
        )
    if target.startswith("@") and not api.has_extension("clustering_groups"):
        raise OptionError(
            f"{where}: target '{target}' is a cluster group, and {api.describe()} has no cluster "
            "groups (API extension clustering_groups). Fix: name a member instead."
        )
    if not target.startswith("@") and target not in member_statuses(api):
        # Before any change: a misspelt member would otherwise fail only when LXD is asked to create.
        raise OptionError(str(placement_error(api, target, where, RemoteError("no such cluster member"))))


def placement_error(api: LxdApi, target: str, where: str, error: RemoteError) -> RemoteError:
    """The error for a failed creation on `target`, naming the member or group and what exists."""
    try:
        known = sorted(member_statuses(api).items())
    except MageLxdError:
        known = []
    members = ", ".join(f"{name} ({status})" for name, status in known) or "unknown"
    kind = "cluster group" if target.startswith("@") else "cluster member"
    return RemoteError(f"{where}: placing it on {kind} '{target.lstrip('@')}' failed: {error}. Members: {members}")
