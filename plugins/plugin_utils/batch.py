"""Converge a whole declaration: plan every project, profile and instance, check the plan, then apply.

Reads come first, then pure planning, then the checks that need the whole batch (routes unique in
the future state, host ports free, settings that weaken isolation), and last, once those passed,
LXD's own judgement of the config about to be written (scratch profiles). Only a plan with no
refusal is applied: a refused batch writes nothing to LXD. Check mode stops after planning.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .batch_checks import (
    Definition,
    definition_refusals,
    existing_routes,
    instance_definitions,
    host_port_refusals,
    route_check,
    spec_unsafe_settings,
    unsafe_settings,
)
from .errors import MageLxdError, NotFoundError, OptionError, RemoteError
from .images import ImageResolver
from .instance_spec import InstanceSpec
from .lxd_api import Log, LxdApi, _no_log
from .nat import StaleRule, network_projects, plan_stale_nat, read_owners, read_published, remove_stale_nat
from .nics import managed_networks
from .projects import ProfileSpec, apply_project_plan, parse_profiles, plan_projects, read_project_state
from .provision import InstancePlan, apply_instance, image_resolver, plan_instance, read_facts
from .remote import Remote, local_socket_path
from .values import parse_bool


@dataclass(frozen=True)
class BatchOptions:
    """How the batch runs: what it may create, how many instances at once, and how long LXD may take."""

    profiles: Sequence[ProfileSpec] = ()
    # The task's own project: where declared profiles go even when no instance names it.
    project: str = "default"
    create_project: bool = True
    allow_unsafe: bool = True
    check_mode: bool = False
    forks: int = 4
    operation_timeout: float = 300.0
    # Where image download progress lines go while the batch runs.
    progress: Log = _no_log


def batch_options(args: Mapping[str, Any], check_mode: bool, progress: Log = _no_log) -> BatchOptions:
    """The batch options a task's validated arguments give: booleans read by values.parse_bool, the
    defaults BatchOptions' own; `progress` gets the image download progress lines."""
    return BatchOptions(
        profiles=parse_profiles(args.get("project_profiles")),
        project=args.get("project") or "default",
        create_project=parse_bool(args.get("create_project", True), "mage_lxd_instance: create_project"),
        allow_unsafe=parse_bool(args.get("allow_unsafe", True), "mage_lxd_instance: allow_unsafe"),
        check_mode=check_mode,
        forks=args.get("forks", BatchOptions.forks),
        operation_timeout=args.get("operation_timeout", BatchOptions.operation_timeout),
        progress=progress,
    )


@dataclass
class BatchResult:
    """What the task reports: projects, instances (failed ones carry failed/msg), and warnings."""

    projects: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    warnings: list[str]
    # NAT rules of instances that are gone or no longer record them: removed (or, in check mode, to remove).
    nat_removed: list[dict[str, str]] = field(default_factory=list)


def converge_batch(remote: Remote, specs: Sequence[InstanceSpec], options: BatchOptions, log: Log = _no_log) -> BatchResult:
    """Plan, check and apply the batch. Refusals raise OptionError before any write; an instance LXD
    cannot reach or refuses is reported in its entry, and the others still converge."""
    if options.forks < 1 or not 0 < options.operation_timeout < float("inf"):
        raise OptionError("mage_lxd_instance: forks must be 1 or more, operation_timeout a finite number of seconds "
                          f"above 0 (got {options.forks}, {options.operation_timeout})")
    timeout = (remote.timeout, options.operation_timeout)
    api = LxdApi(remote, log=log, timeout=timeout)
    with batch_lock(remote):
        try:
            projects = plan_projects([read_project_state(api, name) for name in _projects_used(specs, options)],
                                     specs, options.profiles, options.create_project)
        except OptionError as exc:
            raise OptionError(f"{exc} Nothing was changed.") from exc
        new = {plan.name for plan in projects if plan.create}

        def reader_for(spec: InstanceSpec) -> LxdApi:
            # Before it exists, a new project's images are the default project's (features.images=false).
            return LxdApi(remote, log=log, project="default" if spec.project in new else spec.project, timeout=timeout)

        def writer_for(spec: InstanceSpec) -> LxdApi:
            return LxdApi(remote, log=log, project=spec.project, timeout=timeout)

        plans, failures = _plan_instances(specs, new, reader_for, options.forks, image_resolver(api))
        warnings = _check(api, specs, plans, new, options)
        stale, problems = _stale_nat(api)
        warnings += [("check mode: would remove " if options.check_mode else "removed ") + item.describe()
                     for item in stale] + problems
        if not options.check_mode:
            # Before the instances: a new owner of a stale rule's port takes it over cleanly.
            warnings += remove_stale_nat(api, stale)
            for project in projects:
                apply_project_plan(api, project)
            failures |= _apply_instances(plans, writer_for, options.forks, options.progress)
    instances = [failures.get(_key(spec)) or plans[_key(spec)].result.as_dict() for spec in specs]
    return BatchResult([plan.as_dict() | {"diff": plan.diffs()} for plan in projects], instances, warnings,
                       [item.as_dict() for item in stale])


def _stale_nat(api: LxdApi) -> tuple[list[StaleRule], list[str]]:
    """Forward ports and iptables rules on the server whose owner is gone or no longer records them
    (reads only): on the default project's networks and on those of every project with networks of
    its own, whether or not this run names it. A failed read is a warning: it never stops the batch."""
    try:
        projects = api.get("projects", {"recursion": "1"})
    except RemoteError:
        projects = None  # a client restricted to some projects may not list them: the default's networks
    try:
        networks = {project: managed_networks(api.get("networks", {"recursion": "1", "project": project}))
                    for project in network_projects(projects)}
        published = read_published(api, networks)
        return plan_stale_nat(published, read_owners(api, published)), []
    except (MageLxdError, OSError, subprocess.CalledProcessError) as exc:
        return [], [f"NAT rules of deleted instances were not looked for on {api.describe()}: {exc}"]


def _projects_used(specs: Sequence[InstanceSpec], options: BatchOptions) -> list[str]:
    # A project only absent instances name needs nothing: there is nothing to delete in it.
    used = {spec.project for spec in specs if spec.state != "absent"}
    return sorted(used | ({options.project} if options.profiles else set()))


def _key(spec: InstanceSpec) -> str:
    return spec.name + "/" + spec.project


def _failure(spec: InstanceSpec, exc: MageLxdError) -> dict[str, Any]:
    return {"name": spec.name, "project": spec.project, "failed": True, "msg": exc.render()}


def _plan_instances(specs: Sequence[InstanceSpec], new: set[str], api_for: Any, forks: int,
                    images: ImageResolver | None = None,
                    ) -> tuple[dict[str, InstancePlan], dict[str, dict[str, Any]]]:
    """Read and plan every instance. An unreachable one becomes a failure entry; a declaration that
    cannot work (OptionError: an image alias its server does not have, too) refuses the batch, with
    every such refusal named at once."""
    def read(spec: InstanceSpec) -> InstancePlan | MageLxdError:
        try:
            return plan_instance(spec, read_facts(api_for(spec), spec, new_project=spec.project in new,
                                                  images=images))
        except MageLxdError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(specs)))) as pool:
        outcomes = list(pool.map(read, specs))
    refusals = [str(outcome) for outcome in outcomes if isinstance(outcome, OptionError)]
    if refusals:
        raise OptionError(" ".join(refusals) + " Nothing was changed.")
    plans = {_key(spec): outcome for spec, outcome in zip(specs, outcomes) if isinstance(outcome, InstancePlan)}
    failures = {_key(spec): _failure(spec, outcome) for spec, outcome in zip(specs, outcomes)
                if isinstance(outcome, MageLxdError)}
    return plans, failures


def _check(api: LxdApi, specs: Sequence[InstanceSpec], plans: dict[str, InstancePlan], new: set[str],
           options: BatchOptions) -> list[str]:
    """Refuse the batch (OptionError) on any refusal; return the warnings to show.

    Every check that only reads runs first. LXD's own judgement of the config and devices about to
    be written (definition_refusals, which writes and deletes scratch profiles) runs last, and only
    when no other check refused: a batch refused by any other check writes nothing at all."""
    unsafe = [message for spec in specs for message in spec_unsafe_settings(spec)]
    unsafe += [message for profile in options.profiles
               for message in unsafe_settings(f"profile '{profile.name}'", profile.config, profile.devices)]
    refusals: list[str] = []
    route_warnings: list[str] = []
    to_judge: list[tuple[str, list[Definition]]] = []
    for project in _projects_used(specs, options):
        declared = [(s.name, list(s.proxy)) for s in specs if s.project == project and s.state != "absent" and s.proxy]
        existing = [] if project in new else existing_routes(api, project, [s.name for s in specs if s.project == project])
        refused, warned = route_check(declared, existing)
        refusals += refused
        route_warnings += warned
        to_write = instance_definitions(plan for plan in plans.values() if plan.spec.project == project)
        to_write += [(f"profile '{p.name}' in project '{project}'", p.config, p.devices) for p in options.profiles]
        if to_write:
            to_judge.append(("default" if project in new else project, to_write))
    if not api.remote.is_https and not api.clustered:
        # LXD runs on this machine: its ports are ours to probe.
        refusals += host_port_refusals(plans.values())
    if unsafe and not options.allow_unsafe:
        refusals += [f"{message} (allow_unsafe is false)." for message in unsafe]
    _refuse(refusals)
    if not options.check_mode:
        _refuse([refusal for project, to_write in to_judge for refusal in definition_refusals(api, project, to_write)])
    warnings = [f"{message}; set allow_unsafe: false to refuse such settings" for message in unsafe] + route_warnings
    if options.check_mode and to_judge:
        # Offering them to LXD would write (a scratch profile): check mode writes nothing.
        warnings.insert(0, "check mode: config and devices were not offered to LXD for checking; a real run does "
                           "that last, before any change")
    return warnings


def _refuse(refusals: list[str]) -> None:
    """Refuse the batch with every refusal named, when there is any."""
    if refusals:
        raise OptionError(" ".join(refusals) + " Nothing was changed.")


def _apply_instances(plans: dict[str, InstancePlan], api_for: Any, forks: int,
                     progress: Log = _no_log) -> dict[str, dict[str, Any]]:
    """Apply every plan, a bounded number at once. Instances that need the same image download share
    it: the first one's creation pulls it (showing LXD's progress), the others wait for that, then
    are created from the image on the server (pull_gates)."""
    leaders, gates = pull_gates(plans.values())

    def apply(plan: InstancePlan) -> dict[str, Any] | None:
        pull = plan.facts.pull
        try:
            if pull is not None and leaders[pull.key] is not plan:
                gates[pull.key].wait()
                _use_pulled_image(api_for(plan.spec), plan)
            apply_instance(api_for(plan.spec), plan, progress)
        except MageLxdError as exc:
            # Part of a plan with writes may have been applied before the failure: say it may have changed.
            return _failure(plan.spec, exc) | {"changed": plan.result.changed}
        finally:
            if pull is not None and leaders[pull.key] is plan:
                gates[pull.key].set()
        return None

    # Each instance's LXD operations wait on the server; a bounded pool runs them side by side.
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(plans) or 1))) as pool:
        outcomes = list(pool.map(apply, plans.values()))
    return {key: outcome for key, outcome in zip(plans, outcomes) if outcome is not None}


def pull_gates(plans: Iterable[InstancePlan]) -> tuple[dict[tuple[str, str], InstancePlan],
                                                       dict[tuple[str, str], threading.Event]]:
    """For each image download of the batch (ImagePull.key), the plan that does it (the first in
    order) and the event set once its creation has ended. The pool starts plans in order, so a
    leader is always running before one of its followers waits."""
    leaders: dict[tuple[str, str], InstancePlan] = {}
    for plan in plans:
        if plan.facts.pull is not None:
            leaders.setdefault(plan.facts.pull.key, plan)
    return leaders, {key: threading.Event() for key in leaders}


def _use_pulled_image(api: LxdApi, plan: InstancePlan) -> None:
    # The image the first instance pulled is now on the server: no second download, nor a second
    # look at the image server. If it is not there (that pull failed), this one pulls it itself.
    pull = plan.facts.pull
    if pull is None or plan.create is None:
        return
    try:
        api.get(f"images/{pull.fingerprint}")
    except NotFoundError:
        return
    plan.create["source"] = {"type": "image", "fingerprint": pull.fingerprint}


LOCK_WAIT_SECONDS = 600
LOCK_DIR_NAME = "mage-lxd"


@contextmanager
def batch_lock(remote: Remote, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """One batch at a time per LXD server and controller user: two runs converging the same
    instances would otherwise interleave (one then fails with 'Instance is busy running a "create"
    operation'). Keyed by where the server is (the resolved socket path or the URL), so two
    spellings of one server share the lock.

    The lock file is in a directory only this user can reach (lock_directory): a lock any local
    user could open is one any local user could hold, and every run would wait `wait` seconds and
    fail. Runs of different users are not serialized by it."""
    where = remote.url if remote.is_https else local_socket_path(remote.url)
    name = f"{hashlib.sha256(where.encode()).hexdigest()[:16]}.lock"
    directory, directory_fd = lock_directory(remote)
    path = os.path.join(directory, name)
    try:
        handle = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory_fd)
    except OSError as exc:
        raise RemoteError(f"the lock file {path} for LXD remote {remote.describe()} cannot be opened ({exc}). "
                          "Fix: remove it; it must be a regular file of this user.") from exc
    finally:
        os.close(directory_fd)
    try:
        deadline = time.monotonic() + wait
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise RemoteError(f"another run of this user has converged instances on LXD remote {remote.describe()} "
                                  f"for more than {wait:g}s (it holds {path}). Fix: wait for it to finish, then rerun.")
            time.sleep(0.2)
        yield
    finally:
        os.close(handle)


def lock_directory(remote: Remote) -> tuple[str, int]:
    """The directory of this user's batch locks and an open descriptor of it: $XDG_RUNTIME_DIR/mage-lxd
    when that runtime directory is this user's own and closed to others, else ~/.cache/mage-lxd.
    Created 0700; refused (RemoteError) when it is a symlink, not this user's, or open to others."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = runtime if runtime and _private_directory(runtime) else os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, LOCK_DIR_NAME)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        # Opened without following a link, then checked by its descriptor: no swap in between.
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RemoteError(f"the lock directory {directory} for LXD remote {remote.describe()} cannot be used ({exc}). "
                          "Fix: remove it if it is a symlink, or set HOME (or XDG_RUNTIME_DIR) to a directory of "
                          "this user.") from exc
    problem = directory_problem(os.fstat(fd), os.getuid())
    if problem:
        os.close(fd)
        raise RemoteError(f"the lock directory {directory} for LXD remote {remote.describe()} {problem}: another "
                          "user could hold or swap the lock. Fix: remove it (mage-lxd creates it again, mode 0700), "
                          "or chmod 0700 it if it is yours.")
    return directory, fd


def directory_problem(info: os.stat_result, uid: int) -> str:
    """Why a lock directory with stat `info` is unsafe for user `uid` ('' when it is safe)."""
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != uid:
        return f"belongs to uid {info.st_uid}, not to this user (uid {uid})"
    if info.st_mode & 0o022:
        return f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return ""


def _private_directory(path: str) -> bool:
    try:
        return not directory_problem(os.lstat(path), os.getuid())
    except OSError:
        return False


def _try_lock(handle: int) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
