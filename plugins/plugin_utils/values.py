"""The one rule for option values that arrive as text (-e key=no, INI inventories, templates)."""

from __future__ import annotations

from typing import Any

from .errors import OptionError

# Ansible's own boolean spellings (ansible.module_utils.parsing.convert_bool), so 'no' means no
# here exactly as it does for every other module.
TRUE_WORDS = frozenset({"y", "yes", "on", "1", "true", "t", "1.0"})
FALSE_WORDS = frozenset({"n", "no", "off", "0", "false", "f", "0.0"})


def parse_bool(value: Any, what: str) -> bool:
    """A boolean as Ansible reads one; anything else is refused, naming the option."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise OptionError(f"{what}: '{value}' is not a boolean. Fix: use true or false (yes/no, on/off, 1/0 also work).")
