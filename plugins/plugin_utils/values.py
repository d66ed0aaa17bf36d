"""The one rule for each kind of value a user or a server gives as text: boolean, port, address
and its family, choice. Options arrive as text from -e key=no, INI inventories and templates, and
LXD keeps its config as strings; every reader of such a value goes through here. Also the one rule
for an instance's name, which the declarations, the routes and mageproxy's /etc/hosts share, and
for a project's."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

from .errors import OptionError

# Ansible's own boolean spellings (ansible.module_utils.parsing.convert_bool), so 'no' means no
# here exactly as it does for every other module. LXD's own (shared.IsTrue: true, 1, yes, on, and
# their opposites) are among them.
TRUE_WORDS = frozenset({"y", "yes", "on", "1", "true", "t", "1.0"})
FALSE_WORDS = frozenset({"n", "no", "off", "0", "false", "f", "0.0"})
# ASCII digits only: int() and str.isdigit() also take the digits of other scripts.
_ASCII_PORT = re.compile(r"[0-9]+")
# What an IP address is written with; ipaddress alone also takes IPv6 scope ids ('fe80::1%x;allow all;#').
_ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f.:]{2,45}")
# The kinds of instance LXD and Incus make.
INSTANCE_TYPES = ("container", "virtual-machine")
# LXD's and Incus's instance name (their IsHostname): 1-63 ASCII letters, digits and '-', starting
# with a letter and not ending with '-'.
_INSTANCE_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# LXD's rule for project and profile names: no slashes, spaces or other separators it uses in URLs.
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def read_bool(value: Any) -> bool | None:
    """`value` as Ansible reads a boolean; None when it is none (the one spelling rule)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


def parse_bool(value: Any, what: str) -> bool:
    """A boolean as Ansible reads one; anything else is refused, naming the option."""
    found = read_bool(value)
    if found is None:
        raise OptionError(f"{what}: '{value}' is not a boolean.",
                          fix="use true or false (yes/no, on/off, 1/0 also work).")
    return found


def parse_port(value: Any, what: str) -> int:
    """A TCP or UDP port, 1-65535, given as a number or its ASCII digits (never a boolean)."""
    text = str(value).strip()
    if isinstance(value, bool) or not _ASCII_PORT.fullmatch(text):
        raise OptionError(f"{what}: '{value}' is not a port number (1-65535)")
    port = int(text)
    if not 1 <= port <= 65535:
        raise OptionError(f"{what}: {port} is out of range (1-65535)")
    return port


def parse_ipv4(value: Any, what: str) -> str:
    """An IPv4 address in dotted-quad form (ASCII digits, no leading zeros), as given (read_address's rule)."""
    text = str(value)
    found = read_address(text)
    if found is None or found.version != 4:
        raise OptionError(f"{what}: '{text}' is not an IPv4 address")
    return text


def read_address(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IPv4 or IPv6 address by allow-list (no scope id, no prefix), or None (the one address rule)."""
    if not isinstance(text, str) or not _ADDRESS_TEXT.fullmatch(text):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_family(address: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (brackets allowed), else AF_INET (IPv4, empty, or no address)."""
    found = read_address(address.strip("[]"))
    return socket.AF_INET6 if found is not None and found.version == 6 else socket.AF_INET


def is_instance_name(value: Any) -> bool:
    """True when `value` is a name LXD and Incus give an instance (the one name rule)."""
    return isinstance(value, str) and _INSTANCE_NAME.fullmatch(value) is not None


def is_project_name(value: Any) -> bool:
    """True when `value` is a project (or profile) name mage-lxd accepts (the one project name rule)."""
    return isinstance(value, str) and _PROJECT_NAME.fullmatch(value) is not None


def parse_choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    """`value` when it is one of `allowed`; refused, listing them, otherwise."""
    text = str(value)
    if text not in allowed:
        raise OptionError(f"{what}: '{text}' is not one of {', '.join(allowed)}")
    return text
