"""Answering a become password prompt in a command's terminal output.

The connection plugin passes the become plugin's own checks (prompt, success marker, wrong
password), so every method Ansible knows (sudo, su, doas, ...) is recognised the way it is over ssh.
This module holds no Ansible import: the checks are plain callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import MageLxdError

Check = Callable[[bytes], bool]


class BecomeError(MageLxdError):
    """become did not succeed: wrong password, a second prompt, or no answer in time."""

    task_failure = True


@dataclass
class PasswordDialogue:
    """Types the password once at the first prompt, then waits for the success marker."""

    password: bytes
    is_prompt: Check
    is_success: Check
    is_wrong_password: Check
    sent: bool = False
    prompt_end: int = 0

    def answer(self, output: bytes) -> bytes | None:
        """What to type now that the terminal shows `output` (all of it so far); None for nothing.

        Raises BecomeError when become has failed, so the caller stops the command.
        """
        if self.is_wrong_password(output[self.prompt_end:]):
            raise BecomeError("the become password was refused (wrong password)")
        if self.is_prompt(output[self.prompt_end:]):
            if self.sent:
                raise BecomeError("the become password was asked for again (wrong password?)")
            self.sent = True
            self.prompt_end = len(output)
            return self.password + b"\n"
        return None

    def shown(self, output: bytes) -> str:
        """The end of the terminal output for a message, the password masked should it show."""
        text = output.replace(self.password, b"********") if self.password else output
        return repr(text[-300:].decode(errors="replace").strip())

    def done(self, output: bytes) -> bool:
        """True once the become plugin's success marker has been printed."""
        return self.is_success(output)


def after_success(output: bytes, marker: bytes) -> bytes:
    """The command's own output: what follows the success marker line (prompt and marker dropped)."""
    head, found, tail = output.partition(marker)
    return tail.lstrip(b"\r\n") if found else output
