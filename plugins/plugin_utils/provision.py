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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .bootstrap import find_python, install_python
from .channel import InstanceChannel
from .cli_config import find_cli_image_remote
from .cluster import check_reachable, check_target, listed_instance, member_name, placement_error
from .errors import MageLxdError, NotFoundError, OptionError, RemoteError
from .images import ImageResolver, certificate_text, protocol_for, server_for
from .instance_spec import InstanceSpec
from .masking import masked_diff
from .nat import (
    NatRule,
    check_listen_by_member,
    check_nat,
    nat_devices,
    nat_targets,
    owner_tag,
    publish_nat,
    resolve_listen_addresses,
)
from .lxd_api import Log, LxdApi, _no_log
from .nics import NicView, addresses_by_family, flat, managed_networks, nic_addresses
from .records import decode_record
from .server_kind import INCUS

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
    spec: InstanceSpec, current: Mapping[str, Any] | None, published: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """The config, devices and profiles the instance must have, keeping what others set."""
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    if current is not None:
        managed = managed_record((current.get("config") or {}).get(MANAGED_KEY))
        for key, value in (current.get("config") or {}).items():
            if key not in managed.get("config", []) and not key.startswith("user.mage."):
                config[key] = value
        for name, device in (current.get("devices") or {}).items():
            if name not in managed.get("devices", []) and not name.startswith(OWN_DEVICE_PREFIX):
                devices[name] = dict(device)
    config.update(spec.config)
    user_devices = {name: dict(device) for name, device in spec.devices.items() if not name.startswith(OWN_DEVICE_PREFIX)}
    devices.update({name: dict(device) for name, device in spec.devices.items()})
    devices.update({name: dict(device) for name, device in published.items()})
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


def managed_record(raw: str | None) -> dict[str, list[str]]:
    """What mage-lxd set in an instance or profile (user.mage.managed). Unreadable (edited by hand):
    nothing counts as ours, so nothing is removed - keys are only ever kept, never lost."""
    try:
        record = decode_record(raw or "{}")
    except ValueError:  # not JSON, too long or too deep (records.RecordError)
        return {}
    if not isinstance(record, dict):
        return {}
    # Only lists of names count: a string would make `key in record[...]` a substring test.
    return {
        part: [name for name in names if isinstance(name, str)]
        for part, names in record.items()
        if part in ("config", "devices") and isinstance(names, list)
    }


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


StateStep = tuple[str, dict[str, Any], str]


@dataclass(frozen=True)
class InstanceFacts:
    """What LXD says about one declared instance, read before anything is planned."""

    current: Mapping[str, Any] | None
    etag: str = ""
    location: str = ""
    # Each NAT rule's host address (rule key -> address), resolved through LXD.
    listen: Mapping[str, str] = field(default_factory=dict)
    # Where a new (or rebuilt) instance's image comes from; None when nothing is created.
    image_source: Mapping[str, str] | None = None
    image_differs: bool = False
    # The image LXD must download for it (not yet on the server); None for a local or cached one.
    pull: ImagePull | None = None


@dataclass(frozen=True)
class ImagePull:
    """An image a new instance needs that its server does not have yet: pulled once per batch."""

    fingerprint: str
    # The project whose images it goes into ('default' unless the project has features.images).
    store: str
    alias: str
    server: str

    @property
    def key(self) -> tuple[str, str]:
        """Instances with the same key share one download."""
        return (self.store, self.fingerprint)

    def describe(self) -> str:
        """The pull as messages name it."""
        return f"image '{self.alias}' ({self.fingerprint[:12]}) from {self.server}"


@dataclass
class InstancePlan:
    """What converging one instance will do. `result` already reports it: check mode stops here."""

    spec: InstanceSpec
    facts: InstanceFacts
    result: InstanceResult
    delete: bool = False
    create: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    state_steps: list[StateStep] = field(default_factory=list)


def describe(spec: InstanceSpec) -> str:
    """The instance as messages name it."""
    return f"instance '{spec.name}' in project '{spec.project}'"


def read_facts(api: LxdApi, spec: InstanceSpec, new_project: bool = False,
               images: ImageResolver | None = None) -> InstanceFacts:
    """Everything planning needs from LXD, read without writing. OptionError: the declaration cannot
    work (the batch is refused); RemoteError: this instance cannot be reached.

    For an instance of a project this run creates, `api` acts in the default project, whose images
    the new project uses; the instance does not exist yet. A new instance's image is resolved now,
    on its image server too (`images`, shared by the batch): an alias the server does not have, or
    a server that cannot be read, refuses the batch."""
    where = describe(spec)
    check_nat(api, spec.nat, where)
    current, etag = (None, "") if new_project else _read_current(api, spec, where)
    location = member_name(str((current or {}).get("location") or ""))
    listen: dict[str, str] = {}
    if spec.state != "absent":
        # Where the instance is (or is asked to go) decides per-member NAT listen addresses.
        placed = location or ("" if spec.target.startswith("@") else spec.target)
        check_listen_by_member(api, spec.nat, where, placed if current is None else None)
        listen = resolve_listen_addresses(api, spec.nat, where, placed)
    image_differs = current is not None and spec.state != "absent" and _image_differs(api, spec, current)
    image_source, pull = None, None
    if spec.state != "absent" and (current is None or (spec.rebuild and image_differs)):
        check_target(api, spec.target, where)
        image_source, pull = _image_source(api, spec, where, images or image_resolver(api), new_project)
    return InstanceFacts(current, etag, location, listen, image_source, image_differs, pull)


def image_resolver(api: LxdApi) -> ImageResolver:
    """A resolver for the image servers of instances on `api`'s server (its kind and architectures)."""
    architectures = [str(arch) for arch in api.host_info.get("environment", {}).get("architectures") or []]
    return ImageResolver(kind="incus" if api.kind is INCUS else "lxd", architectures=architectures,
                         timeout=api.remote.timeout)


def _read_current(api: LxdApi, spec: InstanceSpec, where: str) -> tuple[dict[str, Any] | None, str]:
    try:
        current, etag = _read(api, f"instances/{spec.name}")
    except RemoteError:
        # On a cluster the read fails when the instance's member is down: say so, naming it.
        if api.clustered:
            check_reachable(api, listed_instance(api, spec.name), where)
        raise
    if current is not None:
        check_reachable(api, current, where)
    return current, etag


def plan_instance(spec: InstanceSpec, facts: InstanceFacts) -> InstancePlan:
    """The changes that bring the instance to `spec` (pure); its diff shows no secret value."""
    plan = _plan_instance(spec, facts)
    diff = plan.result.diff
    diff["before"], diff["after"] = masked_diff(diff["before"], diff["after"])
    return plan


def _plan_instance(spec: InstanceSpec, facts: InstanceFacts) -> InstancePlan:
    current = facts.current
    result = InstanceResult(name=spec.name, project=spec.project, location=facts.location)
    result.diff["before"] = visible(current) | {"state": _state(current)} if current else {"state": "absent"}
    plan = InstancePlan(spec=spec, facts=facts, result=result)
    if spec.state == "absent":
        result.status = "absent"
        result.diff["after"] = {"state": "absent"}
        if current is not None:
            plan.delete = True
            result.did("deleted")
        return plan
    published = nat_devices(spec.nat, facts.listen)
    wanted = desired_definition(spec, current, published)
    if current is not None and spec.rebuild and facts.image_differs:
        plan.delete = True
        result.did("rebuilt (image changed)")
        current = None
        wanted = desired_definition(spec, None, published)
    if current is None:
        result.did("created")
        plan.create = {"name": spec.name, "type": spec.type, "source": dict(facts.image_source or {}),
                       "ephemeral": spec.ephemeral, **wanted}
        status = "Stopped"
    else:
        result.warnings.extend(_kept_as_is(spec, facts))
        if visible(wanted) != visible(current):
            result.did("reconfigured")
            plan.update = wanted
        status = str(current.get("status"))
    plan.state_steps = state_steps(spec.state, status)
    for label, _body, status in plan.state_steps:
        result.did(label)
    result.status = status.lower()
    result.diff["after"] = visible(wanted) | {"state": _target_state(spec.state)}
    return plan


def _kept_as_is(spec: InstanceSpec, facts: InstanceFacts) -> list[str]:
    warnings = []
    where = describe(spec)
    # Moving an instance stops it and copies its storage: never a side effect of a declaration.
    if spec.target and not spec.target.startswith("@") and facts.location and facts.location != spec.target:
        warnings.append(
            f"{where} is on cluster member '{facts.location}', not on target '{spec.target}'; it is left there "
            "(target only places new instances; lxc move moves one)"
        )
    if facts.image_differs and not spec.rebuild and spec.image is not None:
        warnings.append(
            f"{where} was made from another image than the one local alias '{spec.image.alias}' points at "
            "now; it is kept as is (set rebuild: true to recreate it from the new image)"
        )
    return warnings


def apply_instance(api: LxdApi, plan: InstancePlan, progress: Log = _no_log) -> InstanceResult:
    """Carry out one instance's plan (the executor). A new instance that cannot be started or
    published is removed again, so a failed run leaves no half-made instance behind. While LXD
    downloads the instance's image, `progress` gets its download progress lines."""
    spec, result = plan.spec, plan.result
    path = f"instances/{spec.name}"
    current, etag = plan.facts.current, plan.facts.etag
    if spec.state == "absent":
        if plan.delete and current is not None:
            _delete(api, path, current)
            if _may_have_published(current):
                _apply_published(api, owner_tag(spec.project, spec.name), [], {}, {}, result)
        return result
    if plan.delete and current is not None:
        # rebuild: true with another image. The image and the definition were checked before this.
        _delete(api, path, current)
    if plan.create is not None:
        try:
            current, etag = _create(api, plan, progress)
        except MageLxdError as exc:
            raise RemoteError(f"{exc}{_REBUILD_LOSS if plan.delete else ''}") from exc
    elif plan.update is not None and current is not None:
        with _step(spec, "updating its config, devices and profiles"):
            _put_definition(api, path, current, plan.update, etag)
    if current is None:
        raise RemoteError(f"{describe(spec)}: nothing to converge (it was deleted and not recreated)")
    try:
        with _step(spec, "changing its state"):
            status = _run_state_steps(api, path, plan.state_steps, str(current.get("status")))
        result.status = status.lower()
        if status == "Running":
            _after_start(api, plan, current, result)
    except MageLxdError as exc:
        if plan.create is None:
            raise
        _remove_new(api, plan, exc)
    return result


# Said whenever a rebuild fails after the old instance was deleted: never hide a loss.
_REBUILD_LOSS = " The previous instance had already been deleted for the rebuild (rebuild: true); its data is gone."


@contextmanager
def _step(spec: InstanceSpec, what: str) -> Iterator[None]:
    # LXD's own words ("Invalid value: lots") name neither the instance nor what was being done.
    try:
        yield
    except RemoteError as exc:
        if exc.where == describe(spec):
            raise
        raise RemoteError(where=describe(spec), action=what, cause=str(exc), status=exc.status,
                          reasons=exc.reasons) from exc


def _after_start(api: LxdApi, plan: InstancePlan, current: Mapping[str, Any], result: InstanceResult) -> None:
    # Address, python, then NAT, which needs the address for forwards and iptables.
    spec = plan.spec
    nics = _NicReader(api, spec)
    if spec.wait_for_address != "none":
        view = _wait_for_address(nics, spec, describe(spec), result)
    else:
        view = _read_addresses(nics, result)[0]
    if spec.bootstrap:
        channel = InstanceChannel(api, spec.name)
        result.python = find_python(channel)
        if not result.python:
            tool = install_python(channel)
            result.python = find_python(channel)
            result.did(f"installed python with {tool}")
    if spec.nat or _may_have_published(current):
        # Refused (naming the address and network) unless LXD's own view of a NIC vouches for it.
        targets = nat_targets(describe(spec), spec.nat, view, nics.networks)
        _apply_published(api, owner_tag(spec.project, spec.name), spec.nat, targets, dict(plan.facts.listen), result)


class _NicReader:
    """Reads one instance's NIC view: its devices and networks once, its leases and state per call."""

    def __init__(self, api: LxdApi, spec: InstanceSpec) -> None:
        self.api = api
        self.path = f"instances/{spec.name}"
        self.instance = api.get(self.path) or {}
        self.networks = managed_networks(api.get("networks", {"recursion": "1"}))
        self.attached = sorted(nic_addresses(self.instance, self.networks).networks)

    def read(self) -> tuple[NicView, dict[str, Any]]:
        """The instance's addresses as LXD sees its NICs now, and its state (for messages)."""
        state = self.api.get(f"{self.path}/state") or {}
        leases = {}
        for network in self.attached:
            try:
                leases[network] = self.api.get(f"networks/{network}/leases") or []
            except MageLxdError:
                continue  # then its NIC's own address inside the subnet answers
        return nic_addresses(self.instance, self.networks, leases, state), state


def _remove_new(api: LxdApi, plan: InstancePlan, error: MageLxdError) -> None:
    # Made by this run: delete it with whatever it already published, so nothing is half-made.
    spec, path = plan.spec, f"instances/{plan.spec.name}"
    try:
        _apply_published(api, owner_tag(spec.project, spec.name), [], {}, {}, plan.result)
        _delete(api, path, api.get(path) or {})
    except MageLxdError as cleanup:
        raise RemoteError(f"{error} The new instance could not be removed again ({cleanup}); delete it by hand.") from error
    if plan.delete:
        raise RemoteError(f"{error} The rebuilt instance was removed again.{_REBUILD_LOSS}") from error
    raise RemoteError(f"{error} {describe(spec)} did not exist before this run and was removed again.") from error


def converge(api: LxdApi, spec: InstanceSpec, check_mode: bool = False, progress: Log = _no_log) -> InstanceResult:
    """Read, plan and (unless in check mode) apply one instance. Raises MageLxdError naming it."""
    plan = plan_instance(spec, read_facts(api, spec))
    return plan.result if check_mode else apply_instance(api, plan, progress)


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


def _create(api: LxdApi, plan: InstancePlan, progress: Log = _no_log) -> tuple[dict[str, Any], str]:
    """POST the instance and read it back; on a cluster, complete per-member NAT once LXD placed it
    (its addresses then also go into the plan's facts, for the NAT published after the start).
    When LXD downloads the image, its download progress goes to `progress` as it changes."""
    spec, body, result = plan.spec, plan.create or {}, plan.result
    where = describe(spec)
    path = f"instances/{spec.name}"
    params = {"target": spec.target} if spec.target else None
    pull = plan.facts.pull if (body.get("source") or {}).get("mode") == "pull" else None
    shown: list[str] = []

    def watch(metadata: Mapping[str, Any]) -> None:
        line = str(metadata.get("download_progress") or "")
        if line and (not shown or shown[-1] != line):
            shown.append(line)
            progress(f"{where}: pulling {pull.describe() if pull else 'its image'}: {line}")

    try:
        api.post_watched("instances", body, params, watch)
        if pull is not None:
            result.actions.insert(result.actions.index("created") + 1 if "created" in result.actions else 0,
                                  f"pulled {pull.describe()}")
    except RemoteError as exc:
        if spec.target:
            raise placement_error(api, spec.target, where, exc) from exc
        source = body.get("source") or {}
        if source.get("server"):
            raise RemoteError(
                f"{where}: LXD could not pull image {spec.image.describe() if spec.image else ''} from "
                f"{source['server']} ({exc}). Nothing was made. Fix: check that the LXD host reaches the server "
                "and trusts its certificate (its CA store, as the controller's)."
            ) from exc
        raise RemoteError(f"{where}: creating it failed: {exc}. Nothing was made.") from exc
    current, etag = _read(api, path)
    if current is None:
        raise RemoteError(f"{where}: LXD reported it created, but it is not there")
    result.location = member_name(str(current.get("location") or ""))
    if any(rule.listen_by_member for rule in spec.nat) and result.location != spec.target:
        # LXD picked the member: now its per-member listen addresses are known.
        listen = resolve_listen_addresses(api, spec.nat, where, result.location)
        plan.facts = replace(plan.facts, listen=listen)
        wanted = desired_definition(spec, current, nat_devices(spec.nat, listen))
        _put_definition(api, path, current, wanted, etag)
        current, etag = _read(api, path)
    return current or {}, etag


def _image_source(api: LxdApi, spec: InstanceSpec, where: str, images: ImageResolver,
                  new_project: bool) -> tuple[dict[str, str], ImagePull | None]:
    image = spec.image
    if image is None:
        raise OptionError(f"{where} does not exist; give 'image' to create it")
    if (image.local_first or not image.is_remote) and _local_alias(api, image.alias):
        return {"type": "image", "alias": image.alias}, None
    if not image.is_remote:
        raise OptionError(
            f"{where}: image '{image.alias}' is not a local alias in project '{spec.project}' on "
            f"{api.describe()}. Fix: import it, or give image: {{alias: ..., server: https://...}}"
        )
    kind = "incus" if api.kind is INCUS else "lxd"
    server = server_for(image, kind, where, find_cli_image_remote)
    found = images.resolve(server, image.alias, spec.type, where)
    if _has_image(api, found.fingerprint):
        # Already on the server (pulled before, or imported): nothing is downloaded.
        return {"type": "image", "fingerprint": found.fingerprint}, None
    source = {"type": "image", "mode": "pull", "server": server.url, "protocol": protocol_for(kind, server.protocol),
              "alias": image.alias}
    if server.server_cert:
        source["certificate"] = certificate_text(server.server_cert, where)
    store = "default" if new_project else _image_store(api, spec.project)
    return source, ImagePull(found.fingerprint, store, image.alias, server.url)


def _has_image(api: LxdApi, fingerprint: str) -> bool:
    try:
        api.get(f"images/{fingerprint}")
    except NotFoundError:
        return False
    return True


def _image_store(api: LxdApi, project: str) -> str:
    # A project without features.images keeps its images in the default project.
    config = (api.get(f"projects/{project}") or {}).get("config") or {}
    return project if config.get("features.images") == "true" else "default"


def _local_alias(api: LxdApi, alias: str) -> dict[str, Any] | None:
    try:
        return api.get(f"images/aliases/{alias}")
    except NotFoundError:
        return None


def _image_differs(api: LxdApi, spec: InstanceSpec, current: Mapping[str, Any]) -> bool:
    # Only a local alias can be compared without reaching an image server.
    if spec.image is None or (spec.image.is_remote and not spec.image.local_first):
        return False
    alias = _local_alias(api, spec.image.alias)
    base = (current.get("config") or {}).get("volatile.base_image", "")
    return bool(alias and base and alias.get("target") != base)


def state_steps(state: str, status: str) -> list[StateStep]:
    """(label, LXD state request, status after) to go from `status` to `state` (pure)."""
    steps: list[StateStep] = []
    if state in ("started", "restarted") and status == "Frozen":
        steps.append(("unfrozen", {"action": "unfreeze"}, "Running"))
        status = "Running"
    if state == "started" and status != "Running":
        steps.append(("started", {"action": "start"}, "Running"))
    elif state == "restarted":
        action = "restart" if status == "Running" else "start"
        steps.append(("restarted", {"action": action, "timeout": STOP_TIMEOUT}, "Running"))
    elif state == "stopped" and status != "Stopped":
        steps.append(("stopped", {"action": "stop", "timeout": STOP_TIMEOUT}, "Stopped"))
    elif state == "frozen" and status != "Frozen":
        if status != "Running":
            steps.append(("started", {"action": "start"}, "Running"))
        steps.append(("frozen", {"action": "freeze"}, "Frozen"))
    return steps


def _run_state_steps(api: LxdApi, path: str, steps: list[StateStep], status: str) -> str:
    for _label, body, after in steps:
        try:
            api.put(f"{path}/state", body)
        except RemoteError:
            if body["action"] != "stop":
                raise
            # A clean shutdown that did not finish in time: stop it for sure.
            api.put(f"{path}/state", {"action": "stop", "force": True})
        status = after
    return status


def _read_addresses(nics: _NicReader, result: InstanceResult) -> tuple[NicView, dict[str, Any]]:
    view, state = nics.read()
    ipv4, ipv6 = addresses_by_family(view.addresses)
    result.ipv4, result.ipv6 = flat(ipv4), flat(ipv6)
    return view, state


def _wait_for_address(nics: _NicReader, spec: InstanceSpec, where: str, result: InstanceResult) -> NicView:
    deadline = time.monotonic() + spec.address_timeout
    while True:
        view, state = _read_addresses(nics, result)
        if (result.ipv4 if spec.wait_for_address == "inet" else result.ipv6):
            return view
        if time.monotonic() >= deadline:
            raise RemoteError(
                f"{where} has no {'IPv4' if spec.wait_for_address == 'inet' else 'IPv6'} address after "
                f"{spec.address_timeout:g}s on a NIC of a managed network; it has: {_describe_addresses(state)}. "
                "Fix: check its network (a NIC on a managed network with DHCP, a DHCP client in the image), "
                "raise address_timeout, or set wait_for_address: none."
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
    api: LxdApi, tag: str, rules: tuple[NatRule, ...] | list[NatRule], targets: Mapping[str, str],
    listen: dict[str, str], result: InstanceResult,
) -> None:
    for backend in publish_nat(api, tag, rules, targets, listen, result.location):
        result.did(f"{backend} NAT updated")
