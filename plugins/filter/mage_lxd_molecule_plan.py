# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd_molecule_plan
short_description: Molecule platforms as mage_lxd_instance entries, in a project of the scenario run's own
description:
  - Used by the role C(mage.lxd.molecule) (its C(create) entry point); see C(ansible-doc -t role mage.lxd.molecule).
  - Names the run's project (O(prefix), the scenario's name made fit for LXD, C(-) and O(suffix); at most
    63 characters), or keeps O(recorded). Each platform keeps the keys that describe an instance (C(name),
    C(image), C(image_server), C(profiles), C(config), C(devices), C(mounts), C(type), C(target),
    C(ephemeral), C(project)) and goes in the run's project unless it names its own.
  - The instance is named C(PLATFORM-SUFFIX) (the project's suffix); the inventory host keeps the
    platform's name. LXD refuses two instances of one name on one bridge, whatever their projects, and
    parallel runs share the bridge.
  - A platform without a name, or two with the same name, fail naming them.
version_added: "0.3.0"
positional: prefix, scenario, suffix, recorded
options:
  _input:
    description: Molecule's platforms (C(molecule_yml.platforms)).
    type: list
    elements: dict
    required: true
  prefix:
    description: Start of the project name.
    type: str
    required: true
  scenario:
    description: The scenario's name.
    type: str
    required: true
  suffix:
    description: The random end of the project name.
    type: str
    required: true
  recorded:
    description: The project an earlier create of this run recorded; used instead of a new name.
    type: str
    default: ""
author: mage-lxd developers (!UNKNOWN)
"""

EXAMPLES = r"""
plan: "{{ molecule_yml.platforms | mage.lxd.mage_lxd_molecule_plan('molecule-', 'default', '3fa9c2d1') }}"
"""

RETURN = r"""
_value:
  description: The run's plan.
  type: dict
  contains:
    project:
      description: The run's project.
      type: str
    instances:
      description: The O(mage.lxd.mage_lxd_instance#module:instances) entries.
      type: list
      elements: dict
    hosts:
      description: Instance name to platform name (the inventory host).
      type: dict
    record:
      description: What destroy reads (C(project), and C(name) and C(project) of each instance).
      type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mage.lxd.plugins.plugin_utils.molecule import plan_run
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as


def mage_lxd_molecule_plan(platforms, prefix, scenario, suffix, recorded=""):
    """The run's project and instances (see DOCUMENTATION)."""
    with raised_as(AnsibleFilterError):
        return plan_run(platforms, str(prefix), str(scenario), str(suffix), str(recorded or ""))


class FilterModule:
    def filters(self):
        return {"mage_lxd_molecule_plan": mage_lxd_molecule_plan}
