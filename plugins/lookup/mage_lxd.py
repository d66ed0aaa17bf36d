# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd
short_description: Read LXD instances (data, addresses, config) from templates and tasks
description:
  - Returns, for each term (an instance name or a shell-style pattern such as C(web*)), the matching
    instances of O(project) as the mage_lxd inventory describes them (its C(lxd_*) variables,
    without the prefix C(lxd_)), or one O(key) of them.
  - One snapshot of the API per call, whatever the number of terms. Everything returned is marked
    unsafe, so nothing read from LXD is ever templated.
  - A term that matches no instance is an error naming the project and remote, unless O(default) is set.
version_added: "0.2.0"
author: mage-lxd developers (!UNKNOWN)
extends_documentation_fragment:
  - mage.lxd.mage_lxd
options:
  _terms:
    description: Instance names or patterns.
    required: true
    type: list
    elements: str
  key:
    description:
      - Return only this value of each instance, e.g. C(ipv4) (all IPv4 addresses, flattened), C(address),
        C(status), C(config), C(profiles), C(location), C(mage) (what mage-lxd recorded, such as C(proxy) and C(nat)).
    type: str
  default:
    description: Returned for a term that matches no instance, instead of failing.
    type: raw
"""

EXAMPLES = r"""
- name: Everything about web1
  ansible.builtin.debug:
    msg: "{{ lookup('mage.lxd.mage_lxd', 'web1') }}"

- name: IPv4 addresses of every web container, in project shop
  ansible.builtin.debug:
    msg: "{{ query('mage.lxd.mage_lxd', 'web*', key='ipv4', project='shop') }}"

- name: An instance that may not exist yet
  ansible.builtin.debug:
    msg: "{{ lookup('mage.lxd.mage_lxd', 'db1', key='address', default='') }}"

- name: The web routes mage_lxd_instance recorded in web1
  ansible.builtin.debug:
    msg: "{{ lookup('mage.lxd.mage_lxd', 'web1', key='mage').proxy | default([]) }}"
"""

# The keys are the mage_lxd inventory's lxd_* variables without the prefix; the unit test
# tests/unit/plugins/test_plugin_docs.py compares them with what the lookup returns for recorded answers.
RETURN = r"""
_raw:
  description:
    - One entry per matching instance, term by term.
    - Without O(key), a dict of the instance, as below. With O(key), that value of each instance;
      C(ipv4) and C(ipv6) then give one flat list of addresses for all instances.
    - O(default) for a term that matches no instance.
  type: list
  elements: raw
  contains:
    name:
      description: The instance's name.
      type: str
      sample: web1
    project:
      description: Its LXD project.
      type: str
      sample: default
    remote:
      description: The name of the remote (O(remote)).
      type: str
      sample: local
    status:
      description: Its status, lower case (C(running), C(stopped), C(frozen), C(error)).
      type: str
      sample: running
    type:
      description: C(container) or C(virtual-machine).
      type: str
      sample: container
    profiles:
      description: Its profiles, in order.
      type: list
      elements: str
      sample: [default, web]
    location:
      description: The cluster member it is on, as LXD says (C(none) off a cluster).
      type: str
      sample: none
    location_status:
      description: That member's status on a cluster (C(online), C(offline), C(evacuated)); empty off a cluster.
      type: str
      sample: ""
    architecture:
      description: Its architecture.
      type: str
      sample: x86_64
    description:
      description: Its description (unsafe text, never templated).
      type: str
      sample: ""
    ephemeral:
      description: Whether it is ephemeral.
      type: bool
      sample: false
    created_at:
      description: When it was created, as LXD says.
      type: str
      sample: "2026-11-25T02:57:30.689025245Z"
    image_os:
      description: C(image.os) of its config.
      type: str
      sample: debian
    image_release:
      description: C(image.release) of its config.
      type: str
      sample: bookworm
    image_description:
      description: C(image.description) of its config.
      type: str
      sample: Debian bookworm amd64
    networks:
      description: The networks (or parent interfaces) its NICs are on.
      type: list
      elements: str
      sample: [lxdbr0]
    ipv4:
      description: Its global IPv4 addresses by interface (O(key=ipv4) flattens them).
      type: dict
      sample: {eth0: [10.187.33.196]}
    ipv6:
      description: Its global IPv6 addresses by interface.
      type: dict
      sample: {}
    address:
      description:
        - Its preferred address, one a managed network vouches for first (see the inventory's C(lxd_address)); empty
          when it has none.
      type: str
      sample: 10.187.33.196
    address_network:
      description: The managed network whose subnet holds C(address); empty when no managed network vouches for it.
      type: str
      sample: magebr0
    config:
      description: Its config, without C(volatile.*), C(image.*) and C(user.mage.*) keys.
      type: dict
      sample: {user.role: frontend}
    mage:
      description: What mage-lxd recorded in its C(user.mage.*) config (JSON decoded), such as C(proxy) and C(nat).
      type: dict
      sample: {nat: [{extport: 8080, intport: 80, proto: tcp}], proxy: [{name: web1.example.org, path: /, pass: 8080}]}
"""

import fnmatch

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import InventoryOptions, describe_instance
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import remote_from_options
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import take_snapshot

display = Display()
NO_DEFAULT = object()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        key = self.get_option("key")
        default = kwargs.get("default", NO_DEFAULT)
        with raised_as(AnsibleLookupError):
            remote = remote_from_options(self.get_option, where="mage_lxd lookup remote")
            project = self.get_option("project") or remote.project or "default"
            snapshot = take_snapshot(LxdApi(remote, log=display.vvv), [project])
            described = []
            for item in snapshot["instances"]:
                variables, warnings = describe_instance(item, remote, InventoryOptions(), snapshot["server"]["cli"])
                described.append(variables)
                for warning in warnings:
                    display.warning(f"mage_lxd lookup: {warning}")
            found = []
            for term in terms:
                matches = [item for item in described if fnmatch.fnmatchcase(item["lxd_name"], str(term))]
                if not matches:
                    if default is NO_DEFAULT:
                        raise OptionError(
                            f"mage_lxd lookup: no instance matches '{term}' in project '{project}' on "
                            f"{remote.describe_as()}; give default= to accept that"
                        )
                    found.append(default)
                    continue
                for item in matches:
                    picked = _pick(item, key)
                    # Addresses come back as one flat list, whatever the number of instances.
                    found.extend(picked) if key in ("ipv4", "ipv6") else found.append(picked)
        return wrap_var(found)


def _pick(variables, key):
    data = {name.removeprefix("lxd_"): value for name, value in variables.items() if name.startswith("lxd_")}
    if key is None:
        return data
    if key in ("ipv4", "ipv6"):
        return [address for addresses in data[key].values() for address in addresses]
    if key not in data:
        raise OptionError(f"mage_lxd lookup: unknown key '{key}'; known: {', '.join(sorted(data))}")
    return data[key]
