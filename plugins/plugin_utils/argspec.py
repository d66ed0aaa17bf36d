"""Argument specs derived from a plugin's documented options, so the options are listed once.

The action plugins hand the spec to Ansible's own ArgumentSpecValidator (as ansible-core's action
plugins do): numbers, lists and choices then mean what they mean everywhere in Ansible. Booleans
pass through as given and are read by values.parse_bool, the one boolean rule of the collection
(its spellings are Ansible's), so an option and a route's flag answer 'no' alike and refuse 'maybe'
with the same message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The keys of an option's documentation that also mean something to the validator.
_SPEC_KEYS = ("type", "elements", "choices", "required", "aliases")


def argument_spec(options: Mapping[str, Mapping[str, Any]], leave_out: Iterable[str] = ()) -> dict[str, Any]:
    """An argument spec from documented `options`, without `leave_out` and without defaults.

    Defaults stay out on purpose: a value the task did not give must stay distinguishable from one it
    gave (task options are defaults for each entry of `instances`; an unset url means "read the
    environment"), and the library applies each default itself."""
    skipped = set(leave_out)
    spec: dict[str, Any] = {}
    for name, doc in options.items():
        if name in skipped:
            continue
        entry = {key: doc[key] for key in _SPEC_KEYS if key in doc}
        if entry.get("type") == "bool":
            entry["type"] = "raw"
        if doc.get("suboptions"):
            entry["options"] = argument_spec(doc["suboptions"])
        spec[name] = entry
    return spec


def given(value: Any) -> Any:
    """Validated parameters without the None the validator fills in for sub-options not given."""
    if isinstance(value, Mapping):
        return {key: given(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [given(item) for item in value]
    return value
