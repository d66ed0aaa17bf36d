"""How plugins name each other in the checkout (plugin folders) and in the mage.lxd collection."""

from __future__ import annotations

import pytest

from mage_lxd.plugin_names import same_plugin, sibling_plugin


@pytest.mark.parametrize(("own", "expected"), [
    ("mage.lxd.mage_lxd", "mage.lxd.mage_lxd"),
    ("mage.lxd.mage_lxd_instance", "mage.lxd.mage_lxd"),
    ("mage_lxd", "mage_lxd"),
    ("ansible.legacy.mage_lxd_instance", "mage_lxd"),
    ("", "mage_lxd"),
])
def test_the_connection_is_named_in_the_form_the_plugin_was_loaded_in(own, expected):
    assert sibling_plugin(own, "mage_lxd") == expected


def test_short_and_collection_names_of_one_plugin_are_the_same_plugin():
    assert same_plugin("mage_lxd", "mage.lxd.mage_lxd")
    assert same_plugin("ansible.legacy.mage_lxd", "mage_lxd")
    assert not same_plugin("community.general.lxd", "mage.lxd.mage_lxd")
    assert not same_plugin("ssh", "mage_lxd")
    assert not same_plugin(None, "mage_lxd")
