"""Checks of a whole batch's plan against what can be known without writing anything.

Each returns the refusals (or warnings) it finds as messages naming the instance and the option;
the batch is applied only when no check refused it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import MageLxdError, OptionError, RemoteError
from .instance_spec import InstanceSpec
from .lxd_api import LxdApi
from .nat import BACKENDS
from .provision import PROXY_KEY, InstancePlan, describe
from .proxy_plan import plan_proxy
from .records import decode_record
from .values import address_family, read_bool


def unsafe_settings(where: str, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Settings that weaken the isolation between an instance and its host, each with why."""
    found = []
    for key, value in sorted(config.items()):
        # Ansible's spellings of true include LXD's (a spelling only Ansible takes, LXD refuses as config).
        enabled = read_bool(value) is True
        if key == "security.privileged" and enabled:
            found.append(f"{where}: config security.privileged=true runs it as the host's root (no user namespace)")
        elif key == "security.nesting" and enabled:
            found.append(f"{where}: config security.nesting=true lets it run containers of its own, with looser confinement")
        elif key.startswith("raw."):
            found.append(f"{where}: config {key} passes settings straight to LXC or QEMU, around LXD's checks")
    for name, device in sorted(devices.items()):
        if device.get("type") == "disk" and _is_host_root(str(device.get("source") or "")):
            found.append(f"{where}: device {name} mounts the host's / into it")
    return found


def _is_host_root(source: str) -> bool:
    # "//", "/./" and /proc/<pid>/root all name the host's root as LXD resolves them.
    if not source.startswith("/"):
        return False
    path = os.path.normpath("/" + source.lstrip("/"))
    return path == "/" or re.fullmatch(r"/proc/[^/]+/root", path) is not None


def spec_unsafe_settings(spec: InstanceSpec) -> list[str]:
    """`unsafe_settings` for one declared instance (absent ones set nothing)."""
    if spec.state == "absent":
        return []
    return unsafe_settings(describe(spec), spec.config, spec.devices)


def existing_routes(api: LxdApi, project: str, leave_out: Iterable[str]) -> list[tuple[str, Any]]:
    """(instance, routes) each instance of `project` already publishes, but those in `leave_out`."""
    skipped = set(leave_out)
    found = []
    for instance in api.get("instances", {"recursion": "1", "project": project}) or []:
        raw = (instance.get("config") or {}).get(PROXY_KEY)
        if raw and instance["name"] not in skipped:
            try:
                found.append((str(instance["name"]), decode_record(raw)))
            except ValueError:  # not JSON, too long or too deep (records.RecordError)
                continue  # not ours to judge here: the proxy play names a malformed record
    return found


def route_check(declared: list[tuple[str, Any]], existing: list[tuple[str, Any]]) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for the routes of a batch: declared routes that clash with each other
    refuse it; a record another instance already holds never does (whoever may edit that instance
    wrote it). One that would clash with a declared route, or serve a path of a declared name, is
    warned about: mageproxy leaves that instance's routes out (the proxy's own rule)."""
    hosts = [{"name": name, "routes": routes} for name, routes in declared]
    try:
        plan_proxy(hosts)
    except OptionError as exc:
        return [str(exc)], []
    hosts += [{"name": name, "routes": routes} for name, routes in existing]
    try:
        plan = plan_proxy(hosts, strict=[name for name, _routes in declared])
    except (OptionError, RecursionError):
        return [], []  # a record alone cannot refuse the batch; the proxy play names it
    return [], plan.displaced


def host_port_refusals(plans: Iterable[InstancePlan]) -> list[str]:
    """Host ports LXD would bind for the batch (NAT proxy devices, declared proxy devices) that
    something on this host already listens on, or addresses the host lacks. Ports that proxy
    devices of this batch's instances hold now are left out: this very batch moves or drops them.

    Only meaningful when LXD runs on this machine (its local socket): the caller decides."""
    plans = list(plans)
    held = {(proto, port) for plan in plans for device in ((plan.facts.current or {}).get("devices") or {}).values()
            if device.get("type") == "proxy" for proto, _address, port in [_listen_port(device)]}
    refusals = []
    for plan in plans:
        if plan.spec.state == "absent":
            continue
        for what, listen in _host_listeners(plan):
            proto, address, port = listen
            if (proto, port) in held:
                continue
            problem = _port_problem(proto, address, port)
            if problem:
                refusals.append(f"{describe(plan.spec)}: {what}: {address}:{port} {problem}. Fix: choose another port "
                                "or listen address, or stop what holds it.")
    return refusals


def _host_listeners(plan: InstancePlan) -> list[tuple[str, tuple[str, str, int]]]:
    # (what declared it, (proto, address, port)) for every socket LXD would open on the host for it.
    found = []
    for rule in plan.spec.nat:
        if BACKENDS[rule.backend].binds_on_host and not (rule.listen_by_member and rule.key not in plan.facts.listen):
            found.append((f"nat {rule.key}", (rule.proto, plan.facts.listen.get(rule.key, "0.0.0.0"), rule.extport)))
    for name, device in sorted(plan.spec.devices.items()):
        listen = _listen_port(device) if device.get("type") == "proxy" and device.get("bind", "host") == "host" else None
        if listen and listen[2]:
            found.append((f"device {name}", listen))
    return found


def _listen_port(device: Mapping[str, str]) -> tuple[str, str, int]:
    # A proxy device's "tcp:ADDRESS:PORT" (the address may be [IPv6]); port 0 when unreadable.
    proto, _colon, rest = str(device.get("listen") or "").partition(":")
    address, _colon, port = rest.rpartition(":")
    return proto, address.strip("[]"), int(port) if port.isascii() and port.isdigit() else 0


def _port_problem(proto: str, address: str, port: int) -> str:
    family = address_family(address)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as probe:
        # As LXD's proxy device binds: a port in TIME_WAIT is free, a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "is already in use on this host"
            if exc.errno == errno.EADDRNOTAVAIL:
                return "is not an address of this host"
    return ""


Definition = tuple[str, Mapping[str, str], Mapping[str, Mapping[str, str]]]


def definition_refusals(api: LxdApi, project: str, definitions: Iterable[Definition]) -> list[str]:
    """Config and devices LXD itself refuses (unknown keys, limits.memory: lots, a NIC on a missing
    network), found without touching any instance or profile of the user's.

    LXD 5.0 publishes no config schema, so each (where, config, devices) about to be written is
    offered to LXD as a scratch profile, deleted at once. Best effort: LXD checks a profile as it
    checks any instance, so keys valid only for one instance type, or raw.lxc lines, are only judged
    when the instance is made. A refusal is narrowed down to the key or device it comes from. As it
    writes, the batch runs it last, only when every other check passed."""
    refusals = []
    for where, config, devices in definitions:
        # image.* keys describe an instance's image: LXD takes them on instances, never on profiles.
        config = {key: value for key, value in config.items() if not key.startswith("image.")}
        if not (config or devices):
            continue
        problem = _refused_by_lxd(api, project, config, devices)
        if problem:
            named = [f"config {key}={value!r}" for key, value in sorted(config.items())
                     if _refused_by_lxd(api, project, {key: value}, {})]
            named += [f"device {name}" for name, device in sorted(devices.items())
                      if _refused_by_lxd(api, project, {}, {name: device})]
            refusals.append(f"{where}: {', '.join(named) or 'its config and devices'}: LXD refuses it ({problem}).")
    return refusals


def instance_definitions(plans: Iterable[InstancePlan]) -> list[tuple[str, Mapping[str, str], Mapping[str, Mapping[str, str]]]]:
    """What each plan is about to write of the user's own config and devices."""
    return [(describe(plan.spec), plan.spec.config, plan.spec.devices) for plan in plans
            if plan.create is not None or plan.update is not None]


def _refused_by_lxd(api: LxdApi, project: str, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]]) -> str:
    name = f"mage-check-{secrets.token_hex(4)}"
    body = {"name": name, "description": "mage-lxd: config check, deleted at once", "config": dict(config),
            "devices": {key: dict(value) for key, value in devices.items()}}
    try:
        api.post("profiles", body, {"project": project})
    except RemoteError as exc:
        # LXD's own words when it answered; the whole message when it could not be asked.
        return exc.cause if exc.status not in (None, 404) else str(exc)
    try:
        api.delete(f"profiles/{name}", {"project": project})
    except MageLxdError:
        pass  # a scratch profile left behind changes no instance; the next check uses another name
    return ""
