"""Desired-state validation and the pure part of provisioning."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import (
    DEFAULT_IMAGE_SERVER,
    ImageSource,
    check_instance_name,
    check_unique_host_ports,
    check_unique_names,
    parse_spec,
)
from ansible_collections.mage.lxd.plugins.plugin_utils.nat import BACKENDS, iptables_rules, nat_devices
from ansible_collections.mage.lxd.plugins.plugin_utils.provision import MANAGED_KEY, desired_definition, visible


def test_the_seeds_entries_parse_once_its_defects_are_fixed():
    spec = parse_spec({"name": "ubu-test-1", "image": "ubuntu/xenial/amd64",
                       "nat": [{"extif": "enp3s0", "intif": "lxdbr0", "extport": 8080, "intport": 8080}],
                       "proxy": [{"name": "ubu1.vaizard.xyz", "path": "/postgres/", "pass": 8080}]})
    # A local alias of that name first, else the same alias on the server kind's `images:` remote.
    assert spec.image == ImageSource(alias="ubuntu/xenial/amd64", remote=DEFAULT_IMAGE_SERVER, local_first=True)
    assert spec.nat[0].backend == "proxy" and spec.nat[0].proto == "tcp"
    assert spec.proxy[0]["name"] == "ubu1.vaizard.xyz"


@pytest.mark.parametrize(("name", "suggestion"), [("ubu_test_1", "ubu-test-1"), ("9lives", "i-9lives"),
                                                  ("web.1", "web-1"), ("x" * 64, "x" * 63)])
def test_invalid_names_are_refused_with_a_suggestion(name, suggestion):
    with pytest.raises(OptionError, match=f"Use '{suggestion}' instead"):
        check_instance_name(name)


def test_mounts_become_read_only_disk_devices_named_after_the_path():
    spec = parse_spec({"name": "m1", "mounts": ["/srv/data:/data:ro", "/a:/b/c"]})
    assert spec.devices["mage-mount-data"] == {"type": "disk", "source": "/srv/data", "path": "/data", "readonly": "true"}
    assert spec.devices["mage-mount-b-c"] == {"type": "disk", "source": "/a", "path": "/b/c"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "a1", "state": "running"}, "state: 'running' is not one of"),
        ({"name": "a1", "nat": [{"extport": 0}]}, "out of range"),
        ({"name": "a1", "nat": [{"extport": "http"}]}, "is not a port number"),
        ({"name": "a1", "nat": [{"extport": 80, "proto": "sctp"}]}, "proto: 'sctp'"),
        ({"name": "a1", "nat": [{"extport": 80, "backend": "iptables"}]}, "needs extif and intif"),
        ({"name": "a1", "nat": [{"extport": 80, "backend": "forward"}]}, "needs intif"),
        ({"name": "a1", "nat": [{"extport": 80, "extif": "eth0; rm -rf /"}]}, "is not a network interface name"),
        ({"name": "a1", "nat": [{"extport": 80, "listen": "999.1.1.1"}]}, "is not an IPv4 address"),
        ({"name": "a1", "mounts": ["relative:/x"]}, "is not '/host/path:/instance/path[:ro]'"),
        ({"name": "a1", "devices": {"mage-x": {"type": "disk"}}}, "'mage-' is reserved"),
        ({"name": "a1", "config": {"user.mage.proxy": "[]"}}, "managed by LXD or mage-lxd"),
        ({"name": "a1", "proxy": ["/sys/fs/cgroup:/sys/fs/cgroup:ro"]}, "put it under 'mounts'"),
    ],
)
def test_bad_declarations_are_refused(raw, message):
    with pytest.raises(OptionError, match="instance 'a1'|" + message) as error:
        parse_spec(raw)
    assert message in str(error.value)


def test_one_host_port_cannot_be_claimed_twice():
    first = parse_spec({"name": "a1", "nat": [{"extport": 80}]})
    other_address = parse_spec({"name": "a2", "nat": [{"extport": 80, "listen": "10.0.0.1"}]})
    other_proto = parse_spec({"name": "a3", "nat": [{"extport": 80, "proto": "udp"}]})
    check_unique_host_ports([first, other_proto])
    with pytest.raises(OptionError, match="instance 'a2': nat tcp/80 is already claimed by instance 'a1'"):
        check_unique_host_ports([first, other_address])


def test_desired_definition_keeps_foreign_and_volatile_keys_and_drops_what_we_no_longer_declare():
    current = {
        "config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:01", "user.foreign": "x", "user.old": "1",
                   MANAGED_KEY: json.dumps({"config": ["user.old"], "devices": ["data"]})},
        "devices": {"data": {"type": "disk"}, "theirs": {"type": "disk"}, "mage-nat-tcp-80": {"type": "proxy"}},
        "profiles": ["default", "web"],
    }
    spec = parse_spec({"name": "a1", "config": {"user.new": "2"}})
    wanted = desired_definition(spec, current, {})
    assert wanted["config"]["volatile.eth0.hwaddr"] == "00:16:3e:00:00:01"
    assert wanted["config"]["user.foreign"] == "x" and wanted["config"]["user.new"] == "2"
    assert "user.old" not in wanted["config"]
    assert set(wanted["devices"]) == {"theirs"}
    assert wanted["profiles"] == ["default", "web"]
    assert "volatile.eth0.hwaddr" not in visible(wanted)["config"]


def test_proxy_devices_and_iptables_rules_carry_the_instance():
    spec = parse_spec({"name": "a1", "nat": [{"extport": 8080, "intport": 80},
                                             {"extport": 53, "proto": "udp", "backend": "iptables",
                                              "extif": "eth0", "intif": "lxdbr0"}]})
    devices = nat_devices(spec.nat, {"tcp-8080": "192.0.2.10"})
    assert devices == {"mage-nat-tcp-8080": {"type": "proxy", "listen": "tcp:192.0.2.10:8080",
                                             "connect": "tcp:127.0.0.1:80", "bind": "host"}}
    iptables = [rule for rule in spec.nat if rule.backend == "iptables"]
    rules = iptables_rules("mage-lxd:default/a1", iptables, {rule.key: "10.0.0.5" for rule in iptables})
    assert [table for table, _rule in rules] == ["nat", "filter"]
    assert "mage-lxd:default/a1:udp-53" in rules[0][1] and "10.0.0.5:53" in rules[0][1]


FALSE_FORMS = [False, "no", "No", "false", "FALSE", "off", "0", 0, "n"]
TRUE_FORMS = [True, "yes", "true", "True", "on", "1", 1, "y"]


@pytest.mark.parametrize("option", ["ephemeral", "bootstrap", "rebuild"])
@pytest.mark.parametrize(("value", "expected"), [(v, False) for v in FALSE_FORMS] + [(v, True) for v in TRUE_FORMS])
def test_boolean_options_read_text_as_ansible_does(option, value, expected):
    # bool('no') is True: 'ephemeral: "false"' once made an ephemeral container that `lxc stop` deleted.
    assert getattr(parse_spec({"name": "web1", option: value}), option) is expected


@pytest.mark.parametrize("option", ["ephemeral", "bootstrap", "rebuild"])
def test_a_boolean_option_that_is_no_boolean_is_refused(option):
    with pytest.raises(OptionError, match=f"instance 'web1': {option}: 'maybe' is not a boolean"):
        parse_spec({"name": "web1", option: "maybe"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", 0, -1])
def test_address_timeout_must_be_finite_and_positive(value):
    # .nan once made the wait for an address endless.
    with pytest.raises(OptionError, match="address_timeout: .* must be a finite number of seconds"):
        parse_spec({"name": "web1", "address_timeout": value})


@pytest.mark.parametrize("port", ["٨٠", "８０", True, "80.0", ""])
def test_ports_are_ascii_digits_only(port):
    with pytest.raises(OptionError, match="is not a port number"):
        parse_spec({"name": "web1", "nat": [{"extport": port}]})


def test_the_documented_nat_backends_are_the_registered_ones():
    # One registry (mage_lxd.nat.BACKENDS); the module's documentation must list exactly those.
    import yaml
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "plugins" / "modules" / "mage_lxd_instance.py").read_text()
    options = yaml.safe_load(source.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])["options"]
    assert options["nat_backend"]["choices"] == list(BACKENDS)
    assert options["nat"]["suboptions"]["backend"]["choices"] == list(BACKENDS)


def test_an_instance_declared_twice_in_one_project_is_refused_once_by_name():
    specs = [parse_spec(raw) for raw in ({"name": "web1"}, {"name": "web1", "project": "shop"}, {"name": "db1"},
                                         {"name": "db1"}, {"name": "db1"})]
    with pytest.raises(OptionError) as refused:
        check_unique_names(specs)
    assert str(refused.value) == "mage_lxd_instance: instance declared twice: db1 (project default)"
    check_unique_names(specs[:3])
