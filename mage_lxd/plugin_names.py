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


def same_plugin(name: object, other: object) -> bool:
    """Whether two plugin names load the same file: `mage_lxd` (a plugin folder, also as
    `ansible.legacy.mage_lxd`) and `mage.lxd.mage_lxd` (the collection) are one plugin."""

    def file_of(value: object) -> str:
        prefix, _, short = str(value).rpartition(".")
        return short if prefix in ("", "ansible.legacy", "mage.lxd") else str(value)

    return file_of(name) == file_of(other)
