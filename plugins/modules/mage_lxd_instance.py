#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the work is done on the controller by action_plugins/mage_lxd_instance.py.
# The boilerplate ansible-test (up to 2.16) wants in every module file, even a documentation-only one.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mage_lxd_instance
short_description: Create, configure, start and publish LXD instances, and bootstrap python in them
description:
  - Converges one instance (O(name)) or a list (O(instances), the seed's C(lxd_provisioning_inventory))
    to its desired state through the LXD API; a list is handled concurrently (O(forks)).
  - Idempotent; a second identical run reports no change and makes no write call. Only config keys and
    devices this module set are ever removed (they are listed in the instance's C(user.mage.managed)).
  - Waits for an address (IPv4 by default) and fails, naming the instance and what it has, when none
    comes within O(address_timeout).
  - Installs python with the instance's own package manager when it has none (O(bootstrap)), then
    returns C(add_host), which puts a single instance in this run's inventory with the mage_lxd
    connection; for O(instances), refresh the inventory (C(meta) C(refresh_inventory)) instead.
  - Publishes ports on the LXD host (O(nat)) with an LXD proxy device (default), an LXD network forward,
    or iptables DNAT rules, and records NAT and proxy routes in the instance (C(user.mage.nat),
    C(user.mage.proxy)) where the mage_lxd inventory reads them.
  - The whole batch is planned before the first write - projects, profiles, every instance's config,
    devices, state and NAT - and checked against what can be known without writing (images, profiles,
    host interfaces, host ports free, routes unique among this batch and the instances that already
    publish routes in the project). A refusal anywhere changes nothing anywhere. A new instance that
    cannot be started or published is removed again.
  - Runs converging the same LXD server from this controller wait for each other (a lock file in the
    temporary directory), so they never interleave.
  - Supports check mode (the plan, nothing is changed) and diff mode (config, devices, profiles, state).
  - Runs on the controller (an action plugin); the task needs no connection to the instance.
  - Without O(url), the LXD server comes from the environment of the controller, C(MAGE_LXD_URL),
    C(MAGE_LXD_CLIENT_CERT), C(MAGE_LXD_CLIENT_KEY) and C(MAGE_LXD_SERVER_CERT), else the local socket.
version_added: "0.1.0"
author: mage-lxd developers (!UNKNOWN)
extends_documentation_fragment:
  - mage.lxd.mage_lxd.module
attributes:
  check_mode:
    support: full
    description: Reports exactly what would change and changes nothing.
  diff_mode:
    support: full
    description: Before/after of config, devices, profiles and state.
options:
  name:
    description: The instance (1-63 letters, digits and C(-), starting with a letter). Or use O(instances).
    type: str
  instances:
    description:
      - A list of instances in the seed's format (C(name), C(image), C(nat), C(proxy), and any other
        option of this module); the task's own options are defaults for each entry.
      - A plain string is taken as the name of an instance.
    type: list
    elements: raw
  state:
    description: Desired state.
    type: str
    choices: [started, stopped, restarted, absent, frozen]
    default: started
  image:
    description:
      - A local alias (C(mage/debian-12)), the seed's shorthand (C(ubuntu/xenial/amd64), a local alias or
        else the same alias on O(image_server)), or C({alias, server, protocol}).
      - Needed to create the instance. A changed image is reported as a warning; the instance is only
        recreated with O(rebuild=true).
    type: raw
  image_server:
    description:
      - Image server for the shorthand form of O(image) when it is not a local alias.
      - An empty string means local aliases only (nothing is ever pulled).
    type: str
    default: https://images.linuxcontainers.org
  rebuild:
    description: Recreate the instance when its image differs from O(image) (its root disk is lost).
    type: bool
    default: false
  type:
    description: Instance type.
    type: str
    choices: [container, virtual-machine]
    default: container
  profiles:
    description: Profiles, in order (order matters to LXD and is compared). Default on creation C([default]).
    type: list
    elements: str
  config:
    description: Instance config keys (C(volatile.*) and C(user.mage.*) are refused). Keys removed from
      here are removed from the instance.
    type: dict
    default: {}
  devices:
    description: Instance devices, as LXD takes them. Devices removed from here are removed.
    type: dict
    default: {}
  mounts:
    description: The seed's C(/host/path:/instance/path[:ro]) shorthand, made into disk devices.
    type: list
    elements: str
    default: []
  target:
    description:
      - Where to create the instance on an LXD cluster - a member name, or C(@group) for a cluster group
        (servers with the C(clustering_groups) API extension). Without it, LXD picks the member.
      - An existing instance is never moved and is not reported as changed; when it sits on another
        member than O(target), a warning says where it is.
      - A failed placement names the member or group and lists the members with their status. An
        instance on a member the cluster cannot reach fails before any change, naming that member.
    type: str
  ephemeral:
    description: Create an ephemeral instance (deleted by LXD when it stops).
    type: bool
    default: false
  nat:
    description: Ports published on the LXD host (the seed's format).
    type: list
    elements: dict
    default: []
    suboptions:
      extport:
        description: Port on the host.
        type: int
        required: true
      intport:
        description: Port in the instance. Default O(nat[].extport).
        type: int
      proto:
        description: Protocol.
        type: str
        choices: [tcp, udp]
        default: tcp
      extif:
        description: Host interface to listen on (its IPv4 address); needed by the iptables backend.
        type: str
      intif:
        description: The instance's network on the host (an LXD bridge); needed by forward and iptables.
        type: str
      listen:
        description:
          - Host IPv4 address to listen on, instead of O(nat[].extif)'s.
          - On an LXD cluster, a mapping of member name to that member's address; the address of the
            member the instance runs on is used (for a new instance without O(target), once LXD has
            placed it). A member missing from the mapping is an error that names it.
        type: raw
      backend:
        description:
          - How the port is published. Default O(nat_backend).
          - On a cluster, proxy devices and network forwards are made on the instance's member;
            iptables is refused there (it edits the firewall of the machine running Ansible).
        type: str
        choices: [proxy, forward, iptables]
  nat_backend:
    description: Default NAT backend for every entry.
    type: str
    choices: [proxy, forward, iptables]
    default: proxy
  proxy:
    description:
      - Web routes for mageproxy (C({name, path, pass})), recorded in the instance for the inventory.
      - Each route is checked by allow-list before anything changes (a string that looks like the seed's
        mount shorthand is refused with a hint to put it under O(mounts)).
    type: list
    elements: raw
    default: []
  bootstrap:
    description: Install python with the instance's package manager (apt, dnf, yum, apk, zypper, pacman) if missing.
    type: bool
    default: true
  wait_for_address:
    description: Address family to wait for once running, or C(none).
    type: str
    choices: [inet, inet6, none]
    default: inet
  address_timeout:
    description: Seconds to wait for that address before failing.
    type: float
    default: 60
  groups:
    description: Groups of the C(add_host) result.
    type: list
    elements: str
    default: [lxd]
  forks:
    description: How many instances of O(instances) are converged at once.
    type: int
    default: 4
  operation_timeout:
    description: Seconds to wait for one LXD operation (creation, start, stop).
    type: float
    default: 300
  create_project:
    description:
      - Create the project of an instance (O(project)) when it does not exist, before any instance is
        touched. The new project uses the default project's images (C(features.images=false), so local
        images serve it) and has profiles of its own (C(features.profiles=true), so profiles declared
        for it change no other project); its C(default) profile gets the default project's root disk
        and NICs, so instances there boot with storage and a network.
      - V(false) means the project must already exist; a missing one is an error that says so, and
        nothing is changed.
      - In check mode a project that would be created is reported (with its instances as created).
    type: bool
    default: true
  allow_unsafe:
    description:
      - Settings that weaken the isolation between an instance and its host are always named in a
        warning, in check mode too - C(security.privileged), C(security.nesting), C(raw.*) config, and a
        disk device whose source is the host's C(/) - for instances and for O(project_profiles).
      - V(false) refuses them instead, before anything is changed.
    type: bool
    default: true
  project_profiles:
    description:
      - Profiles to create or converge in the project of every instance of this task, before the
        instances (so instances can name them in O(profiles)). Idempotent, with check and diff modes.
      - Only the config keys and devices declared here are ever removed again (they are listed in the
        profile's C(user.mage.managed)); what others set in the profile is kept.
      - A profile named in an instance's O(profiles) that neither exists nor is declared here is an error
        naming the instance and profile, before anything is changed.
      - In a project with C(features.profiles=false), LXD keeps profiles in the default project.
    type: list
    elements: dict
    suboptions:
      name:
        description: Profile name.
        type: str
        required: true
      description:
        description: Its description.
        type: str
      config:
        description: Config keys (C(user.mage.*) and C(volatile.*) are refused).
        type: dict
      devices:
        description: Devices, as LXD takes them (names starting with C(mage-) are reserved).
        type: dict
"""

EXAMPLES = r"""
- name: A started Debian container with a published port and a web route
  mage_lxd_instance:
    name: web1
    image: mage/debian-12
    profiles: [default]
    config:
      limits.memory: 512MiB
    mounts:
      - /srv/data:/data:ro
    nat:
      - extport: 8080
        intport: 80
    proxy:
      - name: web1.example.org
        path: /
        pass: 80

- name: The seed's list form, all at once
  mage_lxd_instance:
    instances: "{{ lxd_provisioning_inventory }}"
  register: provisioned

- name: Read them back from LXD (the mage_lxd inventory) for the next plays
  ansible.builtin.meta: refresh_inventory

- name: A project of its own (created when missing) with a declared profile its instances use
  mage_lxd_instance:
    project: shop
    project_profiles:
      - name: small
        config:
          limits.memory: 512MiB
    instances:
      - name: shop-web
        image: mage/debian-12
        profiles: [default, small]

- name: Gone, with its NAT entries
  mage_lxd_instance:
    name: web1
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [created, started, installed python with apt-get]
status:
  description: The instance's status afterwards.
  returned: always
  type: str
  sample: started
address:
  description: The first IPv4 address (else IPv6) once running.
  returned: always
  type: str
ipv4:
  description: Global IPv4 addresses.
  returned: always
  type: list
  elements: str
ipv6:
  description: Global IPv6 addresses.
  returned: always
  type: list
  elements: str
python:
  description: Path of python in the instance (after bootstrap).
  returned: when bootstrap is on and the instance runs
  type: str
add_host:
  description: Host entry with the mage_lxd connection (single-instance form adds it to the inventory).
  returned: unless the instance is absent
  type: dict
projects:
  description: Each project the task's instances live in, and what was done to it and its profiles.
  returned: always
  type: list
  elements: dict
  sample: [{name: mage-demo, changed: true, actions: [created project, updated profile default], warnings: []}]
instances:
  description: One result (the keys above, plus name, project, failed, msg) per entry of O(instances).
  returned: with O(instances)
  type: list
  elements: dict
"""
