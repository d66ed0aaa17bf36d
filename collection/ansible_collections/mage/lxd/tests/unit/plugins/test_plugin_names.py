# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plugins as ansible-core loads them from the installed collection, on this ansible-core."""

from __future__ import annotations

from ansible.plugins.loader import action_loader, connection_loader, inventory_loader, lookup_loader

from mage_lxd.plugin_names import sibling_plugin


def test_the_inventory_names_the_collections_own_connection():
    inventory = inventory_loader.get("mage.lxd.mage_lxd")
    connection_name = sibling_plugin(inventory.ansible_name, "mage_lxd")
    assert connection_name == "mage.lxd.mage_lxd"
    # The name the inventory sets as ansible_connection must load the connection of this collection.
    connection_class = connection_loader.get(connection_name, class_only=True)
    assert connection_class.__module__ == "ansible_collections.mage.lxd.plugins.connection.mage_lxd"


def test_the_instance_action_names_the_same_connection_for_hosts_it_adds():
    action_class = action_loader.get("mage.lxd.mage_lxd_instance", class_only=True)
    assert sibling_plugin(action_class.ansible_name, "mage_lxd") == "mage.lxd.mage_lxd"


def test_a_plugin_loaded_from_a_plugin_folder_keeps_short_names():
    # What the repository checkout's inventory_plugins/ and action_plugins/ folders give.
    assert sibling_plugin("mage_lxd", "mage_lxd") == "mage_lxd"
    assert sibling_plugin("ansible.legacy.mage_lxd_instance", "mage_lxd") == "mage_lxd"


def test_the_inventory_accepts_only_its_own_config_file_names(tmp_path):
    inventory = inventory_loader.get("mage.lxd.mage_lxd")
    accepted = [tmp_path / "mage_lxd.yml", tmp_path / "prod.mage_lxd.yaml"]
    refused = [tmp_path / "hosts.yml", tmp_path / "mage_lxd.ini"]
    for path in accepted + refused:
        path.write_text("plugin: mage.lxd.mage_lxd\n")
    assert [inventory.verify_file(str(path)) for path in accepted] == [True, True]
    assert [inventory.verify_file(str(path)) for path in refused] == [False, False]


def test_the_lookup_loads_by_its_fqcn():
    assert lookup_loader.get("mage.lxd.mage_lxd") is not None
