# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: mage_lxd
short_description: Run tasks in LXD instances through the LXD API (no lxc binary)
description:
  - Runs commands with LXD's exec API and moves files with its files API, over the local unix socket
    or an HTTPS remote, in any project. No lxc binary is needed on the controller.
  - Pipelining is on by default for this connection (the module is sent on stdin), so a module run
    costs one exec.
  - The mage_lxd inventory sets everything this plugin needs (C(mage_lxd_*) host variables); each
    can be overridden with the matching C(ansible_mage_lxd_*) variable.
  - C(become) works with sudo, su and the other become methods. With a become password the command
    runs on a terminal (LXD's interactive exec, as ssh -tt), the password is typed when the become
    plugin's prompt shows, and modules are then copied rather than pipelined; a wrong password fails
    the task with the terminal's last words (the password masked), it never hangs. A password given
    where none is asked for is simply not used.
version_added: "0.2.0"
author: mage-lxd developers (!UNKNOWN)
requirements:
  - websockets >= 14 and cryptography >= 3.4 in the Python that runs Ansible (the collection's C(requirements.txt))
extends_documentation_fragment:
  - mage.lxd.mage_lxd
options:
  instance:
    description:
      - Name of the LXD instance. When no C(mage_lxd_instance) is given, C(ansible_host) names it, as
        with ssh and community.general's lxd, else the inventory host name.
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: mage_lxd_instance
      - name: ansible_mage_lxd_instance
  remote_user:
    description:
      - User to run commands as inside the instance (a name or a uid); files put for it are owned by it.
      - Files of a user other than root are written and read by a command running as that user (with
        that user's rights, as over ssh), never through LXD's files API, which works as root and
        follows symlinks. Root's files use the files API.
      - Default is root.
    type: str
    vars:
      - name: ansible_user
      - name: ansible_mage_lxd_user
    keyword:
      - name: remote_user
  exec_environment:
    description:
      - Environment variables set by LXD for every command (the task's C(environment) keyword still
        applies on top, as with any connection).
    type: dict
    default: {}
    vars:
      - name: ansible_mage_lxd_environment
  command_timeout:
    description:
      - Longest time in seconds a single command may run. The default, one hour, is longer than package
        upgrades and builds take, and bounds a command that root inside the instance makes hang; a job
        that runs longer belongs in an C(async) task (its exec returns at once) or needs this raised.
        V(0) means no limit of its own (then only the task's C(timeout) keyword bounds it).
      - A command still running then is stopped inside the instance (SIGTERM to every process that
        carries its exec id in its environment, SIGKILL to those left 2 seconds later) and the task
        fails naming this option; the host stays reachable. A process that clears its environment (sudo
        without C(env_keep)) only gets the signal its parent forwards.
      - Stdin counts, since the limit runs from the moment the command's streams are connected.
    type: float
    default: 3600
    env:
      - name: ANSIBLE_MAGE_LXD_COMMAND_TIMEOUT
    ini:
      - section: mage_lxd_connection
        key: command_timeout
    vars:
      - name: ansible_mage_lxd_command_timeout
  max_output:
    description:
      - Most bytes of output (stdout and stderr together) one command may send; the output is held in
        memory until the task ends. A command that sends more is stopped as at O(command_timeout) and
        the task fails, naming this option. V(0) means no limit.
      - Files fetched from the instance are written to disk as they come and do not count; they must
        arrive within O(command_timeout).
    type: int
    default: 268435456
    vars:
      - name: ansible_mage_lxd_max_output
  pipelining:
    description:
      - Send modules on stdin instead of copying them first (one exec per module).
      - On unless set otherwise. Ansible's own setting (C(ANSIBLE_PIPELINING), C([connection] pipelining),
        C(ansible_pipelining)) applies; this plugin's own names override it at the same level.
    type: bool
    default: true
    env:
      - name: ANSIBLE_PIPELINING
      - name: ANSIBLE_MAGE_LXD_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
      - section: mage_lxd_connection
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: ansible_mage_lxd_pipelining
"""

EXAMPLES = r"""
# With the mage.lxd.mage_lxd inventory nothing needs setting: `ansible lxd -m ansible.builtin.ping`.

# A static inventory entry for an instance in another project on an HTTPS remote
# all:
#   hosts:
#     web1:
#       ansible_connection: mage.lxd.mage_lxd
#       ansible_mage_lxd_project: shop
#       ansible_mage_lxd_url: https://lxd.example.org:8443
#       ansible_mage_lxd_client_cert: ~/.config/mage-lxd/client.crt
#       ansible_mage_lxd_client_key: ~/.config/mage-lxd/client.key
#       ansible_mage_lxd_server_cert: ~/.config/mage-lxd/server.crt

- name: Reach an instance the inventory does not list (project shop of the local LXD)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Add it with this connection
      ansible.builtin.add_host:
        name: shop-web
        groups: [shop]
        ansible_connection: mage.lxd.mage_lxd
        ansible_mage_lxd_project: shop

- name: Run as an unprivileged user, then as root through sudo
  hosts: lxd:shop
  tasks:
    - name: Who am I
      ansible.builtin.command: id -un
      remote_user: app
      changed_when: false
    - name: Install a package
      ansible.builtin.apt:
        name: curl
      become: true
"""

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.mage.lxd.plugins.plugin_utils.channel import PYTHON_MISSING_HINT, ROOT, InstanceChannel, command_limit
from ansible_collections.mage.lxd.plugins.plugin_utils.password_prompt import PasswordDialogue, after_success
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import remote_from_options

display = Display()


class Connection(ConnectionBase):
    transport = "mage_lxd"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._channel = None
        self._user = None

    def _connect(self):
        if self._channel is None:
            with raised_as(AnsibleConnectionFailure):
                remote = remote_from_options(self.get_option, where="mage_lxd connection remote")
                self._channel = InstanceChannel.connect(
                    remote,
                    project=self.get_option("project") or remote.project or "default",
                    instance=self.get_option("instance") or self._play_context.remote_addr,
                    command_timeout=command_limit(self.get_option("command_timeout")),
                    log=display.vvv,
                    max_output=self.get_option("max_output") or None,
                )
            self._connected = True
        return self

    def _exec_user(self):
        # Resolved once per connection: LXD's exec API wants numeric ids.
        if self._user is None:
            name = self.get_option("remote_user")
            with raised_as(AnsibleConnectionFailure):
                self._user = ROOT if name in (None, "", "root", "0") else self._channel.lookup_user(str(name))
        return self._user

    def _typing_password(self, sudoable):
        return bool(sudoable and self.become and self.become.expect_prompt())

    def is_pipelining_enabled(self, wrap_async=False):
        # The password is typed on the command's terminal, which is then its stdin: no module on it.
        # (expect_prompt() only turns true once the become command is built, after this is asked.)
        if self.become and _become_password(self.become):
            return False
        return super().is_pipelining_enabled(wrap_async)

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if self._typing_password(sudoable) and not in_data:
            return self._exec_with_password(cmd)
        with raised_as(AnsibleConnectionFailure, task_error_class=AnsibleError):
            code, stdout, stderr = self._channel.exec(
                ["/bin/sh", "-c", cmd],
                stdin=in_data,
                environment=self.get_option("exec_environment"),
                user=self._exec_user(),
            )
        if sudoable and self.become and self.become.success:
            stdout = after_success(stdout, self.become.success.encode())
        if code == 127 and b"python" in stderr and b"not found" in stderr.lower():
            stderr += b"\n" + PYTHON_MISSING_HINT.format(instance=self._channel.instance).encode()
        return code, stdout, stderr

    def _exec_with_password(self, cmd):
        dialogue = PasswordDialogue(
            password=to_bytes(_become_password(self.become) or ""),
            is_prompt=self.become.check_password_prompt,
            is_success=self.become.check_success,
            is_wrong_password=self.become.check_incorrect_password,
        )
        with raised_as(AnsibleConnectionFailure, task_error_class=AnsibleError):
            code, output = self._channel.exec_with_password(
                ["/bin/sh", "-c", cmd],
                dialogue,
                environment=self.get_option("exec_environment"),
                user=self._exec_user(),
                become_timeout=float(self._play_context.timeout or 10),
            )
        return code, after_success(output, self.become.success.encode()), b""

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        with raised_as(AnsibleConnectionFailure, task_error_class=AnsibleError):
            self._channel.put_file(in_path, out_path, user=self._exec_user())

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        with raised_as(AnsibleConnectionFailure, task_error_class=AnsibleError):
            self._channel.fetch_file(in_path, out_path, user=self._exec_user())

    def reset(self):
        self.close()

    def close(self):
        self._channel = None
        self._user = None
        self._connected = False


def _become_password(become):
    try:
        return become.get_option("become_pass")
    except KeyError:  # a become plugin without a password option
        return None
