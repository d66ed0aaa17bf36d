"""A project removed with everything in it: read what it holds, then delete it in the order LXD needs.

LXD deletes a project only when it is empty: no instances, no profiles but `default`, and (where the
project has them of its own) no images and no custom storage volumes. `read_project_contents` reads
what is there; `plan_removal` is pure; `apply_removal` is the one place that deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import NotFoundError, OptionError, RemoteError
from .lxd_api import LxdApi
from .projects import check_project_name

# Deleting is final, so a clean shutdown would only add waiting (as for instances).
STOP_TIMEOUT = 30


@dataclass(frozen=True)
class ProjectContents:
    """What one project holds, as LXD lists it (exists is False for a missing project)."""

    name: str
    exists: bool
    instances: tuple[tuple[str, str], ...] = ()  # (name, status)
    profiles: tuple[str, ...] = ()
    images: tuple[str, ...] = ()  # fingerprints
    volumes: tuple[tuple[str, str], ...] = ()  # (pool, volume name)


@dataclass
class ProjectRemoval:
    """The deletions one project needs, in the order they run; the project itself last."""

    name: str
    stop: list[str] = field(default_factory=list)
    instances: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    volumes: list[tuple[str, str]] = field(default_factory=list)
    project: bool = False

    @property
    def changed(self) -> bool:
        """True when anything would be deleted."""
        return self.project

    def as_dict(self) -> dict[str, Any]:
        """What was (or, in check mode, would be) deleted, as the task returns it."""
        return {"project": self.name if self.project else None, "instances": self.instances, "profiles": self.profiles,
                "images": self.images, "volumes": [f"{pool}/{name}" for pool, name in self.volumes]}


def read_project_contents(api: LxdApi, project: str) -> ProjectContents:
    """Everything LXD must not find in `project` when it is deleted."""
    try:
        config = (api.get(f"projects/{project}") or {}).get("config") or {}
    except NotFoundError:
        return ProjectContents(name=project, exists=False)
    params = {"project": project, "recursion": "1"}
    instances = tuple((str(item["name"]), str(item.get("status") or "")) for item in api.get("instances", params) or [])
    profiles = tuple(str(item["name"]) for item in api.get("profiles", params) or [])
    images: tuple[str, ...] = ()
    if config.get("features.images") == "true":
        images = tuple(str(item["fingerprint"]) for item in api.get("images", params) or [])
    volumes: list[tuple[str, str]] = []
    if config.get("features.storage.volumes") == "true":
        for pool in api.get("storage-pools", {"recursion": "1"}) or []:
            listed = api.get(f"storage-pools/{pool['name']}/volumes", params) or []
            volumes += [(str(pool["name"]), str(item["name"])) for item in listed if item.get("type") == "custom"]
    return ProjectContents(project, True, instances, profiles, images, tuple(volumes))


def plan_removal(contents: ProjectContents) -> ProjectRemoval:
    """What deleting the project takes; the default project is refused."""
    if contents.name == "default":
        raise OptionError("mage_lxd_project: the default project cannot be deleted. Fix: name another project.")
    check_project_name(contents.name, "mage_lxd_project name")
    removal = ProjectRemoval(name=contents.name, project=contents.exists)
    removal.stop = [name for name, status in contents.instances if status != "Stopped"]
    removal.instances = [name for name, *_rest in contents.instances]
    # LXD deletes a project's default profile with the project, and refuses to delete it before.
    removal.profiles = [name for name in contents.profiles if name != "default"]
    removal.images = list(contents.images)
    removal.volumes = list(contents.volumes)
    return removal


def apply_removal(api: LxdApi, removal: ProjectRemoval) -> None:
    """Delete what the plan lists, instances first and the project last."""
    if not removal.project:
        return
    params = {"project": removal.name}
    where = f"project '{removal.name}'"
    try:
        for name in removal.stop:
            api.put(f"instances/{name}/state", {"action": "stop", "force": True, "timeout": STOP_TIMEOUT}, params)
        for name in removal.instances:
            api.delete(f"instances/{name}", params)
        for name in removal.profiles:
            api.delete(f"profiles/{name}", params)
        for fingerprint in removal.images:
            api.delete(f"images/{fingerprint}", params)
        for pool, name in removal.volumes:
            api.delete(f"storage-pools/{pool}/volumes/custom/{name}", params)
        api.delete(f"projects/{removal.name}")
    except RemoteError as exc:
        raise RemoteError(
            f"{where}: deleting it failed: {exc}. Fix: see what is left with "
            f"'{api.kind.cli} list --project {removal.name}' and '{api.kind.cli} project show {removal.name}'."
        ) from exc
