"""mage_lxd: the library behind the mage-lxd Ansible plugins.

Plugins are thin adapters; what talks to LXD (remote), reads it (snapshot) and turns what it
read into Ansible inventory (inventory) lives here, typed and testable without Ansible.
"""

from __future__ import annotations

__version__ = "0.2.0"
