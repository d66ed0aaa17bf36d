#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the work is done on the controller by action_plugins/mage_lxd_config.py.
# The boilerplate ansible-test (up to 2.16) wants in every module file, even a documentation-only one.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mage_lxd_config
short_description: Apply config files to a service in an LXD instance, tested, reloaded, rolled back on failure
description:
  - Compares O(files) with what the instance holds through the LXD files API; when nothing differs it
    does nothing at all (no command runs, no reload).
  - Otherwise runs O(prepare), writes the changed files, runs O(test) and O(reload); if any step fails
    the previous files are put back, O(undo_prepare) runs, and the task fails naming the step and what
    the service said. The service keeps its running configuration throughout.
  - Works through the task's own mage_lxd connection (the host must be an LXD instance reached with
    C(ansible_connection=mage_lxd)); playbooks/proxy.yml uses it for mageproxy's nginx.
version_added: "0.1.0"
author: mage-lxd developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reports which files would change; changes nothing.
  diff_mode:
    support: full
    description: Before/after text of each changed file.
options:
  files:
    description: Absolute path in the instance to the full text it must hold (written mode 0644, owner root).
    type: dict
    required: true
  prepare:
    description: Shell command run before the files are written (only when something changed).
    type: str
  test:
    description: Shell command that must succeed with the new files in place, e.g. C(nginx -t).
    type: str
  reload:
    description: Shell command that makes the service use them, e.g. C(nginx -s reload).
    type: str
  undo_prepare:
    description: Shell command run after the files were put back, to undo O(prepare).
    type: str
"""

EXAMPLES = r"""
- name: nginx config, tested whole before it goes live
  mage_lxd_config:
    files:
      /etc/nginx/conf.d/site.conf: "{{ lookup('ansible.builtin.template', 'site.conf.j2') }}"
    test: nginx -t
    reload: nginx -s reload
"""

RETURN = r"""
files:
  description: The paths that changed (or would, in check mode).
  returned: always
  type: list
  elements: str
"""
