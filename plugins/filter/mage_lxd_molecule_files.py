# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd_molecule_files
short_description: What Molecule and Ansible read about the instances a Molecule create made
description:
  - Used by the role C(mage.lxd.molecule) (its C(create) entry point); see C(ansible-doc -t role mage.lxd.molecule).
  - Takes the C(instances) results of mage.lxd.mage_lxd_instance and returns Molecule's instance config
    (C(instance), the platform's name; C(address); C(connection), mage.lxd.mage_lxd; C(instance_name),
    C(project) and C(cli) for C(login_cmd_template)) and an inventory (each host's C(ansible_connection),
    C(mage_lxd_instance) and C(mage_lxd_project)) for the file written beside Molecule's own inventory.
version_added: "0.3.0"
positional: cli, hosts
options:
  _input:
    description: The C(instances) of a mage_lxd_instance result.
    type: list
    elements: dict
    required: true
  cli:
    description: The server's command line client (C(lxc) or C(incus)), for C(login_cmd_template).
    type: str
    required: true
  hosts:
    description: Instance name to platform name (C(hosts) of the mage_lxd_molecule_plan filter).
    type: dict
    required: true
author: mage-lxd developers (!UNKNOWN)
"""

EXAMPLES = r"""
files: "{{ created.instances | mage.lxd.mage_lxd_molecule_files('lxc', plan.hosts) }}"
"""

RETURN = r"""
_value:
  description: The two files' contents.
  type: dict
  contains:
    instance_config:
      description: Molecule's instance config entries.
      type: list
      elements: dict
    inventory:
      description: A YAML inventory giving each host its instance and project.
      type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mage.lxd.plugins.plugin_utils.molecule import molecule_files
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as


def mage_lxd_molecule_files(results, cli, hosts):
    """The instance config and inventory (see DOCUMENTATION)."""
    with raised_as(AnsibleFilterError):
        return molecule_files(results, str(cli), {str(key): str(value) for key, value in dict(hosts).items()})


class FilterModule:
    def filters(self):
        return {"mage_lxd_molecule_files": mage_lxd_molecule_files}
