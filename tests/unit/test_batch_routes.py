"""A provisioning batch is refused only for its own declared routes, never for another instance's record."""

from __future__ import annotations

from ansible_collections.mage.lxd.plugins.plugin_utils.batch_checks import route_check

SHOP = {"name": "shop.example.org", "path": "/", "pass": 80}


def test_a_record_repeating_a_declared_route_warns_and_never_refuses_the_batch():
    refusals, warnings = route_check([("owner", [SHOP])], [("tenant", [SHOP]), ("other", [{**SHOP, "name": "o.example.org"}])])
    assert refusals == []
    assert len(warnings) == 1 and warnings[0].startswith("instance 'tenant': proxy[0] shop.example.org/: shop.example.org "
                                                         "is served by declared instance 'owner'")
    assert "left out of mageproxy" in warnings[0] and " Fix: " in warnings[0]


def test_a_record_claiming_a_longer_path_of_a_declared_name_is_warned_about():
    login = {**SHOP, "path": "/login"}
    warning = route_check([("owner", [SHOP])], [("tenant", [login])])[1][0]
    assert warning.startswith("instance 'tenant': proxy[0] shop.example.org/login")


def test_declared_routes_that_clash_with_each_other_still_refuse_the_batch():
    refusals = route_check([("a1", [SHOP]), ("a2", [SHOP])], [])[0]
    assert len(refusals) == 1 and "instance 'a2': proxy[0] shop.example.org/ is already routed by instance 'a1'" in refusals[0]


def test_records_of_any_shape_never_refuse_the_batch():
    deep: list = []
    for _level in range(5000):
        deep = [deep]
    for record in ([{"name": deep, "pass": 80}], {"not": "a list"}, [SHOP, SHOP], [None]):
        assert route_check([("owner", [{**SHOP, "name": "own.example.org"}])], [("tenant", record)])[0] == []
