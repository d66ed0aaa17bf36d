"""The one rule for each kind of value: port, IPv4, address and its family, choice, instance name."""

from __future__ import annotations

import re
import socket

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.instance_spec import check_instance_name
from ansible_collections.mage.lxd.plugins.plugin_utils.routes import hosts_file_name
from ansible_collections.mage.lxd.plugins.plugin_utils.values import (
    address_family, is_instance_name, parse_choice, parse_ipv4, parse_port, read_address)


@pytest.mark.parametrize(("value", "port"), [(80, 80), ("8080", 8080), (" 443 ", 443), (65535, 65535)])
def test_a_port_is_a_number_or_its_ascii_digits(value, port):
    assert parse_port(value, "nat[0].extport") == port


@pytest.mark.parametrize(("value", "message"), [
    (0, "nat[0].extport: 0 is out of range (1-65535)"),
    (70000, "nat[0].extport: 70000 is out of range (1-65535)"),
    (True, "nat[0].extport: 'True' is not a port number (1-65535)"),
    ("http", "nat[0].extport: 'http' is not a port number (1-65535)"),
    ("\u0668\u0660", "is not a port number"),  # Arabic-Indic digits, which int() takes
    ("+80", "is not a port number"),
    (80.5, "is not a port number"),
])
def test_anything_else_is_refused_naming_the_option(value, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        parse_port(value, "nat[0].extport")


@pytest.mark.parametrize("text", ["10.0.0.1", "255.255.255.255", "0.0.0.0"])
def test_an_ipv4_address_is_kept_as_given(text):
    assert parse_ipv4(text, "nat[0].listen") == text


@pytest.mark.parametrize("text", ["999.1.1.1", "10.0.0", "10.0.0.1\n", "fd00::1", "10.0.0.\u0661", "010.0.0.1", ""])
def test_anything_else_is_not_an_ipv4_address(text):
    with pytest.raises(OptionError, match=r"(?s)^nat\[0\]\.listen: '.*' is not an IPv4 address$"):
        parse_ipv4(text, "nat[0].listen")


@pytest.mark.parametrize(("text", "version"), [("10.187.33.1", 4), ("fd42::1", 6), ("::ffff:10.0.0.1", 6)])
def test_an_address_is_read_by_allow_list(text, version):
    assert read_address(text).version == version


@pytest.mark.parametrize("text", ["fe80::1%eth0", "fe80::1%x;allow all;#", "10.0.0.0/8", "", None, 10, "web1"])
def test_scope_ids_prefixes_and_names_are_no_address(text):
    assert read_address(text) is None


@pytest.mark.parametrize(("address", "family"), [
    ("10.0.0.1", socket.AF_INET), ("[fd00::1]", socket.AF_INET6), ("::", socket.AF_INET6), ("", socket.AF_INET),
    ("0.0.0.0", socket.AF_INET)])
def test_the_family_comes_from_the_address_itself(address, family):
    assert address_family(address) == family


def test_a_choice_is_one_of_the_allowed_values():
    assert parse_choice("udp", ("tcp", "udp"), "nat[0].proto") == "udp"
    with pytest.raises(OptionError, match=r"^nat\[0\].proto: 'sctp' is not one of tcp, udp$"):
        parse_choice("sctp", ("tcp", "udp"), "nat[0].proto")


NAMES = ["web1", "a", "Web-1", "a" * 63, "", "9lives", "-web", "web-", "web_1", "web.1", "a" * 64, "w\u0661", "w1\n"]


@pytest.mark.parametrize("name", NAMES)
def test_a_declaration_and_a_route_take_the_same_instance_names(name):
    # LXD's and Incus's rule: 1-63 ASCII letters, digits and '-', a letter first, no '-' last.
    valid = name in ("web1", "a", "Web-1", "a" * 63)
    assert is_instance_name(name) is valid
    for check in (check_instance_name, lambda text: hosts_file_name(text, "mage_lxd_instance")):
        if valid:
            assert check(name) == name
        else:
            with pytest.raises(OptionError):
                check(name)
