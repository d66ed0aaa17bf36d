# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd_sites
short_description: Plan mageproxy's nginx sites from the inventory, validating every value
description:
  - Takes C(hostvars) and the hosts to publish (default group C(lxd)) and returns the sites the
    C(templates/mageproxy) templates render; each host contributes its C(lxd_mage.proxy) routes, its
    C(lxd_address) and C(lxd_status) (stopped instances are left out of upstreams).
  - Every value that reaches nginx config is checked by allow-list first; a bad value or a duplicate
    route fails with an error naming the instance and the route, before anything is changed.
positional: hosts
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  hosts:
    description: Inventory host names whose routes are published.
    type: list
    elements: str
    required: true
author: mage-lxd developers (!UNKNOWN)
"""

EXAMPLES = r"""
mageproxy_sites: "{{ hostvars | mage_lxd_sites(groups['lxd']) }}"
"""

RETURN = r"""
_value:
  description: Sites, each with server_name, tls and locations (path, upstream, route settings, backends).
  type: list
  elements: dict
"""

from dataclasses import asdict

from ansible.errors import AnsibleFilterError

try:
    from mage_lxd.plugin_errors import raised_as
    from mage_lxd.routes import plan_sites
except ImportError as exc:
    # Reported when the plugin is used, so ansible-doc and every other plugin keep working.
    MAGE_LXD_MISSING = (f"the mage-lxd Python package is missing from the Python that runs Ansible ({exc}). "
                        "Fix: pip install the mage-lxd wheel built with this collection")
else:
    MAGE_LXD_MISSING = None


def mage_lxd_sites(hostvars, hosts):
    """Sites for the mageproxy templates (see DOCUMENTATION)."""
    if MAGE_LXD_MISSING:
        raise AnsibleFilterError(MAGE_LXD_MISSING)
    described = []
    for name in hosts:
        host = hostvars[name]
        described.append({
            "name": str(host.get("mage_lxd_instance", name)),
            "status": str(host.get("lxd_status", "")),
            "address": str(host.get("lxd_address", "")),
            "routes": (host.get("lxd_mage") or {}).get("proxy") or [],
        })
    with raised_as(AnsibleFilterError):
        return [asdict(site) for site in plan_sites(described)]


class FilterModule:
    def filters(self):
        return {"mage_lxd_sites": mage_lxd_sites}
