"""Fault injection for the mageproxy tests, loaded only when a test puts this directory on PYTHONPATH.

MAGE_TEST_FAULT=ACTION:STEP arms one fault at the first command of mageproxy whose last line
starts with STEP (mage_test, mage_reload...): `raise` raises BrokenPipeError there (as ws4py
does on the exec path), `kill` SIGKILLs ansible-playbook and its worker, so nothing after that
point runs. The LXD, the instance and nginx stay real.
"""

from __future__ import annotations

import os
import signal

_FAULT = os.environ.get("MAGE_TEST_FAULT", "")

if _FAULT:
    from ansible_collections.mage.lxd.plugins.plugin_utils.channel import InstanceChannel

    _action, _, _step = _FAULT.partition(":")
    _real_exec = InstanceChannel.exec
    _armed = [True]

    def _exec(self, argv, *args, **kwargs):
        if _armed[0] and argv and argv[-1].rsplit("\n", 1)[-1].startswith(_step):
            _armed[0] = False
            if _action == "kill":
                os.kill(os.getppid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
            raise BrokenPipeError(32, "Broken pipe (injected by the test)")
        return _real_exec(self, argv, *args, **kwargs)

    InstanceChannel.exec = _exec
