"""Checks of a whole batch's plan against what can be known without writing anything.

Each returns the refusals (or warnings) it finds as messages naming the instance and the option;
the batch is applied only when no check refused it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from mage_lxd.errors import MageLxdError, OptionError, RemoteError
from mage_lxd.instance_spec import InstanceSpec
from mage_lxd.nat import BACKENDS, PROXY_DEVICE_PREFIX
from mage_lxd.provision import PROXY_KEY, InstancePlan, describe
from mage_lxd.remote import LxdApi
from mage_lxd.routes import plan_sites

# LXD's spellings of true (shared.IsTrue).
_LXD_TRUE = ("true", "1", "yes", "on")


def unsafe_settings(where: str, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Settings that weaken the isolation between an instance and its host, each with why."""
    found = []
    for key, value in sorted(config.items()):
        enabled = str(value).strip().lower() in _LXD_TRUE
        if key == "security.privileged" and enabled:
            found.append(f"{where}: config security.privileged=true runs it as the host's root (no user namespace)")
        elif key == "security.nesting" and enabled:
            found.append(f"{where}: config security.nesting=true lets it run containers of its own, with looser confinement")
        elif key.startswith("raw."):
            found.append(f"{where}: config {key} passes settings straight to LXC or QEMU, around LXD's checks")
    for name, device in sorted(devices.items()):
        if device.get("type") == "disk" and device.get("source") and os.path.normpath(device["source"]) == "/":
            found.append(f"{where}: device {name} mounts the host's / into it")
    return found


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
                found.append((str(instance["name"]), json.loads(raw)))
            except ValueError:
                continue  # not ours to judge here: the proxy play names a malformed record
    return found


def route_refusals(declared: list[tuple[str, Any]], existing: list[tuple[str, Any]]) -> list[str]:
    """Declared routes that clash with each other, or with routes other instances of the same
    project already publish (the proxy's own rule, including balance). A record someone else wrote
    that does not validate is left for the proxy play to warn about."""
    hosts = [{"name": name, "routes": routes} for name, routes in declared]
    for name, routes in existing:
        try:
            plan_sites([{"name": name, "routes": routes}])
        except OptionError:
            continue
        hosts.append({"name": name, "routes": routes})
    try:
        plan_sites(hosts)
    except OptionError as exc:
        return [str(exc)]
    return []


def host_port_refusals(plans: Iterable[InstancePlan]) -> list[str]:
    """Proxy-device ports that something on this host already listens on (or addresses it lacks).

    Only meaningful when LXD runs on this machine (its local socket): the caller decides."""
    refusals = []
    for plan in plans:
        spec = plan.spec
        if spec.state == "absent":
            continue
        devices = (plan.facts.current or {}).get("devices") or {}
        for rule in spec.nat:
            if not BACKENDS[rule.backend].binds_on_host or (rule.listen_by_member and rule.key not in plan.facts.listen):
                continue
            address = plan.facts.listen.get(rule.key, "0.0.0.0")
            listen = f"{rule.proto}:{address}:{rule.extport}"
            if devices.get(f"{PROXY_DEVICE_PREFIX}{rule.key}", {}).get("listen") == listen:
                continue  # already published by this very instance
            problem = _port_problem(rule.proto, address, rule.extport)
            if problem:
                refusals.append(f"{describe(spec)}: nat {rule.key}: {address}:{rule.extport} {problem}. Fix: choose "
                                "another extport or listen address, or stop what holds it.")
    return refusals


def _port_problem(proto: str, address: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
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


def config_refusals(api: LxdApi, project: str, plans: Iterable[InstancePlan]) -> list[str]:
    """Declared config LXD itself refuses (unknown keys, values such as limits.memory: lots), found
    without touching any instance: LXD 5.0 publishes no config schema, so each config about to be
    written is offered to LXD as a scratch profile, which is deleted at once. A refusal is narrowed
    down to the key, so the message names the instance and the key in LXD's words."""
    refusals = []
    for plan in plans:
        config = dict(plan.spec.config)
        if not config or (plan.create is None and plan.update is None):
            continue
        problem = _refused_by_lxd(api, project, config)
        if problem:
            keys = [key for key in sorted(config) if _refused_by_lxd(api, project, {key: config[key]})]
            named = ", ".join(f"{key}={config[key]!r}" for key in keys) or ", ".join(sorted(config))
            refusals.append(f"{describe(plan.spec)}: config {named}: LXD refuses it ({problem}).")
    return refusals


def _refused_by_lxd(api: LxdApi, project: str, config: Mapping[str, str]) -> str:
    name = f"mage-check-{secrets.token_hex(4)}"
    try:
        api.post("profiles", {"name": name, "description": "mage-lxd: config check, deleted at once", "config": config},
                 {"project": project})
    except RemoteError as exc:
        text = str(exc)
        return text.split("failed: ", 1)[-1]
    try:
        api.delete(f"profiles/{name}", {"project": project})
    except MageLxdError:
        pass  # a scratch profile left behind changes no instance; the next check uses another name
    return ""
