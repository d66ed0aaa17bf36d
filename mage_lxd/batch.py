"""Converge a whole declaration: its projects and profiles first, then its instances side by side.

Everything that can refuse the batch (options, missing projects or profiles) does so before the
first write; in check mode nothing is written and instances of a project the run would create are
reported as created.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mage_lxd.errors import MageLxdError, OptionError
from mage_lxd.instance_spec import InstanceSpec
from mage_lxd.projects import ProfileSpec, apply_project_plan, plan_projects, read_project_state
from mage_lxd.provision import converge, preview_in_new_project
from mage_lxd.remote import Log, LxdApi, Remote, _no_log


@dataclass(frozen=True)
class BatchOptions:
    """How the batch runs: what it may create, how many instances at once, and how long LXD may take."""

    profiles: Sequence[ProfileSpec] = ()
    create_project: bool = True
    check_mode: bool = False
    forks: int = 4
    operation_timeout: float = 300.0


def converge_batch(
    remote: Remote, specs: Sequence[InstanceSpec], options: BatchOptions, log: Log = _no_log
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (projects, instances) as the task reports them. Project and profile refusals raise
    before any change; an instance that fails is reported in its entry (failed, msg)."""
    if options.forks < 1 or not 0 < options.operation_timeout < float("inf"):
        raise OptionError("mage_lxd_instance: forks must be 1 or more, operation_timeout a finite number of seconds "
                          f"above 0 (got {options.forks}, {options.operation_timeout})")
    timeout = (remote.timeout, options.operation_timeout)
    api = LxdApi(remote, log=log, timeout=timeout)
    # A project only absent instances name needs nothing: there is nothing to delete in it.
    names = sorted({spec.project for spec in specs if spec.state != "absent"})
    plans = plan_projects([read_project_state(api, name) for name in names], specs, options.profiles,
                          options.create_project)
    if not options.check_mode:
        for plan in plans:
            apply_project_plan(api, plan)
    new_projects = {plan.name for plan in plans if plan.create}

    def one(spec: InstanceSpec) -> dict[str, Any]:
        try:
            if options.check_mode and spec.project in new_projects:
                return preview_in_new_project(LxdApi(remote, log=log, project="default", timeout=timeout), spec).as_dict()
            instance_api = LxdApi(remote, log=log, project=spec.project, timeout=timeout)
            return converge(instance_api, spec, check_mode=options.check_mode).as_dict()
        except MageLxdError as exc:
            return {"name": spec.name, "project": spec.project, "failed": True, "msg": str(exc)}

    # Each instance's LXD operations wait on the server; a bounded pool runs them side by side.
    with ThreadPoolExecutor(max_workers=max(1, min(options.forks, len(specs)))) as pool:
        instances = list(pool.map(one, specs))
    projects = [plan.as_dict() | {"diff": plan.diffs()} for plan in plans]
    return projects, instances
