# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd_bool
short_description: Read a boolean the way every mage.lxd option reads one
description:
  - Returns V(true) or V(false) for Ansible's boolean spellings (V(true)/V(false), V(yes)/V(no), V(on)/V(off),
    V(1)/V(0), V(y)/V(n), V(t)/V(f), and booleans), on every ansible-core version; anything else fails
    naming O(name), with the message the collection's modules and routes give.
  - The mageproxy role reads its boolean variables with it, so C(mageproxy_ipv6=no) from C(-e) means no.
positional: name
options:
  _input:
    description: The value.
    type: raw
    required: true
  name:
    description: The variable or option the value belongs to, for the message.
    type: str
    required: true
version_added: "0.3.0"
author: mage-lxd developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Listen on IPv6 unless told otherwise
  ansible.builtin.debug:
    msg: "{{ 'IPv6 too' if mageproxy_ipv6 | mage.lxd.mage_lxd_bool('mageproxy_ipv6') else 'IPv4 only' }}"
"""

RETURN = r"""
_value:
  description: The boolean.
  type: bool
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.values import parse_bool


def mage_lxd_bool(value, name):
    """`value` as a boolean (see DOCUMENTATION)."""
    with raised_as(AnsibleFilterError):
        return parse_bool(value, str(name))


class FilterModule:
    def filters(self):
        return {"mage_lxd_bool": mage_lxd_bool}
