# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation: library/mage_lxd_config.py (ansible-doc -t module mage_lxd_config).
from __future__ import annotations

import re

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.mage.lxd.plugins.plugin_utils.config_apply import Sections, ServiceCommands, apply_config
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as

COMMANDS = frozenset({"prepare", "test", "reload", "undo_prepare", "running", "start", "probe", "functions"})
ARGS = COMMANDS | {"files", "record", "modes", "require", "require_pem", "sections", "section_owners"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        args = dict(self._task.args)
        with raised_as(AnsibleActionFail):
            unknown = sorted(set(args) - ARGS)
            if unknown:
                raise OptionError(f"mage_lxd_config: unknown option(s) {', '.join(unknown)}")
            files = args.get("files") or {}
            if not isinstance(files, dict) or not all(isinstance(text, str) for text in files.values()):
                raise OptionError("mage_lxd_config: files must map absolute paths to their text")
            record = str(args.get("record") or "")
            if not all(str(path).startswith("/") for path in [*files, *([record] if record else [])]):
                raise OptionError("mage_lxd_config: every path in files, and record, must be absolute")
            modes = _modes(args.get("modes") or {})
            required = args.get("require") or {}
            if not isinstance(required, dict) or not all(str(path).startswith("/") for path in required):
                raise OptionError("mage_lxd_config: require must map absolute paths to who needs them")
            # The task's own connection already knows the instance, its project and its remote.
            channel = getattr(self._connection._connect(), "_channel", None)
            if channel is None:
                raise OptionError("mage_lxd_config works through the mage_lxd connection (ansible_connection: mage_lxd)")
            pem = args.get("require_pem") or {}
            if not isinstance(pem, dict) or not set(pem) <= set(required) or \
                    not all(isinstance(label, str) and re.fullmatch(r"[A-Z0-9 ]{1,40}", label) for label in pem.values()):
                raise OptionError("mage_lxd_config: require_pem must map paths of require to a PEM label such as CERTIFICATE")
            sections = None
            if args.get("sections"):
                owners = args.get("section_owners") or {}
                if str(args["sections"]) not in files or not isinstance(owners, dict):
                    raise OptionError("mage_lxd_config: sections must be a path of files, section_owners a dict "
                                      "of section labels to who they are")
                sections = Sections(str(args["sections"]), {str(label): str(who) for label, who in owners.items()})
            commands = ServiceCommands(**{key: str(args.get(key) or "") for key in COMMANDS})
            applied = apply_config(channel, files, commands, check_mode=bool(self._task.check_mode),
                                   record_path=record, modes=modes,
                                   required={str(path): str(who) for path, who in required.items()},
                                   pem={str(path): label for path, label in pem.items()}, sections=sections)
        changed = bool(applied.changed or applied.actions)
        result = {"changed": changed, "files": applied.changed, "actions": applied.actions, "diff": applied.diff,
                  "msg": applied.msg or ("; ".join(applied.actions) if applied.actions else ""),
                  "left_out": applied.left_out}
        if applied.left_out:
            result["warnings"] = list(applied.left_out)
        return result


def _modes(raw):
    """{path: '0600'} as {path: 0o600}; octal text only, so YAML's 0600 (an int 384) is refused."""
    if not isinstance(raw, dict) or not all(isinstance(mode, str) and len(mode) == 4 and
                                            set(mode) <= set("01234567") for mode in raw.values()):
        raise OptionError("mage_lxd_config: modes must map paths to quoted octal modes such as '0600'")
    return {str(path): int(mode, 8) for path, mode in raw.items()}
