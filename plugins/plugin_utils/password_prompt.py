"""Become with a password: the command runs on a terminal, and the password is typed at the
become plugin's prompt.

The connection plugin passes the become plugin's own checks (prompt, success marker, wrong
password), so every method Ansible knows (sudo, su, doas, ...) is recognised the way it is over ssh.
This module holds no Ansible import: the checks are plain callables. The terminal is an exec
websocket of exec_stream's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import ExecError, MageLxdError
from .exec_stream import (
    DEFAULT_MAX_OUTPUT, ExecRequest, check_operation, exec_answer, exec_body, open_stream, output_exceeded, receive,
    require_websockets, stop_command, stopped_after_timeout, wait_for_exec,
)
from .lxd_api import LxdApi

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

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
    """The command's own output: what follows become's success marker line, on a pipe (stdout)
    and on a terminal alike; `output` itself when the marker does not begin a line.

    become runs `echo MARKER; command` (Ansible's BecomeBase._build_success_command), so the marker
    is the first thing the become shell prints, at the start of a line. Before it there is nothing
    on a pipe, and on a terminal only the become tool's own words: its prompt, then the newline
    sudo, su (PAM) and doas print after reading a password with echo off. Those go with the marker.
    A first marker that does not begin a line was not printed by that echo: nothing is dropped.
    """
    head, found, tail = output.partition(marker)
    if not found or head[-1:] not in (b"", b"\n"):
        return output
    return tail.lstrip(b"\r\n")


def run_with_password(api: LxdApi, instance: str, request: ExecRequest, dialogue: PasswordDialogue,
                      become_timeout: float) -> tuple[int, bytes]:
    """Run `request` on a pty, typing the become password when `dialogue` sees its prompt; return
    (exit code, everything the terminal showed). A failed become stops the command (its terminal
    closes) and raises BecomeError; the password is never part of a message. command_timeout counts
    once, from the moment the streams are connected (as exec_stream.run_exec's does)."""
    require_websockets()
    exec_id = uuid.uuid4().hex
    response = api.request("post", f"instances/{quote(instance, safe='')}/exec",
                           json=exec_body(request, exec_id, terminal=True), timeout=api.remote.timeout)
    streams: dict[str, ClientConnection] = {}
    stage, ran = "did not start (its terminal could not be connected)", False
    try:
        operation_url, secrets = exec_answer(response)
        for fd in ("0", "control"):
            # The terminal ("0") carries the command's output as well as the password.
            streams[fd] = open_stream(api.remote, operation_url, secrets[fd], api.project,
                                      reads_output=fd == "0")
        deadline = None if request.timeout is None else time.monotonic() + request.timeout
        stage, ran = "started, but become did not finish (the terminal broke)", True
        output = answer_prompts(streams["0"], dialogue, become_timeout, request.max_output)
        # When the command exits, LXD sends an empty message on the terminal and then waits for us
        # to close it before it ends the operation.
        rest, finished = read_terminal(streams["0"], _left(deadline),
                                       None if request.max_output is None else request.max_output - len(output))
        output += rest
        if finished is None:
            stop_command(api, instance, exec_id)
            raise output_exceeded(request.max_output or 0)
        if not finished:
            raise stopped_after_timeout(api, instance, exec_id, request.timeout or 0)
        streams["0"].close()
        streams["control"].close()
        stage = "started, but its result is unknown (waiting for it to finish failed)"
        operation = wait_for_exec(api, operation_url, _left(deadline))
        if operation is None:
            raise stopped_after_timeout(api, instance, exec_id, request.timeout or 0)
        check_operation(operation)
    except (ExecError, BecomeError):
        raise
    except Exception as exc:  # every failure of the stream path says how far the command got
        raise ExecError(f"{stage}: {type(exc).__name__}: {exc}", ran=ran) from exc
    finally:
        for stream in streams.values():
            stream.close()
    return int(operation["metadata"]["return"]), output


def _left(deadline: float | None) -> float | None:
    """The seconds left until `deadline` (a time.monotonic() value), at least 0; None: no limit."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def answer_prompts(terminal: ClientConnection, dialogue: PasswordDialogue, timeout: float,
                   max_output: int | None = DEFAULT_MAX_OUTPUT) -> bytes:
    """Read the terminal until become reports success, typing the password when asked (at most
    `max_output` bytes of it: a prompt is short)."""
    output = b""
    deadline = time.monotonic() + timeout
    while not dialogue.done(output):
        if max_output is not None and len(output) > max_output:
            raise BecomeError(f"more than {max_output} bytes on the terminal before become succeeded (max_output); "
                              f"the terminal showed: {dialogue.shown(output[-2000:])}")
        try:
            message = receive(terminal, _left(deadline))
        except TimeoutError:
            raise BecomeError(f"no become success within {timeout:g}s; the terminal showed: "
                              f"{dialogue.shown(output)}") from None
        if not message:  # the end of output: the command has exited
            raise BecomeError(f"the command ended before become succeeded; the terminal showed: "
                              f"{dialogue.shown(output)}")
        output += message
        try:
            reply = dialogue.answer(output)
        except BecomeError as exc:
            raise BecomeError(f"{exc}; the terminal showed: {dialogue.shown(output)}") from None
        if reply:
            terminal.send(reply)
    return output


def read_terminal(terminal: ClientConnection, seconds: float | None,
                  max_output: int | None = None) -> tuple[bytes, bool | None]:
    """What the terminal shows until LXD's end-of-output (an empty message); (output, ended):
    ended is False after `seconds`, None once more than `max_output` bytes came."""
    chunks = []
    size = 0
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while True:
            message = receive(terminal, _left(deadline))
            if not message:
                return b"".join(chunks), True
            size += len(message)
            if max_output is not None and size > max_output:
                return b"".join(chunks), None
            chunks.append(message)
    except TimeoutError:
        return b"".join(chunks), False
