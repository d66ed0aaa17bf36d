"""Shared fixtures: the lab LXD must be up (make test runs lab/up.sh first)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# lxd_lab, for every test.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lxd_lab import LAB, ON_INCUS, SERVER, TITLE, lxc  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lxd_only(reason): cannot run on Incus; skipped there with the reason")
    config.addinivalue_line("markers", "incus_only(reason): cannot run on LXD; skipped there with the reason")


def pytest_report_header() -> str:
    return f"mage-lxd lab server: {SERVER}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that cannot run on this pass's server is skipped with its reason, never passed.
    unsupported = "lxd_only" if ON_INCUS else "incus_only"
    for item in items:
        marker = item.get_closest_marker(unsupported)
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"{TITLE} pass: {reason}"))


@pytest.fixture(scope="session")
def lab() -> dict[str, str]:
    """The lab's settings; fails (never skips) when the lab's server is not answering or is not
    the kind this pass tests."""
    result = lxc("query", "/1.0", check=False)
    if result.returncode != 0:
        pytest.fail(f"the lab {TITLE} is not answering ({result.stderr.strip()}); run lab/up.sh (./run test does)")
    server = json.loads(result.stdout)["environment"].get("server", "lxd")
    if server != SERVER:
        pytest.fail(f"the lab's {TITLE} socket answers as '{server}'")
    return LAB
