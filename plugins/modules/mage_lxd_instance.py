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
    publish routes in the project). Last, and only when all of those passed, the config and devices
    about to be written are offered to LXD as a scratch profile (C(mage-check-*), deleted at once; LXD
    publishes no config schema), so a batch any other check refuses writes nothing at all; check mode
    does not offer them. A refusal anywhere changes nothing anywhere. A new instance that cannot be
    started or published is removed again.
  - Runs of one controller user converging the same LXD server wait for each other, so they never
    interleave. The lock file is in C($XDG_RUNTIME_DIR/mage-lxd) when that runtime directory is the
    user's own, else C(~/.cache/mage-lxd), created with mode 0700; a lock directory that is a
    symlink, belongs to another user or is writable by others is refused, so no other local user can
    hold the lock.
  - Supports check mode (the plan, nothing is changed) and diff mode (config, devices, profiles, state).
  - Runs on the controller (an action plugin); the task needs no connection to the instance.
  - Without O(url), the LXD server comes from the environment of the controller, C(MAGE_LXD_URL),
    C(MAGE_LXD_CLIENT_CERT), C(MAGE_LXD_CLIENT_KEY), C(MAGE_LXD_SERVER_CERT) and C(MAGE_LXD_TRUST_TOKEN), else
    the C(lxc) or C(incus) client's remote O(remote) names, else the local socket.
version_added: "0.2.0"
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
      - Where a new instance's image comes from, as the C(lxc) and C(incus) clients name it.
      - A local alias (C(mage/debian-12)), or the seed's shorthand (C(debian/12/amd64)) - a local alias of that name
        if there is one, else that alias on O(image_server).
      - C(REMOTE:ALIAS) - C(images:debian/12) (the server kind's own C(images:) remote, see O(image_server)),
        C(ubuntu:24.04) (LXD only, U(https://cloud-images.ubuntu.com/releases); also C(ubuntu-daily:),
        C(ubuntu-minimal:), C(ubuntu-minimal-daily:)), C(local:ALIAS), or a remote of the user's C(lxc) or C(incus)
        client (its C(config.yml), with its pinned certificate in C(servercerts/)).
      - "C({alias, server, protocol, server_cert}) - C(server) an https:// URL, C(protocol) V(simplestreams) (the
        default) or V(lxd) (an LXD or Incus server's public images; V(incus) is the same), C(server_cert) the path of
        the server's certificate to pin (LXD is given it too); without C(server), a local alias."
      - An alias on an image server is resolved while the batch is planned, before any write - on the
        simplestreams index (C(streams/v1/index.json)) or with C(GET /1.0/images/aliases/NAME) - for the instance's
        type and the server's architecture, by the rules LXD and Incus use (C(ALIAS) names the server's native
        architecture, C(ALIAS/ARCH) another). An alias the image server does not have, or a server that cannot be
        read or fails the TLS check, refuses the whole batch with a message naming the instance, the alias and the
        server. TLS is checked against the controller's CA store (or the pinned C(server_cert)); the LXD host
        checks the server against its own CA store, so both must trust the server's CA.
      - An image already on the server (by fingerprint) is used as it is and nothing is downloaded. An image to
        download is pulled once per batch - by the creation of the first instance that needs it; the others
        wait for it and are then created from the pulled image by its fingerprint. While LXD downloads it,
        its progress (C(download_progress), percent and speed) is shown at default verbosity, a line per change,
        about once a second; nothing is shown for an image the server already has.
      - Needed to create the instance. A changed local alias is reported as a warning; the instance is only
        recreated with O(rebuild=true).
    type: raw
  image_server:
    description:
      - The image server of the seed's shorthand and of bare aliases that are not local aliases.
      - V(images) (the default) is the server kind's C(images:) remote - U(https://images.lxd.canonical.com) on
        LXD, U(https://images.linuxcontainers.org) on Incus (which no longer serves LXD) - both simplestreams.
      - Also an https:// URL of a simplestreams server, or another remote name (V(ubuntu), a remote of the
        C(lxc) or C(incus) client).
      - An empty string means local aliases only (nothing is ever pulled).
    type: str
    default: images
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
  mage.lxd.mage_lxd_instance:
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
  register: web1

- name: Its address, read from the result
  ansible.builtin.debug:
    msg: "web1 is {{ web1.status }} at {{ web1.address }}"

- name: The seed's list form, all at once
  mage.lxd.mage_lxd_instance:
    instances: "{{ lxd_provisioning_inventory }}"
  register: provisioned

- name: Name the instances that could not be converged
  ansible.builtin.debug:
    msg: "{{ provisioned.instances | selectattr('failed', 'defined') | map(attribute='msg') | list }}"

- name: Read them back from LXD (the mage_lxd inventory) for the next plays
  ansible.builtin.meta: refresh_inventory

- name: A project of its own (created when missing) with a declared profile its instances use
  mage.lxd.mage_lxd_instance:
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
  mage.lxd.mage_lxd_instance:
    name: web1
    state: absent
"""

# Every key the task returns but changed and failed (which every task has). The single-instance form
# (name) returns one instance's keys at the top level; the list form (instances) returns them per
# entry under instances. tests/unit/plugins/test_plugin_docs.py compares these keys with a result
# the action builds from recorded LXD answers.
RETURN = r"""
name:
  description: The instance.
  returned: with O(name)
  type: str
  sample: web1
project:
  description: Its LXD project.
  returned: with O(name)
  type: str
  sample: default
actions:
  description:
    - What was done to the instance (or would be, in check mode), in order. Empty when nothing changed.
    - C(created), C(pulled image 'ALIAS' (FINGERPRINT) from SERVER) (this instance's creation downloaded the
      image), C(rebuilt (image changed)), C(reconfigured), C(unfrozen), C(started), C(restarted),
      C(stopped), C(frozen), C(deleted), C(installed python with TOOL), C(BACKEND NAT updated).
  returned: with O(name), unless the instance failed
  type: list
  elements: str
  sample: [created, started, installed python with apt-get, proxy NAT updated]
status:
  description:
    - The instance's status afterwards, as LXD names it in lower case (C(running), C(stopped),
      C(frozen)), or C(absent).
    - In check mode, the status it would have.
  returned: with O(name), unless the instance failed
  type: str
  sample: running
location:
  description: The cluster member the instance is on; empty off a cluster (and for a new instance in check mode).
  returned: with O(name), unless the instance failed
  type: str
  sample: ""
address:
  description: The first IPv4 address, else the first IPv6 one; empty when it has none, when it does not run, and in check mode.
  returned: with O(name), unless the instance failed
  type: str
  sample: 10.187.33.151
ipv4:
  description:
    - Its IPv4 addresses as LXD sees its NICs on managed networks (static address, DHCP lease, else the
      address inside the network's subnet on that NIC), read once it runs (after O(wait_for_address));
      interfaces the instance made itself never count.
    - Empty when it does not run, and in check mode (nothing is read then).
  returned: with O(name), unless the instance failed
  type: list
  elements: str
  sample: [10.187.33.151]
ipv6:
  description: Its IPv6 addresses, as RV(ipv4).
  returned: with O(name), unless the instance failed
  type: list
  elements: str
  sample: []
python:
  description: Path of python in the instance; empty when it does not run, when O(bootstrap) is off, and in check mode.
  returned: with O(name), unless the instance failed
  type: str
  sample: /usr/bin/python3
warnings:
  description:
    - Warnings about the instance - what was kept as is (an image changed under it without O(rebuild), an
      instance on another cluster member than O(target)). Every warning is also shown.
    - Ansible handles this key itself. ansible-core 2.16 to 2.18 return it as described (an empty list when
      there is none); 2.19 and later put here every warning the task showed (also those about
      O(allow_unsafe) settings and about projects, in the list form too), and leave it out when there is none.
  returned: with O(name) (and see the description)
  type: list
  elements: str
  sample:
    - instance 'web1' in project 'default' is on cluster member 'm2', not on target 'm1'; it is left there
      (target only places new instances; lxc move moves one)
diff:
  description:
    - Before and after (C(config), C(devices), C(profiles), C(state)) of the instance, as diff mode shows them,
      in check mode and outside diff mode too.
    - A single instance's is a dict; it is a list, with the diffs of created projects and changed profiles
      first, when a project or profile changes, and always in the list form (projects, profiles, then each
      instance that did not fail).
  returned: always in the list form; with O(name), unless the instance failed and no project or profile changed
  type: raw
  sample:
    before: {state: absent}
    after:
      config: {user.mage.managed: '{"config":[],"devices":[]}'}
      devices: {}
      profiles: [default]
      state: started
add_host:
  description:
    - The host entry of the instance with the mage_lxd connection. In the single-instance form it puts the
      instance in this run's inventory (in the groups of O(groups)); for O(instances) it is only reported,
      refresh the inventory (C(meta) C(refresh_inventory)) instead.
    - Left out when the inventory already has the host in those groups with these variables (the mage_lxd
      inventory, on a second run), so a run that changes nothing reports no change.
  returned: when the instance exists afterwards (not absent, not failed) and the inventory does not already have it so
  type: dict
  contains:
    host_name:
      description: The instance's name.
      type: str
      sample: web1
    groups:
      description: O(groups).
      type: list
      elements: str
      sample: [lxd]
    host_vars:
      description:
        - C(ansible_connection) (C(mage.lxd.mage_lxd)), C(mage_lxd_instance), C(mage_lxd_project),
          C(mage_lxd_remote) and C(mage_lxd_url); C(mage_lxd_client_cert), C(mage_lxd_client_key) and
          C(mage_lxd_server_cert) when set; C(mage_lxd_validate_certs) for an HTTPS remote;
          C(ansible_host) when it has an address.
      type: dict
      sample:
        ansible_connection: mage.lxd.mage_lxd
        mage_lxd_instance: web1
        mage_lxd_project: default
        mage_lxd_remote: local
        mage_lxd_url: ""
        ansible_host: 10.187.33.151
projects:
  description: Each project the task's instances live in (and that of O(project_profiles)), and what was done to it and its profiles.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The project.
      type: str
    changed:
      description: Whether the project or a profile in it was (or would be) created or changed.
      type: bool
    actions:
      description: C(created project), C(created profile NAME), C(updated profile NAME).
      type: list
      elements: str
    warnings:
      description: A new project whose default profile gets no root disk or NIC; declared profiles that land in the default project.
      type: list
      elements: str
  sample: [{name: mage-demo, changed: true, actions: [created project, updated profile default], warnings: []}]
instances:
  description: One result per entry of O(instances), in their order.
  returned: with O(instances)
  type: list
  elements: dict
  contains:
    name:
      description: The instance.
      type: str
    project:
      description: Its LXD project.
      type: str
    changed:
      description: Whether it was (or would be) changed; for a failed instance, whether its plan had changes when applying it failed.
      type: bool
    actions:
      description: As RV(actions).
      type: list
      elements: str
    status:
      description: As RV(status).
      type: str
    location:
      description: As RV(location).
      type: str
    address:
      description: As RV(address).
      type: str
    ipv4:
      description: As RV(ipv4).
      type: list
      elements: str
    ipv6:
      description: As RV(ipv6).
      type: list
      elements: str
    python:
      description: As RV(python).
      type: str
    warnings:
      description: As RV(warnings); always there, empty when there is none.
      type: list
      elements: str
    diff:
      description: Before and after of this instance (a dict, as RV(diff) for a single instance).
      type: dict
    add_host:
      description: As RV(add_host) (reported only; it adds nothing to the inventory).
      type: dict
    failed:
      description:
        - True when this instance could not be converged.
        - It then has only C(name), C(project), C(msg) and C(failed) (and C(changed) when applying it failed).
      type: bool
    msg:
      description: Why it could not be converged, naming the instance and the step.
      type: str
  sample:
    - {name: web1, project: default, changed: false, actions: [], status: running, location: "", address: 10.187.33.151,
       ipv4: [10.187.33.151], ipv6: [], python: /usr/bin/python3, warnings: [],
       diff: {before: {state: started}, after: {state: started}}}
    - {name: db1, project: default, failed: true, msg: "instance 'db1' in project 'default': changing its state failed: ..."}
msg:
  description: The failures of the instances that could not be converged, joined with C(; ).
  returned: when an instance failed
  type: str
nat_removed:
  description:
    - Forward ports and iptables rules on the server whose owner instance is gone, or whose C(user.mage.nat) no
      longer records them, removed by this run (in check mode, those it would remove); each is also a warning.
  returned: always
  type: list
  elements: dict
  sample: [{project: shop, instance: web1, rule: tcp-8080, backend: forward, why: the instance no longer exists}]
"""
