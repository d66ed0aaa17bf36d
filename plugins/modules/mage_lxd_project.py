#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the work is done on the controller by action_plugins/mage_lxd_project.py.
# The boilerplate ansible-test (up to 2.16) wants in every module file, even a documentation-only one.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mage_lxd_project
short_description: Create an LXD project ready for instances, or delete one with everything in it
description:
  - V(present) creates the project when it is missing, as M(mage.lxd.mage_lxd_instance) does with
    O(mage.lxd.mage_lxd_instance#module:create_project) (the default project's images, profiles of its
    own, its C(default) profile filled with the default project's root disk and NICs).
  - V(absent) deletes the project and everything LXD would refuse to delete it with - its instances
    (running ones stopped first, without waiting for a clean shutdown), its profiles, and, where the
    project has them of its own, its images and custom storage volumes. A missing project is no change.
  - The Molecule playbooks of this collection (C(mage.lxd.molecule_create), C(mage.lxd.molecule_destroy))
    use it for the project of each scenario run.
  - Runs on the controller (an action plugin); it shares mage_lxd_instance's lock, so runs on the same
    server from this controller never interleave.
  - Without O(url), the server comes from C(MAGE_LXD_URL) (and its certificates' variables), else the
    C(lxc) or C(incus) client's remote O(remote) names (its C(config.yml) - URL, pinned server certificate,
    client pair; explicit options win), else the local socket.
version_added: "0.3.0"
author: mage-lxd developers (!UNKNOWN)
extends_documentation_fragment:
  - mage.lxd.mage_lxd.module
attributes:
  check_mode:
    support: full
    description: Reports what would be created or deleted and changes nothing.
  diff_mode:
    support: none
    description: Not supported.
options:
  name:
    description: The project. V(default) cannot be deleted. (O(project) is not used by this module.)
    type: str
    required: true
  state:
    description: Whether the project exists.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: A project for a test run
  mage.lxd.mage_lxd_project:
    name: ci-1234

- name: Gone, with every instance and profile in it
  mage.lxd.mage_lxd_project:
    name: ci-1234
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [deleted instance web, deleted project ci-1234]
cli:
  description: The server's own command line client, C(lxc) or C(incus) (for hints and login commands).
  returned: always
  type: str
  sample: lxc
deleted:
  description: What V(absent) deleted (or would delete); C(project) is null when there was none.
  returned: when state is absent
  type: dict
  sample: {project: ci-1234, instances: [web], profiles: [], images: [], volumes: []}
"""
