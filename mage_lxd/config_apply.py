"""Apply config files to a running service in an instance without ever leaving it broken.

Used for mageproxy: compare the rendered files with what the instance holds (two reads through the
files API, no exec); when nothing differs, do nothing at all. Otherwise prepare, write, test the
whole configuration, reload; if any step fails, the previous files (and whatever the prepare step
moved) are put back, the service keeps running its old configuration, and the error says which
step failed and what the service answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mage_lxd.channel import InstanceChannel
from mage_lxd.errors import RemoteError


@dataclass(frozen=True)
class ServiceCommands:
    """Shell commands run in the instance around a change (each must exit 0)."""

    prepare: str = ""
    test: str = ""
    reload: str = ""
    undo_prepare: str = ""


@dataclass
class ApplyResult:
    """Which files changed (or would, in check mode), and their before/after text for diff mode."""

    changed: list[str] = field(default_factory=list)
    diff: list[dict[str, str]] = field(default_factory=list)


def apply_config(
    channel: InstanceChannel, files: Mapping[str, str], commands: ServiceCommands, check_mode: bool = False
) -> ApplyResult:
    """Make `files` (path -> text) the instance's, safely (see the module docstring)."""
    result = ApplyResult()
    previous: dict[str, bytes | None] = {}
    for path, text in files.items():
        current = channel.read_small_file(path)
        if current != text.encode():
            previous[path] = current
            result.changed.append(path)
            result.diff.append({"before_header": path, "after_header": path,
                                "before": (current or b"").decode(errors="replace"), "after": text})
    if not result.changed or check_mode:
        return result
    _run(channel, commands.prepare, "prepare")
    try:
        for path in result.changed:
            channel.write_small_file(path, files[path].encode())
        _run(channel, commands.test, "test")
        _run(channel, commands.reload, "reload")
    except RemoteError as failure:
        _restore(channel, previous, commands)
        # The message already holds the failure; no chained duplicate.
        raise RemoteError(f"{failure} The previous configuration was put back and is still served.") from None
    return result


def _run(channel: InstanceChannel, command: str, step: str) -> None:
    if not command:
        return
    code, out, err = channel.exec(["/bin/sh", "-c", command])
    if code != 0:
        said = (err or out).decode(errors="replace").strip()
        raise RemoteError(f"{channel.describe()}: the {step} step ({command}) failed with exit {code}: {said}")


def _restore(channel: InstanceChannel, previous: Mapping[str, bytes | None], commands: ServiceCommands) -> None:
    for path, content in previous.items():
        if content is None:
            channel.exec(["rm", "-f", path])
        else:
            channel.write_small_file(path, content)
    _run(channel, commands.undo_prepare, "undo of prepare")
