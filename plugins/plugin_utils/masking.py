"""Config values that are secrets, and how output shows them: that a key is there or changed, never
its value.

An instance's `environment.*` (database passwords, API tokens) and its cloud-init data (users,
keys, passwords) are read from LXD and written back by the instance module; diff mode, a task's
result at -v and the inventory's `lxd_config` would otherwise print them whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECRET_CONFIG_PREFIXES = ("environment.", "cloud-init.")
SECRET_CONFIG_KEYS = frozenset({"user.user-data", "user.vendor-data", "user.meta-data", "user.network-config"})
HIDDEN = "(secret, not shown)"
HIDDEN_CHANGED = "(secret, not shown; changed)"


def is_secret_key(key: str) -> bool:
    """True for a config key whose value output never shows."""
    return key.startswith(SECRET_CONFIG_PREFIXES) or key in SECRET_CONFIG_KEYS


def masked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with every secret value replaced by HIDDEN (keys kept, so their presence shows)."""
    return {key: HIDDEN if is_secret_key(key) else value for key, value in config.items()}


def masked_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A diff's before and after (each may hold a `config` mapping) with secret values hidden; a
    secret that changed shows HIDDEN_CHANGED after, so the diff still says it changed."""
    old = dict(before.get("config") or {})
    new = dict(after.get("config") or {})
    masked_before, masked_after = dict(before), dict(after)
    if "config" in before:
        masked_before["config"] = masked_config(old)
    if "config" in after:
        masked_after["config"] = {
            key: (HIDDEN if old.get(key) == value else HIDDEN_CHANGED) if is_secret_key(key) and key in old
            else HIDDEN if is_secret_key(key) else value
            for key, value in new.items()}
    return masked_before, masked_after
