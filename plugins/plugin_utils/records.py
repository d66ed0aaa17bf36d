"""JSON records read from the server (`user.mage.*` config values), decoded within bounds.

Anyone who may edit an instance's config writes these values. Python's JSON decoder, and every
recursive walk after it (Ansible's unsafe marking, templating, the route planner), fail with
RecursionError on about a kilobyte of nested brackets; so the nesting depth is measured without
recursion, and the length checked, before anything parses the value.
"""

from __future__ import annotations

import json
from typing import Any

# Generous for what mage-lxd writes (routes and NAT rules nest 4 levels, a few KiB for many routes),
# far below what breaks Python's recursion limit (1000 frames) or holds a controller up.
MAX_RECORD_DEPTH = 32
MAX_RECORD_CHARS = 256 * 1024
_OPENERS = frozenset("[{")
_CLOSERS = frozenset("]}")


class RecordError(ValueError):
    """A server record refused before parsing: too long or nested too deep (see the message)."""


def nesting_depth(raw: str, stop_above: int = MAX_RECORD_DEPTH) -> int:
    """How deep brackets nest in `raw` (JSON text), strings ignored; stops counting above `stop_above`."""
    depth = deepest = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    return deepest
        elif char in _CLOSERS:
            depth -= 1
    return deepest


def decode_record(raw: str) -> Any:
    """Decode one JSON record read from the server.

    Raises RecordError when it is longer than MAX_RECORD_CHARS or nests deeper than
    MAX_RECORD_DEPTH, and ValueError (json's) when it is not JSON; RecordError is a ValueError too,
    so a caller that treats any unreadable record alike catches ValueError only.
    """
    if len(raw) > MAX_RECORD_CHARS:
        raise RecordError(f"is {len(raw)} characters long (at most {MAX_RECORD_CHARS} are read)")
    depth = nesting_depth(raw)
    if depth > MAX_RECORD_DEPTH:
        raise RecordError(f"nests more than {MAX_RECORD_DEPTH} levels deep")
    return json.loads(raw)
