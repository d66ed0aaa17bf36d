"""Projects and profiles as part of a declaration: planned for the whole batch, then applied.

A project that a declaration names is created when missing (unless the user says it must exist),
with settings that make instances work at once:

- `features.images=false`: the new project uses the default project's images, so the local images
  a host already has (and an image cache) serve every project; nothing is pulled again.
- `features.profiles=true`: the project has its own profiles, so profiles declared for one project
  never change another's. Its empty `default` profile is filled with the default project's root disk
  and NICs, so an instance gets storage and a network without any declaration.

Declared profiles (`project_profiles`) are converged like instances: only the config keys and
devices mage-lxd set are ever removed (they are listed in the profile's `user.mage.managed`).
`plan_projects` is pure; `apply_project_plan` is the one place that writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import NotFoundError, OptionError, RemoteError
from .instance_spec import InstanceSpec, parse_config, parse_devices
from .lxd_api import LxdApi
from .masking import masked_diff
from .provision import MANAGED_KEY, managed_record
from .values import is_project_name

NEW_PROJECT_CONFIG = {"features.images": "false", "features.profiles": "true", "features.storage.volumes": "true"}
NEW_PROJECT_DESCRIPTION = "Created by mage-lxd"
PROFILE_KEYS = frozenset({"name", "description", "config", "devices"})


@dataclass(frozen=True)
class ProfileSpec:
    """A declared profile: its description, config and devices (what mage-lxd manages in it)."""

    name: str
    description: str = ""
    config: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectState:
    """What LXD has for one project, read before anything is planned."""

    name: str
    exists: bool
    # name -> {description, config, devices}; for a missing project, what it would start with.
    profiles: Mapping[str, Mapping[str, Any]]
    # The default project's default profile devices a new project's default profile is filled from.
    base_devices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # False: LXD keeps this project's profiles in the default project (features.profiles=false).
    own_profiles: bool = True
    # The server's command line client, for Fix hints (lxc, or incus).
    cli: str = "lxc"


@dataclass
class ProfileWrite:
    """One profile to create (current is None) or update."""

    name: str
    current: Mapping[str, Any] | None
    wanted: dict[str, Any]


@dataclass
class ProjectPlan:
    """The changes one project needs before its instances are converged."""

    name: str
    create: bool = False
    profiles: list[ProfileWrite] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything would be written."""
        return self.create or bool(self.profiles)

    def actions(self) -> list[str]:
        """What the plan does, as the task reports it."""
        done = ["created project"] if self.create else []
        return done + [f"{'created' if w.current is None else 'updated'} profile {w.name}" for w in self.profiles]

    def as_dict(self) -> dict[str, Any]:
        """The plan as the task returns it for this project."""
        return {"name": self.name, "changed": self.changed, "actions": self.actions(), "warnings": self.warnings}

    def diffs(self) -> list[dict[str, Any]]:
        """Ansible diffs: the project itself, then each profile."""
        found = []
        if self.create:
            found.append({"before_header": f"project {self.name}", "after_header": f"project {self.name}",
                          "before": {"state": "absent"},
                          "after": {"state": "present", "config": NEW_PROJECT_CONFIG}})
        for write in self.profiles:
            header = f"profile {write.name} (project {self.name})"
            before, after = masked_diff(_visible(write.current) if write.current is not None else {"state": "absent"},
                                        _visible(write.wanted))
            found.append({"before_header": header, "after_header": header, "before": before, "after": after})
        return found


def check_project_name(value: Any, what: str) -> str:
    """A project or profile name LXD accepts."""
    text = str(value or "")
    if not is_project_name(text):
        raise OptionError(f"{what}: '{text}' is not a valid LXD name (letters, digits, '-_.'; up to 63)")
    return text


def parse_profiles(raw: Any) -> tuple[ProfileSpec, ...]:
    """Validate `project_profiles`: a list of {name, description, config, devices}."""
    if raw in (None, ""):
        return ()
    if not isinstance(raw, list):
        raise OptionError("project_profiles: must be a list of {name, description, config, devices}")
    profiles: list[ProfileSpec] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise OptionError(f"project_profiles[{index}]: must be a mapping with a name")
        name = check_project_name(entry.get("name"), f"project_profiles[{index}].name")
        where = f"profile '{name}'"
        unknown = sorted(set(entry) - PROFILE_KEYS)
        if unknown:
            raise OptionError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(PROFILE_KEYS))}")
        if any(p.name == name for p in profiles):
            raise OptionError(f"{where} is declared twice in project_profiles")
        profiles.append(ProfileSpec(
            name=name, description=str(entry.get("description") or ""),
            config=parse_config(entry.get("config") or {}, where),
            devices=parse_devices(entry.get("devices") or {}, where),
        ))
    return tuple(profiles)


def read_project_state(api: LxdApi, project: str) -> ProjectState:
    """One project's existence and profiles (and, when it is missing, what a new one starts from)."""
    try:
        config = (api.get(f"projects/{project}") or {}).get("config") or {}
    except NotFoundError:
        default = api.get("profiles/default", {"project": "default"}) or {}
        return ProjectState(name=project, exists=False, profiles={"default": {"config": {}, "devices": {}}},
                            base_devices=base_devices(default.get("devices") or {}), cli=api.kind.cli)
    listed = api.get("profiles", {"project": project, "recursion": "1"}) or []
    return ProjectState(name=project, exists=True, profiles={str(p["name"]): p for p in listed},
                        own_profiles=project == "default" or config.get("features.profiles") == "true", cli=api.kind.cli)


def base_devices(devices: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The root disk and NICs of a profile: what instances need to boot with storage and network."""
    return {name: dict(device) for name, device in devices.items()
            if device.get("type") == "nic" or (device.get("type") == "disk" and device.get("path") == "/")}


def plan_projects(
    states: Iterable[ProjectState], specs: Iterable[InstanceSpec], declared: Iterable[ProfileSpec], create_project: bool,
) -> list[ProjectPlan]:
    """What each project needs; refuses (OptionError) before anything is written."""
    specs = list(specs)
    declared = list(declared)
    plans = []
    for state in states:
        where = f"project '{state.name}'"
        if not state.exists and not create_project:
            raise OptionError(
                f"{where} does not exist, and create_project is false, so it must already exist. Fix: create it "
                f"({state.cli} project create {state.name}), or set create_project: true to let mage-lxd create it."
            )
        plan = ProjectPlan(name=state.name, create=not state.exists)
        profiles = dict(state.profiles)
        if plan.create:
            profiles["default"] = {"description": f"Default LXD profile for project {state.name}", "config": {},
                                   "devices": dict(state.base_devices)}
            plan.profiles.append(ProfileWrite("default", {"config": {}, "devices": {}}, dict(profiles["default"])))
            if not state.base_devices:
                plan.warnings.append(
                    f"{where} is new, and the default project's default profile has no root disk or NIC to give it; "
                    "its instances need a profile that does (declare one in project_profiles)"
                )
        if declared and not state.own_profiles:
            plan.warnings.append(
                f"{where} has no profiles of its own (features.profiles=false): LXD writes the declared profiles "
                f"({', '.join(p.name for p in declared)}) in the default project, for every project that shares them"
            )
        for profile in declared:
            _plan_profile(plan, profile, profiles.get(profile.name))
        _check_profiles_exist(state, specs, {*profiles, *(p.name for p in declared)})
        plans.append(plan)
    return plans


def _plan_profile(plan: ProjectPlan, spec: ProfileSpec, current: Mapping[str, Any] | None) -> None:
    # A new project's default profile is already planned (filled); a declared one merges into it.
    planned = next((write for write in plan.profiles if write.name == spec.name), None)
    base = planned.wanted if planned else current
    wanted = desired_profile(spec, base)
    if planned:
        planned.wanted = wanted
    elif current is None or _visible(current) != _visible(wanted):
        plan.profiles.append(ProfileWrite(spec.name, current, wanted))


def desired_profile(spec: ProfileSpec, current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The profile as it must be: what others set kept, ours replaced, the managed list updated."""
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    if current is not None:
        old_config = current.get("config") or {}
        managed = managed_record(old_config.get(MANAGED_KEY))
        config = {k: v for k, v in old_config.items() if k not in managed.get("config", []) and k != MANAGED_KEY}
        devices = {n: dict(d) for n, d in (current.get("devices") or {}).items() if n not in managed.get("devices", [])}
    config.update(spec.config)
    devices.update({name: dict(device) for name, device in spec.devices.items()})
    config[MANAGED_KEY] = json.dumps({"config": sorted(spec.config), "devices": sorted(spec.devices)},
                                     sort_keys=True, separators=(",", ":"))
    description = spec.description or str((current or {}).get("description") or "")
    return {"description": description, "config": config, "devices": devices}


def _check_profiles_exist(state: ProjectState, specs: list[InstanceSpec], known: set[str]) -> None:
    project = state.name
    for spec in specs:
        if spec.project != project or spec.state == "absent":
            continue
        missing = [name for name in spec.profiles or () if name not in known]
        if missing:
            raise OptionError(
                f"instance '{spec.name}' in project '{project}': profile(s) {', '.join(repr(m) for m in missing)} "
                f"do not exist in project '{project}'. Fix: declare them in project_profiles, or create them "
                f"({state.cli} profile create NAME --project {project})."
            )


def _visible(profile: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": str(profile.get("description") or ""),
            "config": dict(sorted((profile.get("config") or {}).items())),
            "devices": dict(sorted((profile.get("devices") or {}).items()))}


def apply_project_plan(api: LxdApi, plan: ProjectPlan) -> None:
    """Write one project's plan: the project first, then its profiles."""
    if plan.create:
        with _naming(f"project '{plan.name}': creating it"):
            api.post("projects", {"name": plan.name, "description": NEW_PROJECT_DESCRIPTION, "config": NEW_PROJECT_CONFIG})
    params = {"project": plan.name}
    for write in plan.profiles:
        body = {key: write.wanted[key] for key in ("description", "config", "devices")}
        verb = "creating" if write.current is None else "updating"
        with _naming(f"project '{plan.name}': {verb} profile '{write.name}'"):
            if write.current is None:
                api.post("profiles", {"name": write.name, **body}, params)
            else:
                api.put(f"profiles/{write.name}", body, params)


@contextmanager
def _naming(what: str) -> Iterator[None]:
    # LXD's own words ("Invalid value: lots") name neither the project nor the profile.
    try:
        yield
    except RemoteError as exc:
        raise RemoteError(f"{what} failed: {exc}. Nothing after it was changed.") from exc
