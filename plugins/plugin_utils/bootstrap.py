"""Make an instance manageable by Ansible: find python, or install it with its own package manager.

Everything goes through the exec API, so it works on an instance that has no python at all.
"""

from __future__ import annotations

import time

from .channel import InstanceChannel
from .errors import RemoteError

# (command to look for, shell command that installs python with it), in order of preference.
PACKAGE_MANAGERS = (
    ("apt-get", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3"),
    ("dnf", "dnf install -y python3"),
    ("yum", "yum install -y python3"),
    ("apk", "apk add --no-cache python3"),
    ("zypper", "zypper --non-interactive install python3"),
    ("pacman", "pacman -Sy --noconfirm python"),
)
FIND_PYTHON = "command -v python3 || command -v python"


def find_python(channel: InstanceChannel) -> str:
    """The path of python in the instance, or '' when there is none."""
    code, out, _err = channel.exec(["/bin/sh", "-c", FIND_PYTHON])
    return out.decode(errors="replace").strip().splitlines()[0] if code == 0 and out.strip() else ""


def install_python(channel: InstanceChannel, attempts: int = 3, delay: float = 2.0) -> str:
    """Install python3 with the instance's package manager, retrying transient failures.

    Returns the package manager used. Raises RemoteError naming the instance when there is no known
    package manager or every attempt failed (with the last output).
    """
    probe = " ; ".join(f"command -v {tool} >/dev/null && echo {tool}" for tool, _install in PACKAGE_MANAGERS)
    _code, out, _err = channel.exec(["/bin/sh", "-c", probe + " ; true"])
    found = out.decode(errors="replace").split()
    if not found:
        raise RemoteError(
            f"{channel.describe()} has no python and none of the package managers mage-lxd knows "
            f"({', '.join(tool for tool, _install in PACKAGE_MANAGERS)}). Fix: use an image with python, or "
            "set bootstrap: false and manage it with ansible.builtin.raw."
        )
    tool = found[0]
    command = dict(PACKAGE_MANAGERS)[tool]
    last = b""
    for attempt in range(1, attempts + 1):
        code, out, err = channel.exec(["/bin/sh", "-c", command])
        if code == 0 and find_python(channel):
            return tool
        last = (out + err)[-2000:]
        if attempt < attempts:
            time.sleep(delay * attempt)
    raise RemoteError(
        f"{channel.describe()}: installing python with {tool} failed {attempts} times. Last output:\n"
        f"{last.decode(errors='replace').strip()}\nFix: give the instance a reachable package source."
    )
