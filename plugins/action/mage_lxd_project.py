# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: library/mage_lxd_project.py (ansible-doc -t module mage_lxd_project).
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.mage.lxd.plugins.action.mage_lxd_instance import documented_options, validated
from ansible_collections.mage.lxd.plugins.plugin_utils.argspec import argument_spec
from ansible_collections.mage.lxd.plugins.plugin_utils.batch import batch_lock
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.project_removal import (
    apply_removal, plan_removal, read_project_contents,
)
from ansible_collections.mage.lxd.plugins.plugin_utils.projects import (
    apply_project_plan, check_project_name, plan_projects, read_project_state,
)
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import remote_from_task_args

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        check_mode = bool(self._task.check_mode)
        with raised_as(AnsibleActionFail):
            args = validated(argument_spec(documented_options("mage.lxd.mage_lxd_project")), dict(self._task.args),
                             "mage_lxd_project")
            if args.get("project") is not None:
                raise OptionError("mage_lxd_project: the project is O(name); project is not an option here. "
                                  "Fix: write name: PROJECT")
            name = check_project_name(args.get("name"), "mage_lxd_project name")
            remote = remote_from_task_args(args, where="mage_lxd_project remote")
            api = LxdApi(remote, log=display.vvv)
            with batch_lock(remote):
                if args.get("state", "present") == "absent":
                    removal = plan_removal(read_project_contents(api, name))
                    if not check_mode:
                        apply_removal(api, removal)
                    actions = [f"deleted instance {item}" for item in removal.instances]
                    actions += [f"deleted profile {item}" for item in removal.profiles]
                    actions += [f"deleted image {item}" for item in removal.images]
                    actions += [f"deleted volume {pool}/{item}" for pool, item in removal.volumes]
                    actions += [f"deleted project {name}"] if removal.project else []
                    return {"changed": removal.changed, "actions": actions, "deleted": removal.as_dict(), "cli": api.kind.cli}
                [plan] = plan_projects([read_project_state(api, name)], [], [], create_project=True)
                if not check_mode:
                    apply_project_plan(api, plan)
                cli = api.kind.cli
        for warning in plan.warnings:
            display.warning(warning)
        return {"changed": plan.changed, "actions": plan.actions(), "cli": cli}
