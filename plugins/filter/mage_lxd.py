# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd_sites
short_description: Plan mageproxy's nginx sites and /etc/hosts from the inventory, validating every value
description:
  - Takes C(hostvars) and the hosts to publish, and returns what the C(templates/mageproxy) templates
    render. Each host contributes its C(lxd_mage.proxy) routes, its C(lxd_address), C(lxd_status) and
    C(lxd_project) (stopped instances are left out of upstreams).
  - An undeclared instance whose C(lxd_address_network) is empty (its address is on a NIC of an unmanaged
    network, so only the instance vouches for it) is left out with a warning; mageproxy never sends an
    instance's own record's routes to an address root inside the instance chose.
  - Only hosts in O(projects) are published, so a proxy serves its own project's routes unless it is
    given more; the same host name in two projects then never meets in one proxy.
  - Every value that reaches a file is checked by allow-list first, also the names and addresses read
    from LXD. A bad value or a duplicate route of an instance in O(strict) fails with an error naming
    the instance and the key, before anything is changed. Any other instance (its routes were set out
    of band, not by this run) is left out with a warning naming it and the key; the others go live.
positional: hosts, projects, strict, proxy
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  hosts:
    description: Inventory host names whose routes may be published.
    type: list
    elements: str
    required: true
  projects:
    description: LXD projects whose instances are published; hosts of other projects are ignored.
      Omitted, every project.
    type: list
    elements: str
  strict:
    description: Instances whose routes this run declared, as C(project/name) (or C(name), any project).
      Omitted, every instance is strict.
    type: list
    elements: str
  proxy:
    description: The proxy's own inventory name, for its C(/etc/hosts) (checked as an instance name).
    type: str
  declared:
    description: The routes this run declares, as C(project/name) (or C(name)) to a list of routes;
      those instances are strict too.
    type: dict
version_added: "0.2.0"
author: mage-lxd developers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Plan the routes of project mage-demo for this mageproxy (app1's were declared by this run)
  ansible.builtin.set_fact:
    mageproxy_plan: >-
      {{ hostvars | mage.lxd.mage_lxd_sites(groups['lxd'], ['mage-demo'], ['mage-demo/app1'], inventory_hostname) }}

- name: The server names it will serve
  ansible.builtin.debug:
    msg: "{{ mageproxy_plan.sites | map(attribute='server_name') | list }}"
"""

# tests/unit/plugins/test_plugin_docs.py compares these keys with a plan the filter returns.
RETURN = r"""
_value:
  description: The plan the C(templates/mageproxy) templates render.
  type: dict
  contains:
    sites:
      description: One per server name, in name order.
      type: list
      elements: dict
      contains:
        server_name:
          description: The server name.
          type: str
          sample: web1.example.org
        locations:
          description: Its paths, longest first (the order nginx is given them).
          type: list
          elements: dict
          contains:
            path:
              description: The location's path.
              type: str
              sample: /
            upstream:
              description: Its nginx upstream's name (unique, safe).
              type: str
              sample: mage_web1_example_org_bb7a7a00
            route:
              description: The validated route it comes from, with every setting the templates read
                (instance, server_name, path, port, scheme, prefix, strip_prefix, client_max_body_size,
                websockets, TLS, htpasswd, allow, deny, balance, hsts).
              type: dict
            declared_at:
              description: Where the route was declared, for messages.
              type: str
              sample: "instance 'web1': proxy[0]"
            backends:
              description: The running instances behind it (C(instance), C(address), C(port)); empty, it answers 503.
              type: list
              elements: dict
              sample: [{instance: web1, address: 10.187.33.196, port: 8080}]
        tls_cert:
          description: Path on mageproxy of its certificate; empty without TLS.
          type: str
          sample: ""
        tls_key:
          description: Path on mageproxy of its key; empty without TLS.
          type: str
          sample: ""
        redirect_https:
          description: Whether plain HTTP redirects to HTTPS.
          type: bool
          sample: false
        tls_source:
          description: Where its certificate comes from - C(provided) (the controller), C(acme), C(files) (paths already on mageproxy) - or empty without TLS.
          type: str
          sample: ""
        tls_declared_at:
          description: Where its TLS was declared, for messages.
          type: str
          sample: ""
        hsts:
          description: HSTS max-age in seconds; 0 for none.
          type: int
          sample: 0
    hosts:
      description: C(/etc/hosts) entries (C(address), C(name)) of the instances proxied to.
      type: list
      elements: dict
      sample: [{address: 10.187.33.196, name: web1}]
    warnings:
      description: One per instance left out (also shown as Ansible warnings).
      type: list
      elements: str
      sample: []
    displaced:
      description: The RV(_value.warnings) of undeclared instances left out because a declared instance serves their server name.
      type: list
      elements: str
      sample: []
    proxy_name:
      description: O(proxy), checked.
      type: str
      sample: mageproxy
    needs_files:
      description: The sites (as in RV(_value.sites)) that need files beyond the config (TLS, htpasswd), for mage.lxd.mage_lxd_proxy_files.
      type: list
      elements: dict
    acme:
      description: Whether any site uses C(tls=acme).
      type: bool
      sample: false
    owners:
      description: Server name to the routes that make its site, for the warning when nginx -t refuses that site.
      type: dict
      sample: {web1.example.org: "instance 'web1': proxy[0] web1.example.org/"}
    names_hash:
      description: nginx's C(server_names_hash_bucket_size) and C(_max_size) (C(bucket_size), C(max_size)),
        fit for the longest name and the number of names.
      type: dict
      sample: {bucket_size: 64, max_size: 512}
"""

from dataclasses import asdict

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.proxy_plan import plan_proxy

display = Display()


def mage_lxd_sites(hostvars, hosts, projects=None, strict=None, proxy="", declared=None):
    """The mageproxy plan (see DOCUMENTATION)."""
    described = []
    for name in hosts:
        host = hostvars[name]
        # mage_lxd_project, not lxd_project: `-e lxd_project=X` (site.yml's project) is an extra var,
        # which overrides the inventory's lxd_project on every host.
        project = str(host.get("mage_lxd_project", host.get("lxd_project", "")))
        if projects is not None and project not in projects:
            continue
        described.append({
            "name": host.get("mage_lxd_instance", name),
            "project": project,
            "status": str(host.get("lxd_status", "")),
            "address": str(host.get("lxd_address", "")),
            # None for a host no mage_lxd inventory made (no network to vouch for its address).
            "address_network": None if "lxd_address_network" not in host else str(host["lxd_address_network"]),
            "routes": (host.get("lxd_mage") or {}).get("proxy") or [],
        })
    with raised_as(AnsibleFilterError):
        plan = plan_proxy(described, strict=None if strict is None else [str(item) for item in strict],
                          proxy_name=proxy, declared={str(key): value for key, value in (declared or {}).items()})
    for warning in plan.warnings:
        display.warning(warning)
    return asdict(plan)


class FilterModule:
    def filters(self):
        return {"mage_lxd_sites": mage_lxd_sites}
