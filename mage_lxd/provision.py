"""Converge one instance to its desired state: create, configure, start/stop, address, python, NAT.

`desired_definition()` is the pure part (what the instance's config, devices and profiles must be);
`converge()` reads LXD once, plans, and (unless in check mode) applies with as few writes as
possible, so a second identical run makes no write call at all.

Only what this plugin wrote is ever removed: the config keys and devices it set are listed in the
instance's own `user.mage.managed` key; `volatile.*` and keys set by others are left alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mage_lxd.bootstrap import find_python, install_python
from mage_lxd.channel import InstanceChannel
from mage_lxd.cluster import check_reachable, check_target, listed_instance, member_name, placement_error
from mage_lxd.errors import NotFoundError, OptionError, RemoteError
from mage_lxd.instance_spec import InstanceSpec, NatRule
from mage_lxd.nat import (
    apply_forwards,
    apply_iptables,
    check_iptables_rules,
    check_listen_by_member,
    owner_tag,
    proxy_devices,
    resolve_listen_addresses,
)
from mage_lxd.remote import LxdApi

MANAGED_KEY = "user.mage.managed"
NAT_KEY = "user.mage.nat"
PROXY_KEY = "user.mage.proxy"
OWN_DEVICE_PREFIX = "mage-"
STOP_TIMEOUT = 30
POLL_SECONDS = 0.25


@dataclass
class InstanceResult:
    """What converging one instance did (or would do, in check mode)."""

    name: str
    project: str
    changed: bool = False
    actions: list[str] = field(default_factory=list)
    status: str = ""
    location: str = ""
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    python: str = ""
    warnings: list[str] = field(default_factory=list)
    diff: dict[str, Any] = field(default_factory=lambda: {"before": {}, "after": {}})

    def did(self, action: str) -> None:
        """Record a change."""
        self.changed = True
        self.actions.append(action)

    @property
    def address(self) -> str:
        """The first IPv4 address, else the first IPv6 one."""
        return (self.ipv4 or self.ipv6 or [""])[0]

    def as_dict(self) -> dict[str, Any]:
        """The result as the task returns it for this instance."""
        data = asdict(self)
        data["address"] = self.address
        return data


def _json(value: Any) -> str:
    # Stable text, so an unchanged declaration never looks like a change.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def desired_definition(
    spec: InstanceSpec, current: Mapping[str, Any] | None, nat_devices: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """The config, devices and profiles the instance must have, keeping what others set."""
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    if current is not None:
        managed = json.loads((current.get("config") or {}).get(MANAGED_KEY) or "{}")
        for key, value in (current.get("config") or {}).items():
            if key not in managed.get("config", []) and not key.startswith("user.mage."):
                config[key] = value
        for name, device in (current.get("devices") or {}).items():
            if name not in managed.get("devices", []) and not name.startswith(OWN_DEVICE_PREFIX):
                devices[name] = dict(device)
    config.update(spec.config)
    user_devices = {name: dict(device) for name, device in spec.devices.items() if not name.startswith(OWN_DEVICE_PREFIX)}
    devices.update({name: dict(device) for name, device in spec.devices.items()})
    devices.update({name: dict(device) for name, device in nat_devices.items()})
    config[MANAGED_KEY] = _json({"config": sorted(spec.config), "devices": sorted(user_devices)})
    if spec.nat:
        config[NAT_KEY] = _json([nat_record(rule) for rule in spec.nat])
    if spec.proxy:
        config[PROXY_KEY] = _json(list(spec.proxy))
    if spec.profiles is not None:
        profiles = list(spec.profiles)
    elif current is not None:
        profiles = list(current.get("profiles") or [])
    else:
        profiles = ["default"]
    return {"config": config, "devices": devices, "profiles": profiles}


def nat_record(rule: NatRule) -> dict[str, Any]:
    """One NAT rule as recorded in the instance (user.mage.nat) for the inventory."""
    # As declared: per-member addresses as the `listen` mapping, and no empty field that would
    # make instances recorded before it existed look changed.
    record = asdict(rule)
    by_member = record.pop("listen_by_member")
    if by_member:
        record["listen"] = dict(by_member)
    return record


def visible(definition: Mapping[str, Any]) -> dict[str, Any]:
    """What diff mode shows: LXD's volatile bookkeeping left out."""
    return {
        "config": {k: v for k, v in sorted(definition.get("config", {}).items()) if not k.startswith("volatile.")},
        "devices": dict(sorted(definition.get("devices", {}).items())),
        "profiles": list(definition.get("profiles", [])),
    }


def converge(api: LxdApi, spec: InstanceSpec, check_mode: bool = False) -> InstanceResult:
    """Bring one instance to `spec`. Raises MageLxdError (naming the instance) on failure."""
    result = InstanceResult(name=spec.name, project=spec.project)
    where = f"instance '{spec.name}' in project '{spec.project}'"
    path = f"instances/{spec.name}"
    check_iptables_rules(api, spec.nat, where)
    tag = owner_tag(spec.project, spec.name)
    try:
        current, etag = _read(api, path)
    except RemoteError:
        # On a cluster the read fails when the instance's member is down: say so, naming it.
        if api.clustered:
            check_reachable(api, listed_instance(api, spec.name), where)
        raise
    if current is not None:
        check_reachable(api, current, where)
        result.location = member_name(str(current.get("location") or ""))
    # Where the instance is (or is asked to go) decides per-member NAT listen addresses.
    placed = result.location or ("" if spec.target.startswith("@") else spec.target)
    if spec.state == "absent":
        listen: dict[str, str] = {}
    else:
        check_listen_by_member(api, spec.nat, where, placed if current is None else None)
        listen = resolve_listen_addresses(api, spec.nat, where, placed)
    result.diff["before"] = visible(current) | {"state": _state(current)} if current else {"state": "absent"}

    if spec.state == "absent":
        result.diff["after"] = {"state": "absent"}
        if current is not None:
            result.did("deleted")
            if not check_mode:
                _delete(api, path, current)
        if current is not None and _may_have_published(current) and not check_mode:
            _apply_published(api, tag, [], "", listen, result)
        result.status = "absent"
        return result

    wanted = desired_definition(spec, current, proxy_devices(spec.nat, listen))
    if current is not None and spec.rebuild and _image_differs(api, spec, current):
        result.did("rebuilt (image changed)")
        if not check_mode:
            _delete(api, path, current)
        current = None
        wanted = desired_definition(spec, None, proxy_devices(spec.nat, listen))
    if current is None:
        check_target(api, spec.target, where)
        result.did("created")
        if check_mode:
            result.diff["after"] = visible(wanted) | {"state": _target_state(spec.state)}
            result.status = _target_state(spec.state)
            return result
        _create(api, spec, wanted, where)
        current, etag = _read(api, path)
        result.location = member_name(str((current or {}).get("location") or ""))
        if result.location != placed and any(rule.listen_by_member for rule in spec.nat):
            # LXD picked the member: now its per-member listen addresses are known.
            listen = resolve_listen_addresses(api, spec.nat, where, result.location)
            wanted = desired_definition(spec, current, proxy_devices(spec.nat, listen))
            _put_definition(api, path, current or {}, wanted, etag)
            current, etag = _read(api, path)
    else:
        _warn_if_elsewhere(spec, result)
        if _image_differs(api, spec, current):
            result.warnings.append(
                f"{where} was made from another image than the one local alias '{spec.image.alias}' points at "
                "now; it is kept as is (set rebuild: true to recreate it from the new image)"
            )
        if visible(wanted) != visible(current):
            result.did("reconfigured")
            if not check_mode:
                _put_definition(api, path, current, wanted, etag)
    assert current is not None
    result.diff["after"] = visible(wanted) | {"state": _target_state(spec.state)}

    status = _transition(api, path, spec.state, str(current.get("status")), check_mode, result)
    result.status = status.lower()
    if check_mode or status != "Running":
        return result
    if spec.wait_for_address != "none":
        _wait_for_address(api, path, spec, where, result)
    else:
        _read_addresses(api, path, result)
    channel = InstanceChannel(api, spec.name)
    if spec.bootstrap:
        result.python = find_python(channel)
        if not result.python:
            tool = install_python(channel)
            result.python = find_python(channel)
            result.did(f"installed python with {tool}")
    if spec.nat or _may_have_published(current):
        target = result.ipv4[0] if result.ipv4 else ""
        if not target and any(rule.backend in ("forward", "iptables") for rule in spec.nat):
            raise RemoteError(f"{where}: NAT backends forward and iptables need an IPv4 address, and it has none")
        _apply_published(api, tag, spec.nat, target, listen, result)
    return result


def preview_in_new_project(api: LxdApi, spec: InstanceSpec) -> InstanceResult:
    """Check mode for an instance whose project this run would create: it would be created.

    `api` acts in the default project, whose images a new project uses (features.images=false), so an
    unknown image is still refused here."""
    result = InstanceResult(name=spec.name, project=spec.project, status="absent")
    result.diff = {"before": {"state": "absent"}, "after": {"state": "absent"}}
    if spec.state == "absent":
        return result
    where = f"instance '{spec.name}' in project '{spec.project}'"
    _image_source(api, spec, where)
    listen = resolve_listen_addresses(api, spec.nat, where, "" if spec.target.startswith("@") else spec.target)
    wanted = desired_definition(spec, None, proxy_devices(spec.nat, listen))
    result.did("created")
    result.status = _target_state(spec.state)
    result.diff["after"] = visible(wanted) | {"state": result.status}
    return result


def _put_definition(api: LxdApi, path: str, current: Mapping[str, Any], wanted: Mapping[str, Any], etag: str) -> None:
    # PUT replaces the whole instance: what we do not manage is sent back as it was.
    body = {key: current.get(key) for key in ("architecture", "ephemeral", "stateful", "description")}
    api.put(path, body | dict(wanted), etag=etag)


def _delete(api: LxdApi, path: str, current: Mapping[str, Any]) -> None:
    # Deleting is final, so a clean shutdown would only add waiting.
    if current.get("status") != "Stopped":
        api.put(f"{path}/state", {"action": "stop", "force": True, "timeout": STOP_TIMEOUT})
    api.delete(path)


def _read(api: LxdApi, path: str) -> tuple[dict[str, Any] | None, str]:
    try:
        return api.get_with_etag(path)
    except NotFoundError:
        return None, ""


def _state(instance: Mapping[str, Any]) -> str:
    return {"Running": "started", "Stopped": "stopped", "Frozen": "frozen"}.get(str(instance.get("status")), "unknown")


def _target_state(state: str) -> str:
    return "started" if state == "restarted" else state


def _create(api: LxdApi, spec: InstanceSpec, wanted: Mapping[str, Any], where: str) -> None:
    source = _image_source(api, spec, where)
    body = {"name": spec.name, "type": spec.type, "source": source, "ephemeral": spec.ephemeral, **wanted}
    params = {"target": spec.target} if spec.target else None
    try:
        api.post("instances", body, params)
    except RemoteError as exc:
        if spec.target:
            raise placement_error(api, spec.target, where, exc) from exc
        if source.get("server") and ("image" in str(exc).lower() or "connect" in str(exc).lower()):
            raise RemoteError(
                f"{where}: image {spec.image.describe() if spec.image else ''} was not found: looked in the local "
                f"aliases of project '{spec.project}' on {api.describe()} and on "
                f"{source['server']} ({exc})"
            ) from exc
        raise


def _warn_if_elsewhere(spec: InstanceSpec, result: InstanceResult) -> None:
    # Moving an instance stops it and copies its storage: never a side effect of a declaration.
    if spec.target and not spec.target.startswith("@") and result.location and result.location != spec.target:
        result.warnings.append(
            f"instance '{spec.name}' in project '{spec.project}' is on cluster member '{result.location}', not on "
            f"target '{spec.target}'; it is left there (target only places new instances; lxc move moves one)"
        )


def _image_source(api: LxdApi, spec: InstanceSpec, where: str) -> dict[str, str]:
    image = spec.image
    if image is None:
        raise OptionError(f"{where} does not exist; give 'image' to create it")
    if _local_alias(api, image.alias):
        return {"type": "image", "alias": image.alias}
    if not image.server:
        raise OptionError(
            f"{where}: image '{image.alias}' is not a local alias in project '{spec.project}' on "
            f"{api.describe()}. Fix: import it, or give image: {{alias: ..., server: https://...}}"
        )
    return {"type": "image", "mode": "pull", "server": image.server, "protocol": image.protocol, "alias": image.alias}


def _local_alias(api: LxdApi, alias: str) -> dict[str, Any] | None:
    try:
        return api.get(f"images/aliases/{alias}")
    except NotFoundError:
        return None


def _image_differs(api: LxdApi, spec: InstanceSpec, current: Mapping[str, Any]) -> bool:
    # Only a local alias can be compared without reaching an image server.
    if spec.image is None:
        return False
    alias = _local_alias(api, spec.image.alias)
    base = (current.get("config") or {}).get("volatile.base_image", "")
    return bool(alias and base and alias.get("target") != base)


def _transition(api: LxdApi, path: str, state: str, status: str, check_mode: bool, result: InstanceResult) -> str:
    """Start/stop/restart/freeze as asked; return the status the instance ends in."""
    steps: list[tuple[str, dict[str, Any], str]] = []
    if state == "started":
        if status == "Frozen":
            steps.append(("unfrozen", {"action": "unfreeze"}, "Running"))
        elif status != "Running":
            steps.append(("started", {"action": "start"}, "Running"))
    elif state == "restarted":
        if status == "Frozen":
            steps.append(("unfrozen", {"action": "unfreeze"}, "Running"))
        action = "restart" if status in ("Running", "Frozen") else "start"
        steps.append(("restarted", {"action": action, "timeout": STOP_TIMEOUT}, "Running"))
    elif state == "stopped" and status != "Stopped":
        steps.append(("stopped", {"action": "stop", "timeout": STOP_TIMEOUT}, "Stopped"))
    elif state == "frozen" and status != "Frozen":
        if status != "Running":
            steps.append(("started", {"action": "start"}, "Running"))
        steps.append(("frozen", {"action": "freeze"}, "Frozen"))
    for label, body, after in steps:
        result.did(label)
        if not check_mode:
            try:
                api.put(f"{path}/state", body)
            except RemoteError:
                if body["action"] != "stop":
                    raise
                # A clean shutdown that did not finish in time: stop it for sure.
                api.put(f"{path}/state", {"action": "stop", "force": True})
        status = after
    return status


def _read_addresses(api: LxdApi, path: str, result: InstanceResult) -> dict[str, Any]:
    state = api.get(f"{path}/state") or {}
    result.ipv4, result.ipv6 = [], []
    for interface, network in sorted((state.get("network") or {}).items()):
        if interface == "lo":
            continue
        for address in network.get("addresses") or []:
            if address.get("scope") != "global":
                continue
            (result.ipv4 if address.get("family") == "inet" else result.ipv6).append(str(address["address"]))
    return state


def _wait_for_address(api: LxdApi, path: str, spec: InstanceSpec, where: str, result: InstanceResult) -> None:
    deadline = time.monotonic() + spec.address_timeout
    while True:
        state = _read_addresses(api, path, result)
        if (result.ipv4 if spec.wait_for_address == "inet" else result.ipv6):
            return
        if time.monotonic() >= deadline:
            raise RemoteError(
                f"{where} has no {'IPv4' if spec.wait_for_address == 'inet' else 'IPv6'} address after "
                f"{spec.address_timeout:g}s; it has: {_describe_addresses(state)}. Fix: check its network "
                "(a NIC on a network with DHCP, a DHCP client in the image), raise address_timeout, or set "
                "wait_for_address: none."
            )
        time.sleep(POLL_SECONDS)


def _describe_addresses(state: Mapping[str, Any]) -> str:
    parts = []
    for interface, network in sorted((state.get("network") or {}).items()):
        if interface == "lo":
            continue
        addresses = [f"{a['address']} ({a.get('scope')})" for a in network.get("addresses") or []]
        parts.append(f"{interface}: {', '.join(addresses) or 'no address'}")
    return "; ".join(parts) or "no network interface"


def _may_have_published(current: Mapping[str, Any]) -> bool:
    # A NAT record means forwards or iptables rules may still exist and need removing.
    return NAT_KEY in (current.get("config") or {})


def _apply_published(
    api: LxdApi, tag: str, rules: tuple[NatRule, ...] | list[NatRule], target: str, listen: dict[str, str],
    result: InstanceResult,
) -> None:
    if api.has_extension("network_forward") and apply_forwards(api, tag, rules, target, listen, result.location):
        result.did("network forwards updated")
    if not api.remote.is_https and apply_iptables(tag, rules, target):
        result.did("iptables rules updated")
