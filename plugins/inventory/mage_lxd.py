# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd
short_description: LXD instances as Ansible hosts, read straight from the LXD API
description:
  - Reads every instance (container or virtual machine) of one or more LXD servers in one snapshot
    of the API, with a constant number of requests whatever the number of instances
    (C(recursion=1) for config, the managed networks' DHCP leases for addresses).
  - Puts every instance in O(default_group) and in groups by project, profile, status, image os and
    release, type, cluster member and network (O(group_by)).
  - Sets C(ansible_connection=mage.lxd.mage_lxd) as a variable of O(default_group), so C(group_vars) and
    C(host_vars) can override it; the connection plugin finds the instance through the
    C(mage_lxd_*) host variables (each can be overridden by the matching C(ansible_mage_lxd_*)).
  - Everything read from LXD is marked unsafe; a template string in an instance's description or
    config is never evaluated.
  - With a file cache (O(cache_plugin=ansible.builtin.jsonfile)), O(cache_connection) is made
    C(0700) and the cache file C(0600), since it holds every instance's config. A directory of another
    user, or one anyone may write to (C(/tmp)), is refused.
  - The config file must be named C(mage_lxd.yml) or C(mage_lxd.yaml) (or end with C(.mage_lxd.yml)).
version_added: "0.2.0"
author: mage-lxd developers (!UNKNOWN)
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks the file as this plugin's configuration.
    required: true
    choices: [mage.lxd.mage_lxd, mage_lxd]
    type: str
  remotes:
    description:
      - The LXD servers to read. The default is the local unix socket.
      - Certificate verification is on by default; an HTTPS remote needs a client certificate the
        server trusts (or a O(remotes[].trust_token) that makes it trusted) and, for LXD's self-signed
        certificate, O(remotes[].server_cert) (which a O(remotes[].trust_token) pins on its own).
    type: list
    elements: dict
    default: [{name: local}]
    suboptions:
      name:
        description:
          - Name of the remote in host variables, groups (O(group_by=remote)) and messages.
          - Without O(remotes[].url), a name other than C(local) is the C(lxc) or C(incus) command line client's
            remote of that name (from C($LXD_CONF), C(~/.config/lxc), C(~/snap/lxd/common/config), then
            C($INCUS_CONF), C(~/.config/incus)) - its address, pinned server certificate, client pair and project;
            the keys given here win. Only C(lxd) and C(incus) protocol remotes serve the API.
        type: str
        default: local
      url:
        description:
          - C(https://HOST:PORT), or a unix socket as C(unix:/path) or C(/path).
          - Empty means the environment's C(MAGE_LXD_URL) (with C(MAGE_LXD_CLIENT_CERT),
            C(MAGE_LXD_CLIENT_KEY), C(MAGE_LXD_SERVER_CERT), C(MAGE_LXD_TRUST_TOKEN)) when it is set, as for the
            other plugins; else the CLI remote O(remotes[].name) names;
            else the local socket, the first that exists of LXD's (C(/var/lib/lxd/unix.socket), the
            snap's) and Incus's (C(/var/lib/incus/unix.socket)).
          - On a host that runs both, C(unix:/var/lib/incus/unix.socket) reads Incus.
        type: str
        default: ""
      client_cert:
        description:
          - PEM client certificate for an HTTPS remote.
          - With O(remotes[].trust_token) and no client pair given, mage-lxd's own, C($XDG_CONFIG_HOME/mage-lxd/client.crt)
            (else C(~/.config/mage-lxd/client.crt)), generated there when missing; never the CLIs' files.
        type: path
      client_key:
        description:
          - PEM key of O(remotes[].client_cert).
          - With O(remotes[].trust_token) and no client pair given, C(client.key) next to the default client_cert.
        type: path
      server_cert:
        description:
          - The server's PEM certificate; it is pinned (its fingerprint must match).
          - Without it, the server's certificate must be signed by a CA of the system's store, except with
            O(remotes[].trust_token) (and O(remotes[].validate_certs) on). As C(lxc remote add NAME URL --token TOKEN),
            the server's certificate is then read before anything is sent, accepted only when its SHA-256 is the
            fingerprint the token names, and pinned at C($XDG_CONFIG_HOME/mage-lxd/servercerts/NAME-HASH.crt)
            (else C(~/.config/mage-lxd/servercerts/NAME-HASH.crt); NAME is O(remotes[].name) and HASH 16 hex digits
            of the SHA-256 of the name, host and port), which later runs pin, the token spent or not.
          - A server_cert given always wins, and nothing is pinned from the token; but a token is sent only when
            server_cert is the certificate the token names (else it is refused naming both fingerprints).
          - Whatever O(remotes[].validate_certs) says, a token is sent only on a connection whose certificate has
            the token's fingerprint, as C(lxc remote add --token) does.
        type: path
      validate_certs:
        description: Verify the server's certificate. Only a throwaway lab should turn this off.
        type: bool
        default: true
      timeout:
        description: Seconds to wait for each API answer.
        type: float
        default: 10
      trust_token:
        description:
          - A trust token of the server (C(lxc config trust add --name NAME) on LXD, C(incus config trust add NAME)
            on Incus). When the server does not trust the client certificate yet, it is added with the token
            once; a trusted client never sends it. A token works once; a spent, expired or wrong one fails naming
            the remote and the fix, and anything that is not such a token fails naming the option.
          - With a token, O(remotes[].url) is all else the remote needs. O(remotes[].client_cert) and
            O(remotes[].client_key) default to mage-lxd's own pair and O(remotes[].server_cert) is pinned from the
            token (see both). A missing pair is generated at its paths first, as the CLIs make them (EC P-384,
            self-signed; the key mode 0600).
        type: str
        version_added: 0.3.0
  projects:
    description:
      - LXD projects to read. C(*) reads all projects in one request where the server supports it.
      - An unknown project is an error, not an empty inventory.
      - Default, for each remote, the project of its CLI remote (O(remotes[].name)), else C(default).
    type: list
    elements: str
  filters:
    description: Read only matching instances; status and type are filtered by the server when it can.
    type: dict
    default: {}
    suboptions:
      status:
        description: Instance statuses to keep.
        type: list
        elements: str
        choices: [running, stopped, frozen, error]
      type:
        description: Instance types to keep.
        type: list
        elements: str
        choices: [container, virtual-machine]
      profiles:
        description: Keep instances that use at least one of these profiles.
        type: list
        elements: str
  address_source:
    description:
      - Where addresses come from. C(leases) asks each managed network once (fast); instances with a
        NIC on an unmanaged network are asked for their state. C(state) asks every running instance.
    type: str
    choices: [leases, state]
    default: leases
  default_group:
    description: Group that holds every instance, and carries C(ansible_connection).
    type: str
    default: lxd
  group_by:
    description:
      - Which groups to make, named C(<key>_<value>), e.g. C(project_default), C(profile_web),
        C(status_running), C(os_debian), C(release_debian_12), C(type_container), C(location_node1),
        C(network_lxdbr0), C(remote_local).
      - Profiles and networks belong to a project, and an instance's os and release are what its own
        C(image.os) and C(image.release) config say, which whoever may edit it sets. When O(projects)
        is more than one project (or C(*)), these groups carry the project,
        C(profile_<project>__<profile>), C(network_<project>__<network>), C(os_<project>__<os>) and
        C(release_<project>__<os>_<release>), so an instance of one project never joins such a group
        of another project.
      - Characters other than letters, digits and C(_) become C(_). A group name two different values
        would share (projects C(shop.prod) and C(shop-prod)) is made for neither, with a warning.
    type: list
    elements: str
    choices: [project, profile, status, os, release, type, location, network, remote]
    default: [project, profile, status, os, release, type, location, network]
  hostname_format:
    description:
      - Inventory host name of an instance, from the fields C({name}), C({project}), C({remote}).
      - Two instances that would get the same name are named C({project}.{name}) instead
        (C({remote}.{project}.{name}) when that is shared too), with a warning that names them;
        neither can stand in for the other. C({project}.{name}) cannot collide (instance names hold
        no dot). An instance is left out only when no name is its own.
      - An instance whose name would be C(localhost), C(127.0.0.1) or C(::1) (the controller's
        names in ansible-core) is renamed the same way, with a warning, so that no play on
        C(localhost) and no task delegated to it ever runs in that instance.
    type: str
    default: "{name}"
  preferred_address_family:
    description: Family of C(lxd_address) when an instance has both.
    type: str
    choices: [inet, inet6]
    default: inet
  set_ansible_host:
    description:
      - Set C(ansible_host) to the preferred address. The mage_lxd connection does not use it
        (it reaches instances through the API), but C(ansible_connection=ssh) then works as is.
    type: bool
    default: true
"""

EXAMPLES = r"""
# inventory/mage_lxd.yml: the local LXD, default project
plugin: mage.lxd.mage_lxd

# Every project of a remote LXD over HTTPS, running containers only, extra groups
plugin: mage.lxd.mage_lxd
remotes:
  - name: prod
    url: https://lxd.example.org:8443
    client_cert: ~/.config/mage-lxd/client.crt
    client_key: ~/.config/mage-lxd/client.key
    server_cert: ~/.config/mage-lxd/prod-server.crt
projects: ["*"]
filters:
  status: [running]
  type: [container]
hostname_format: "{project}.{name}"
keyed_groups:
  - key: lxd_config['user.role'] | default('none')
    prefix: role
compose:
  ansible_user: "'deploy'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/mage-lxd

# A server this controller has never talked to, with a token from `lxc config trust add --name ctl1`
# (Incus: `incus config trust add ctl1`): its certificate is pinned from the token
# (~/.config/mage-lxd/servercerts/new-HASH.crt), and ~/.config/mage-lxd/client.crt is generated and trusted
plugin: mage.lxd.mage_lxd
remotes:
  - name: new
    url: https://lxd.example.org:8443
    trust_token: eyJjbGllbnRfbmFtZSI6ImN0bDEi...

# A remote of the lxc or incus client (`lxc remote add prod https://...`), in its own project
plugin: mage.lxd.mage_lxd
remotes:
  - name: prod
"""

import os

from ansible.errors import AnsibleParserError
from ansible.plugins.cache import BaseFileCacheModule
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.plugins.loader import cache_loader, connection_loader
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.inventory import (
    CONNECTION_PLUGIN, InventoryOptions, plan_inventory, settable_group_variables, stray_shared_keys)
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.private_cache import make_cache_dir_private, make_cache_files_private
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import mapping_with_environment, remote_from_mapping, unique_remotes
from ansible_collections.mage.lxd.plugins.plugin_utils.snapshot import SnapshotFilters, take_snapshot

display = Display()

CONFIG_NAMES = ("mage_lxd.yml", "mage_lxd.yaml")


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "mage_lxd"
    _cache_location = None

    def verify_file(self, path):
        name = os.path.basename(path)
        return super().verify_file(path) and (name in CONFIG_NAMES or name.endswith((".mage_lxd.yml", ".mage_lxd.yaml")))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        with raised_as(AnsibleParserError):
            remotes = unique_remotes(
                remote_from_mapping(mapping_with_environment(item), where="remotes")
                for item in self.get_option("remotes") or [{}]
            )
            options = InventoryOptions(
                default_group=self.get_option("default_group"),
                group_by=tuple(self.get_option("group_by")),
                hostname_format=self.get_option("hostname_format"),
                preferred_address_family=self.get_option("preferred_address_family"),
                set_ansible_host=self.get_option("set_ansible_host"),
                projects=tuple(self.get_option("projects") or dict.fromkeys(_default_project(remote) for remote in remotes)),
            )
            snapshots = self._cached_snapshots(path, remotes, cache)
            plan = plan_inventory(snapshots, {remote.name: remote for remote in remotes}, options)
        for warning in plan.warnings:
            display.warning(f"mage_lxd inventory: {warning}")
        self._populate(plan)
        self._preload_connection(CONNECTION_PLUGIN)

    def _preload_connection(self, name):
        # Ansible's workers are forks of this process: the connection loaded here once (its module
        # and documented options) is not loaded again by every task on every host (measured: 25 ms
        # of CPU each). Only a speed-up: a connection that cannot load fails where it is used, with
        # Ansible's own message, and never the inventory.
        try:
            connection_loader.get(name, class_only=True)
        except Exception as exc:  # noqa: BLE001 - see above
            display.vvv(f"mage_lxd inventory: connection {name} not preloaded: {exc}")

    def _cache_files(self, path):
        """(directory, prefix, key) of the files a file cache keeps this source in, or None without
        one: ansible-core's BaseFileCacheModule writes cache_connection/<cache_prefix>...<key>."""
        if not self.get_option("cache"):
            return None
        # get_with_context: cache_loader.get() wraps even a class in its interposer.
        plugin = cache_loader.get_with_context(self.get_option("cache_plugin"), class_only=True).object
        connection = self.get_option("cache_connection")
        if plugin is None or not issubclass(plugin, BaseFileCacheModule) or not connection:
            return None
        directory = os.path.expanduser(os.path.expandvars(connection))
        return directory, self.get_option("cache_prefix") or "", self.get_cache_key(path)

    def update_cache_if_changed(self):
        # ansible-core writes the file 0644 after parse() (the directory, 0700, keeps others out).
        super().update_cache_if_changed()
        if self._cache_location:
            make_cache_files_private(*self._cache_location)

    def _cached_snapshots(self, path, remotes, cache):
        self._cache_location = self._cache_files(path)
        if self._cache_location:
            make_cache_dir_private(self._cache_location[0])
            make_cache_files_private(*self._cache_location)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        if use_cache:
            try:
                return self._cache[cache_key]
            except KeyError:
                pass
        snapshots = [self._snapshot(remote) for remote in remotes]
        if self.get_option("cache"):
            self._cache[cache_key] = snapshots
        return snapshots

    def _snapshot(self, remote):
        filters = self.get_option("filters") or {}
        unknown = sorted(set(filters) - {"status", "type", "profiles"})
        if unknown:
            raise OptionError(f"filters: unknown key(s) {', '.join(unknown)}; allowed: status, type, profiles")
        api = LxdApi(remote, log=display.vvv)
        return take_snapshot(
            api,
            projects=list(self.get_option("projects") or [_default_project(remote)]),
            filters=SnapshotFilters(
                statuses=tuple(filters.get("status") or ()),
                types=tuple(filters.get("type") or ()),
                profiles=tuple(filters.get("profiles") or ()),
            ),
            address_source=self.get_option("address_source"),
        )

    def _populate(self, plan):
        strict = self.get_option("strict")
        for group, variables in plan.group_vars.items():
            # A group another source made may hold its hosts: it gets nothing new, and this source's
            # hosts hold what it does not carry with their value (stray_shared_keys).
            current = self.inventory.groups[group].get_vars() if group in self.inventory.groups else None
            self.inventory.add_group(group)
            for key, value in settable_group_variables(variables, current).items():
                self.inventory.set_variable(group, key, value)
        for host in plan.hosts:
            for group in host.groups:
                self.inventory.add_group(group)
                self.inventory.add_host(host.name, group=group)
            for key, value in _unsafe(host.own_variables).items():
                self.inventory.set_variable(host.name, key, value)
            variables = _unsafe(host.variables)
            self._set_composite_vars(self.get_option("compose"), variables, host.name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host.name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host.name, strict=strict)
        # Constructed groups, and groups of other sources, may hold a host too and carry other values.
        for host in plan.hosts:
            if host.shared:
                groups = self.inventory.get_host(host.name).get_groups()
                stray = stray_shared_keys(host, [group.get_vars() for group in groups])
                for key in stray:
                    self.inventory.set_variable(host.name, key, _unsafe(host.variables[key]))


def _unsafe(value):
    # ansible-core 2.19 and later never template what a plugin sets unless the plugin declares itself
    # trusted_by_default (this one does not); earlier releases template what is not wrapped unsafe.
    return value if _UNTRUSTED_BY_DEFAULT else wrap_var(value)


_UNTRUSTED_BY_DEFAULT = not getattr(InventoryModule, "trusted_by_default", True)


def _default_project(remote):
    # Without the projects option, each remote's CLI project (lxc remote add --project), else default.
    return remote.project or "default"
