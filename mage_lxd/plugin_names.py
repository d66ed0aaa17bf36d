"""How one mage_lxd plugin names another: the same file runs as `mage_lxd` from the checkout's
plugin folders and as `mage.lxd.mage_lxd` from the installed collection."""

from __future__ import annotations


def sibling_plugin(own_name: str, name: str) -> str:
    """`name` as seen from the plugin Ansible loaded as `own_name` (its `ansible_name`).

    In a collection (`mage.lxd.mage_lxd_instance`) the sibling gets the same collection prefix
    (`mage.lxd.mage_lxd`); loaded from a plugin folder (`mage_lxd_instance`, or under the
    `ansible.legacy` prefix) it keeps its short name, which that folder's configuration resolves.
    """
    collection = (own_name or "").rpartition(".")[0]
    if collection.count(".") != 1 or collection.startswith("ansible."):
        return name
    return f"{collection}.{name}"
