"""Fault injection for the mageproxy tests, loaded only when a test puts this directory on PYTHONPATH.

MAGE_TEST_FAULT=ACTION:STEP arms one fault at the first command of mageproxy whose last line
starts with STEP (mage_test, mage_reload...): `raise` raises BrokenPipeError there (as a socket
LXD closed first does on the exec path), `kill` SIGKILLs ansible-playbook and its worker, so
nothing after that point runs. The LXD, the instance and nginx stay real.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys

_FAULT = os.environ.get("MAGE_TEST_FAULT", "")

CHANNEL = "ansible_collections.mage.lxd.plugins.plugin_utils.channel"


def _arm(channel_class) -> None:
    action, _colon, step = _FAULT.partition(":")
    real_exec = channel_class.exec
    armed = [True]

    def _exec(self, argv, *args, **kwargs):
        if armed[0] and argv and argv[-1].rsplit("\n", 1)[-1].startswith(step):
            armed[0] = False
            if action == "kill":
                os.kill(os.getppid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
            raise BrokenPipeError(32, "Broken pipe (injected by the test)")
        return real_exec(self, argv, *args, **kwargs)

    channel_class.exec = _exec


if _FAULT:
    # The library is only importable once Ansible has set up its collection loader, so the fault is
    # armed right after the first import statement that has loaded the channel module.
    _real_import = builtins.__import__

    def _import(*args, **kwargs):
        module = _real_import(*args, **kwargs)
        channel = sys.modules.get(CHANNEL)
        if channel is not None and hasattr(channel, "InstanceChannel"):
            builtins.__import__ = _real_import
            _arm(channel.InstanceChannel)
        return module

    builtins.__import__ = _import
