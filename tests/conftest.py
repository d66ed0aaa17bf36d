"""Shared fixtures: the lab LXD must be up (make test runs lab/up.sh first)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lxd_lab import LAB, lxc  # noqa: E402


@pytest.fixture(scope="session")
def lab() -> dict[str, str]:
    """The lab's settings; fails (never skips) when the lab LXD is not answering."""
    result = lxc("query", "/1.0", check=False)
    if result.returncode != 0:
        pytest.fail(f"the lab LXD is not answering ({result.stderr.strip()}); run lab/up.sh (make test does)")
    return LAB
