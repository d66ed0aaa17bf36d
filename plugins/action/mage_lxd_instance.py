# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: library/mage_lxd_instance.py (ansible-doc -t module mage_lxd_instance).
from __future__ import annotations

from functools import lru_cache

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import fragment_loader, module_loader
from ansible.utils.display import Display
from ansible.utils.plugin_docs import get_docstring

from ansible_collections.mage.lxd.plugins.plugin_utils.argspec import argument_spec, given
from ansible_collections.mage.lxd.plugins.plugin_utils.batch import batch_options, converge_batch
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import MageLxdError, OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import added_host
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import check_unique_host_ports, check_unique_names, parse_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import REMOTE_OPTIONS, remote_from_task_args

display = Display()

# Options of the task as a whole; every other documented option describes an instance, and in the
# list form is a default for each entry of `instances`.
TASK_ONLY = ("instances", "groups", "forks", "operation_timeout", "create_project", "project_profiles",
             "allow_unsafe", "remote", *REMOTE_OPTIONS)


@lru_cache(maxsize=2)
def documented_options(name):
    """The options of the module `name` documents (library/mage_lxd_instance.py), fragments merged in."""
    found = module_loader.find_plugin_with_context(name)
    return get_docstring(found.plugin_resolved_path, fragment_loader)[0]["options"]


def validated(spec, values, where):
    """`values` checked and converted by Ansible's validator; errors name `where` and each option."""
    result = ArgumentSpecValidator(spec).validate(values)
    if result.error_messages:
        raise OptionError(f"{where}: {'; '.join(result.error_messages)}")
    return given(result.validated_parameters)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        with raised_as(AnsibleActionFail):
            args = validated(argument_spec(self._options()), dict(self._task.args), "mage_lxd_instance")
            remote = remote_from_task_args(args, where="mage_lxd_instance remote")
            if args.get("project") is None and remote.project:
                # The CLI remote's project is the task's default, as an explicit project would be.
                args["project"] = remote.project
            specs = self._specs(args)
            # Progress at default verbosity: a pull can take minutes, and the user should see it move.
            options = batch_options(args, check_mode=bool(self._task.check_mode), progress=display.display)
            batch = converge_batch(remote, specs, options, log=display.vvv)
        for warning in batch.warnings:
            display.warning(warning)
        return self._report(batch.projects, batch.instances, remote, args, "instances" in args, task_vars or {},
                            batch.nat_removed)

    def _options(self):
        return documented_options("mage.lxd.mage_lxd_instance")

    def _specs(self, args):
        instance_spec = argument_spec(self._options(), leave_out=TASK_ONLY)
        # Task-level options are defaults for every entry of `instances` (the seed's list form).
        defaults = {key: value for key, value in args.items() if key in instance_spec and key != "name"}
        if "instances" in args:
            if "name" in args:
                raise MageLxdError("mage_lxd_instance: give either name or instances, not both")
            # A bare name stands for {name: NAME} (handy with state: absent).
            entries = [{"name": entry} if isinstance(entry, str) else entry for entry in args["instances"] or []]
            if not all(isinstance(entry, dict) for entry in entries):
                raise MageLxdError("mage_lxd_instance: instances must be a list of mappings or names")
            entries = [validated(instance_spec, entry, f"mage_lxd_instance: instances[{index}]"
                                 + (f" ({entry['name']})" if entry.get("name") else ""))
                       for index, entry in enumerate(entries)]
        else:
            entries = [{"name": args.get("name")}]
        specs = [parse_spec(entry, defaults) for entry in entries]
        check_unique_names(specs)
        check_unique_host_ports(specs)
        return specs

    def _report(self, projects, results, remote, args, as_list, task_vars, nat_removed=()):
        groups = list(args.get("groups") or ["lxd"])
        known_hosts = (task_vars.get("groups") or {}).get("all", [])
        for item in results:
            # hostvars of a host outside the inventory cannot even be looked up.
            known = task_vars["hostvars"][item["name"]] if item.get("name") in known_hosts else None
            added = added_host(item, remote, groups, known)
            if added:
                item["add_host"] = added
            for warning in item.get("warnings") or []:
                display.warning(warning)
        for project in projects:
            for warning in project["warnings"]:
                display.warning(warning)
        failed = [item for item in results if item.get("failed")]
        project_diffs = [diff for project in projects for diff in project.pop("diff")]
        report = {"changed": any(item.get("changed") for item in [*projects, *results])}
        if as_list:
            report["instances"] = results
            report["diff"] = project_diffs + [item["diff"] for item in results if "diff" in item]
        else:
            report.update(results[0])
            if project_diffs:
                report["diff"] = project_diffs + ([results[0]["diff"]] if "diff" in results[0] else [])
            report["changed"] = report["changed"] or any(project["changed"] for project in projects)
        report["projects"] = projects
        # Rules of instances that are gone, removed by this run (or, in check mode, that it would remove).
        report["nat_removed"] = list(nat_removed)
        report["changed"] = report["changed"] or bool(report["nat_removed"])
        # ansible-core 2.21 no longer reads add_host from an action's result: actions call add_host().
        if "add_host" in report and callable(getattr(self, "add_host", None)):
            added = report["add_host"]
            self.add_host(added["host_name"], host_vars=added["host_vars"], parent_group_names=added["groups"])
        if failed:
            report["failed"] = True
            report["msg"] = "; ".join(item["msg"] for item in failed)
        return report
