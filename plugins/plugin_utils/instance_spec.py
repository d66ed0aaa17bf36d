"""The desired state of one instance, validated before anything is changed.

Accepts the task's options and the seed's `lxd_provisioning_inventory` entries (`name`, `image`,
`nat`, `proxy`) alike. Every refusal names the instance and the option, and says how to fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError
from .images import ImageSource, parse_image
from .nat import BACKENDS, DEFAULT_BACKEND, NatRule
from .routes import parse_route
from .values import INSTANCE_TYPES, is_instance_name, parse_bool, parse_choice, parse_ipv4, parse_port

STATES = ("started", "stopped", "restarted", "absent", "frozen")
ADDRESS_WAITS = ("inet", "inet6", "none")
PROTOCOLS = ("tcp", "udp")
# The `images:` remote of the server kind: LXD's images.lxd.canonical.com, or Incus's images.linuxcontainers.org.
DEFAULT_IMAGE_SERVER = "images"
# Config keys LXD owns, and ours, which the plugin writes itself.
RESERVED_CONFIG_PREFIXES = ("volatile.", "user.mage.")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CONFIG_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_MOUNT = re.compile(r"^(/[^:]*):(/[^:]*)(?::(ro|rw))?$")
# A cluster member name, or `@name` for a cluster group (LXD's own name rules, no spaces or slashes).
_TARGET = re.compile(r"^@?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class InstanceSpec:
    """Everything the user asked for one instance; None means 'leave as it is'."""

    name: str
    state: str = "started"
    image: ImageSource | None = None
    type: str = "container"
    profiles: tuple[str, ...] | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    project: str = "default"
    target: str = ""
    ephemeral: bool = False
    nat: tuple[NatRule, ...] = ()
    proxy: tuple[Mapping[str, Any], ...] = ()
    bootstrap: bool = True
    wait_for_address: str = "inet"
    address_timeout: float = 60.0
    rebuild: bool = False


def check_instance_name(name: Any) -> str:
    """LXD's rule for instance names (a DNS label); the error suggests a valid spelling."""
    text = str(name or "")
    if is_instance_name(text):
        return text
    suggestion = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")
    if suggestion and not suggestion[0].isalpha():
        suggestion = "i-" + suggestion
    hint = f" Use '{suggestion[:63]}' instead." if suggestion else ""
    raise OptionError(
        f"instance name '{text}' is not valid in LXD: 1-63 letters, digits and '-', starting with a "
        f"letter and not ending with '-' (no '_' or '.').{hint}"
    )


def parse_spec(raw: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> InstanceSpec:
    """Validate one instance's desired state (task options or a seed entry, over `defaults`)."""
    data = {**(defaults or {}), **raw}
    name = check_instance_name(data.get("name"))
    where = f"instance '{name}'"
    state = parse_choice(data.get("state", "started"), STATES, f"{where}: state")
    devices = parse_devices(data.get("devices") or {}, where)
    for device, spec in mount_devices(data.get("mounts") or [], where).items():
        devices[device] = spec
    return InstanceSpec(
        name=name,
        state=state,
        image=parse_image(data.get("image"), _image_server(data.get("image_server", DEFAULT_IMAGE_SERVER)), where),
        type=parse_choice(data.get("type", "container"), INSTANCE_TYPES, f"{where}: type"),
        profiles=tuple(str(p) for p in data["profiles"]) if data.get("profiles") is not None else None,
        config=parse_config(data.get("config") or {}, where),
        devices=devices,
        project=str(data.get("project") or "default"),
        target=_target(data.get("target"), f"{where}: target"),
        ephemeral=parse_bool(data.get("ephemeral", False), f"{where}: ephemeral"),
        nat=tuple(parse_nat(entry, index, where, data.get("nat_backend") or DEFAULT_BACKEND)
                  for index, entry in enumerate(data.get("nat") or [])),
        proxy=tuple(check_route_entry(entry, index, name) for index, entry in enumerate(data.get("proxy") or [])),
        bootstrap=parse_bool(data.get("bootstrap", True), f"{where}: bootstrap"),
        wait_for_address=parse_choice(data.get("wait_for_address", "inet"), ADDRESS_WAITS, f"{where}: wait_for_address"),
        address_timeout=_positive(data.get("address_timeout", 60), f"{where}: address_timeout"),
        rebuild=parse_bool(data.get("rebuild", False), f"{where}: rebuild"),
    )


def _image_server(value: Any) -> str | None:
    # None (YAML null, an unset role variable) means the default, as leaving it out does.
    return DEFAULT_IMAGE_SERVER if value is None else str(value)


def parse_devices(raw: Any, where: str) -> dict[str, dict[str, str]]:
    """LXD devices as LXD stores them (string values); names starting with 'mage-' are ours."""
    if not isinstance(raw, Mapping):
        raise OptionError(f"{where}: devices must be a mapping of device name to its keys")
    devices = {str(k): _string_map(v, f"{where}: devices.{k}") for k, v in raw.items()}
    for device in devices:
        if not _DEVICE_NAME.fullmatch(device) or device.startswith("mage-"):
            raise OptionError(f"{where}: device name '{device}' is not valid (letters, digits, '-_.'; 'mage-' is reserved)")
    return devices


def parse_config(config: Mapping[str, Any], where: str) -> dict[str, str]:
    """Instance config as LXD stores it: string values; LXD's and our own keys refused."""
    parsed = {}
    for key, value in config.items():
        key = str(key)
        if not _CONFIG_KEY.fullmatch(key):
            raise OptionError(f"{where}: config key '{key}' is not a valid LXD config key")
        if key.startswith(RESERVED_CONFIG_PREFIXES):
            raise OptionError(f"{where}: config key '{key}' is managed by LXD or mage-lxd itself; remove it")
        parsed[key] = _config_string(value)
    return parsed


def _config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise OptionError(f"{where}: must be a mapping of LXD device keys")
    return {str(k): _config_string(v) for k, v in value.items()}


def mount_devices(mounts: list[Any], where: str) -> dict[str, dict[str, str]]:
    """The seed's "/src:/dst[:ro]" shorthand as disk devices named after the destination."""
    devices = {}
    for entry in mounts:
        match = _MOUNT.fullmatch(str(entry))
        if not match:
            raise OptionError(f"{where}: mount '{entry}' is not '/host/path:/instance/path[:ro]'")
        source, path, mode = match.groups()
        name = "mage-mount" + re.sub(r"[^A-Za-z0-9]+", "-", path).rstrip("-")
        device = {"type": "disk", "source": source, "path": path}
        if mode == "ro":
            device["readonly"] = "true"
        devices[name[:63]] = device
    return devices


def check_route_entry(entry: Any, index: int, instance: str) -> Mapping[str, Any]:
    """A proxy route of `instance`, validated as mageproxy will (a mount string under `proxy`, as in
    the seed, is refused with a pointer to `mounts`); recorded as declared."""
    if isinstance(entry, str):
        hint = " It looks like a mount: put it under 'mounts'." if _MOUNT.fullmatch(entry) else ""
        raise OptionError(f"instance '{instance}': proxy[{index}] is the string '{entry}', not a route "
                          f"{{name, path, pass}}.{hint}")
    parse_route(instance, index, entry)
    return dict(entry)


def parse_nat(entry: Any, index: int, where: str, default_backend: str) -> NatRule:
    """One NAT entry in the seed's format {extif, intif, extport, intport, proto}, plus backend."""
    label = f"{where}: nat[{index}]"
    if not isinstance(entry, Mapping):
        raise OptionError(f"{label} must be a mapping {{extport, intport, proto, extif, intif}}")
    rule = NatRule(
        extport=parse_port(entry.get("extport"), f"{label}.extport"),
        intport=parse_port(entry.get("intport", entry.get("extport")), f"{label}.intport"),
        proto=parse_choice(entry.get("proto", "tcp"), PROTOCOLS, f"{label}.proto"),
        extif=_interface(entry.get("extif"), f"{label}.extif"),
        intif=_interface(entry.get("intif"), f"{label}.intif"),
        backend=parse_choice(entry.get("backend", default_backend), tuple(BACKENDS), f"{label}.backend"),
        listen="" if isinstance(entry.get("listen"), Mapping) else _listen(entry.get("listen"), f"{label}.listen"),
        listen_by_member=_listen_by_member(entry.get("listen"), f"{label}.listen"),
    )
    BACKENDS[rule.backend].check_rule(rule, label)
    return rule


def check_unique_names(specs: list[InstanceSpec]) -> None:
    """An instance declared twice in one project is refused, naming each such instance once."""
    names = [(spec.project, spec.name) for spec in specs]
    duplicates = sorted({f"{name} (project {project})" for project, name in names if names.count((project, name)) > 1})
    if duplicates:
        raise OptionError(f"mage_lxd_instance: instance declared twice: {', '.join(duplicates)}")


def check_unique_host_ports(specs: list[InstanceSpec]) -> None:
    """Two entries claiming one host port and protocol are refused, naming both instances."""
    claims: list[tuple[str, NatRule]] = []
    for spec in specs:
        if spec.state == "absent":
            continue  # it gives its ports up
        name = f"instance '{spec.name}'" + (f" (project {spec.project})" if spec.project != "default" else "")
        for rule in spec.nat:
            here = _claimed_addresses(rule)
            for owner, other in claims:
                there = _claimed_addresses(other)
                # No address means every address, so it overlaps with any other.
                if (other.proto, other.extport) == (rule.proto, rule.extport) and (not here or not there or here & there):
                    raise OptionError(
                        f"{name}: nat {rule.proto}/{rule.extport} is already claimed by {owner}; give one of them "
                        "another extport"
                    )
            claims.append((name, rule))


def _claimed_addresses(rule: NatRule) -> set[str]:
    # Empty means every address of the host.
    if rule.listen_by_member:
        return {address for _member, address in rule.listen_by_member}
    return {rule.listen or rule.extif} - {""}


def _interface(value: Any, what: str) -> str:
    if value in (None, ""):
        return ""
    text = str(value)
    if not _INTERFACE.fullmatch(text):
        raise OptionError(f"{what}: '{text}' is not a network interface name")
    return text


def _listen(value: Any, what: str) -> str:
    if value in (None, ""):
        return ""
    return parse_ipv4(value, what)


def _listen_by_member(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        return ()
    if not value:
        raise OptionError(f"{what}: give at least one cluster member: address")
    pairs: dict[str, str] = {}
    for member, address in value.items():
        name = str(member)
        if name.startswith("@") or not _TARGET.fullmatch(name):
            raise OptionError(f"{what}: '{name}' is not a cluster member name")
        if name in pairs:
            raise OptionError(f"{what}: member '{name}' is given twice")
        pairs[name] = _listen(address, f"{what}.{name}")
    return tuple(sorted(pairs.items()))


def _target(value: Any, what: str) -> str:
    text = "" if value is None else str(value)
    if text and not _TARGET.fullmatch(text):
        raise OptionError(f"{what}: '{text}' is not a cluster member name, nor @group for a cluster group")
    return text


def _positive(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{what}: '{value}' is not a number of seconds") from None
    if not math.isfinite(number) or number <= 0:
        raise OptionError(f"{what}: '{value}' must be a finite number of seconds, more than 0")
    return number
