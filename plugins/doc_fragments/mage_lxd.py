# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # Where the LXD server is and how to trust it: written once, shared by the connection and lookup
    # plugins (the inventory's remotes[] take the same keys).
    DOCUMENTATION = r"""
options:
  remote:
    description:
      - Name of the LXD remote, as the inventory's O(mage.lxd.mage_lxd#inventory:remotes[].name); used in messages.
      - Without O(url), a name other than C(local) is the C(lxc) or C(incus) command line client's remote of that
        name, read from its C(config.yml) (C($LXD_CONF), C(~/.config/lxc), C(~/snap/lxd/common/config), then
        C($INCUS_CONF), C(~/.config/incus)) - its address, the server certificate C(lxc remote add) pinned
        (C(servercerts/NAME.crt)), the client pair (C(client.crt), C(client.key)) and its project. Options given
        here (and the C(MAGE_LXD_*) environment variables) win over the client's values. Only C(lxd) and C(incus)
        protocol remotes serve the API; C(simplestreams) image servers are refused.
    type: str
    default: local
    vars:
      - name: mage_lxd_remote
      - name: ansible_mage_lxd_remote
  url:
    description:
      - C(https://HOST:PORT) of the LXD or Incus server, or its unix socket as C(unix:/path) or C(/path).
      - Empty means the local socket, the first that exists of LXD's (C(/var/lib/lxd/unix.socket), the
        snap's) and Incus's (C(/var/lib/incus/unix.socket)).
    type: str
    default: ""
    env:
      - name: MAGE_LXD_URL
    vars:
      - name: mage_lxd_url
      - name: ansible_mage_lxd_url
  client_cert:
    description:
      - PEM client certificate for an HTTPS remote (the server must trust it).
      - With O(trust_token) and neither O(client_cert) nor O(client_key) given, mage-lxd's own pair,
        C($XDG_CONFIG_HOME/mage-lxd/client.crt) (else C(~/.config/mage-lxd/client.crt)), generated there when missing.
        The C(lxc) and C(incus) clients' own files are never used nor changed for it.
    type: path
    env:
      - name: MAGE_LXD_CLIENT_CERT
    vars:
      - name: mage_lxd_client_cert
      - name: ansible_mage_lxd_client_cert
  client_key:
    description:
      - PEM key of O(client_cert).
      - With O(trust_token) and no client pair given, C(client.key) next to the default O(client_cert) (mode 0600).
    type: path
    env:
      - name: MAGE_LXD_CLIENT_KEY
    vars:
      - name: mage_lxd_client_key
      - name: ansible_mage_lxd_client_key
  server_cert:
    description:
      - The server's PEM certificate, pinned (its fingerprint must match).
      - Without it, the server's certificate must be signed by a CA of the system's store, except with O(trust_token)
        (and O(validate_certs) on). The token names the SHA-256 fingerprint of the server's certificate, so, as
        C(lxc remote add NAME URL --token TOKEN) does, the certificate is read before anything is sent, accepted only
        when its fingerprint is the token's (else the connection is refused naming both), and pinned at
        C($XDG_CONFIG_HOME/mage-lxd/servercerts/NAME-HASH.crt) (else C(~/.config/mage-lxd/servercerts/NAME-HASH.crt);
        NAME is O(remote), C(local) for a task's, and HASH 16 hex digits of the SHA-256 of the name, host and port,
        so each remote and server has a file of its own). Later runs pin that file, also once the token is spent.
      - A server_cert given always wins, and nothing is pinned from the token; but a token is sent only when
        server_cert is the certificate the token names (else it is refused naming both fingerprints).
    type: path
    env:
      - name: MAGE_LXD_SERVER_CERT
    vars:
      - name: mage_lxd_server_cert
      - name: ansible_mage_lxd_server_cert
  trust_token:
    description:
      - A trust token of the server (C(lxc config trust add --name NAME) on LXD, C(incus config trust add NAME) on
        Incus). A client whose certificate the server does not trust yet adds it with the token once, then goes
        on; a client that is trusted already never sends it. A token works once; a spent, expired or wrong one fails
        naming the remote and the fix. Anything that is not such a token fails naming the option.
      - As C(lxc remote add --token), the token is sent only to the server it names, whatever O(validate_certs)
        says; the certificate of the connection it goes on must have the token's SHA-256 fingerprint.
      - With a token, O(url) is all else an HTTPS remote needs. O(client_cert) and O(client_key) default to
        mage-lxd's own pair and O(server_cert) is pinned from the token (see both). A missing pair is generated at
        its paths first, as the CLIs make them (EC P-384, self-signed; the key mode 0600, new directories 0700).
      - A second controller with a token another one spent fails; make a token for each controller, or give it
        the first one's client pair.
    type: str
    version_added: 0.3.0
    env:
      - name: MAGE_LXD_TRUST_TOKEN
    vars:
      - name: mage_lxd_trust_token
      - name: ansible_mage_lxd_trust_token
  validate_certs:
    description: Verify the server's TLS certificate. Only a throwaway lab should turn this off.
    type: bool
    default: true
    vars:
      - name: mage_lxd_validate_certs
      - name: ansible_mage_lxd_validate_certs
  project:
    description:
      - The LXD project of the instance.
      - Default the project of the CLI remote O(remote) names, else C(default).
    type: str
    vars:
      - name: mage_lxd_project
      - name: ansible_mage_lxd_project
  timeout:
    description: Seconds to wait when connecting to LXD and for metadata answers.
    type: float
    default: 10
    vars:
      - name: ansible_mage_lxd_timeout
"""


def _task_options_only(documentation: str) -> str:
    # A module's options come from the task alone: Ansible variables and environment variables
    # cannot feed them (validate-modules refuses vars/env in module docs).
    kept = []
    for line in documentation.splitlines():
        if line.strip() in ("vars:", "env:") or line.startswith("      - name: "):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


# The same options for the instance module (extends_documentation_fragment: mage.lxd.mage_lxd.module).
ModuleDocFragment.MODULE = _task_options_only(ModuleDocFragment.DOCUMENTATION)
