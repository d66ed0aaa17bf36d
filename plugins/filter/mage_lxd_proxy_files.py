# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd_proxy_files
short_description: The certificates, keys and htpasswd files mageproxy's sites need, checked before they go live
description:
  - Takes the sites that need files (C(needs_files) of the mage_lxd_sites plan) and the controller's certificates and htpasswd users, and returns
    the files to write into mageproxy with their modes (keys C(0600), htpasswd C(0640)).
  - "A site whose routes say C(tls: provided) needs O(certificates[server name]); the key must match the
    certificate, the certificate must be valid now and name the server. A route whose C(htpasswd) is a name
    needs O(htpasswd[name]), a list of C(user:hash) lines. Anything missing or wrong fails naming the
    server or set, before anything is changed."
positional: certificates, htpasswd, acme
options:
  _input:
    description: C(needs_files) of the plan returned by the mage_lxd_sites filter (sites with TLS or htpasswd).
    type: list
    elements: dict
    required: true
  certificates:
    description: Server name to C({cert, key}) PEM text (a file lookup or a vault variable).
    type: dict
    default: {}
  htpasswd:
    description: Set name to its C(user:hash) lines.
    type: dict
    default: {}
  acme:
    description:
      - For sites whose routes say C(tls=acme) (server, email, days, ca_bundle); each value is allow-listed,
        since mage-acme sources the file they land in.
    type: dict
    default: {}
version_added: "0.2.0"
author: mage-lxd developers (!UNKNOWN)
requirements:
  - "cryptography >= 3.4 in the Python that runs Ansible (the collection's C(requirements.txt)), for sites whose routes say C(tls: provided)"
"""

EXAMPLES = r"""
- name: The files the planned sites need, checked before anything is written
  ansible.builtin.set_fact:
    mageproxy_files: >-
      {{ mageproxy_plan.needs_files | mage.lxd.mage_lxd_proxy_files(
           {'shop.example.org': {'cert': lookup('ansible.builtin.file', 'shop.crt'), 'key': vault_shop_key}},
           {'staff': ['alice:$2y$05$...']}) }}
"""

# tests/unit/plugins/test_plugin_docs.py compares these keys with what the filter returns.
RETURN = r"""
_value:
  description: The files and their modes.
  type: dict
  contains:
    files:
      description: Path on mageproxy to its text.
      type: dict
      sample: {/etc/nginx/mage-lxd/htpasswd/staff: "alice:$2y$05$..."}
    modes:
      description: Path to an octal mode for files that must not be 0644.
      type: dict
      sample: {/etc/nginx/mage-lxd/htpasswd/staff: "0640"}
    acme:
      description: Whether any site uses ACME (mage-acme and its timer are then needed).
      type: bool
      sample: false
    required:
      description: Files the routes name that must already be on mageproxy, each to the route naming it.
      type: dict
      sample: {}
    pem:
      description: Of those, the ones that must hold a PEM block, each to its label (CERTIFICATE, PRIVATE KEY).
      type: dict
      sample: {}
"""

from dataclasses import asdict

from ansible.errors import AnsibleFilterError

from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.proxy_files import plan_proxy_files


def mage_lxd_proxy_files(sites, certificates=None, htpasswd=None, acme=None):
    """The files `sites` need (see DOCUMENTATION)."""
    with raised_as(AnsibleFilterError):
        return asdict(plan_proxy_files(sites or [], certificates or {}, htpasswd or {}, acme=acme or {}))


class FilterModule:
    def filters(self):
        return {"mage_lxd_proxy_files": mage_lxd_proxy_files}
