"""The exec path: the exec request body, LXD's operation verdicts, the become dialogue, and an
output stream against a real websocket peer on a unix socket."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils import password_prompt
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import ExecError
from ansible_collections.mage.lxd.plugins.plugin_utils.exec_stream import (
    EXEC_ID_VARIABLE, ExecRequest, OutputBudget, OutputReader, check_operation, exec_body, open_stream, stop_script,
)
from ansible_collections.mage.lxd.plugins.plugin_utils.password_prompt import (
    BecomeError, PasswordDialogue, after_success, answer_prompts, read_terminal,
)
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote

PROMPT = b"[sudo via ansible, key=k] password:"
SUCCESS = b"BECOME-SUCCESS-k"


def dialogue() -> PasswordDialogue:
    return PasswordDialogue(password=b"s3cret", is_prompt=lambda out: PROMPT in out,
                            is_success=lambda out: SUCCESS in out,
                            is_wrong_password=lambda out: b"Sorry, try again." in out)


def test_the_password_is_typed_once_at_the_prompt_then_success_ends_the_dialogue():
    talk = dialogue()
    assert talk.answer(b"") is None
    assert talk.answer(PROMPT) == b"s3cret\n"
    assert not talk.done(PROMPT + b"\r\n")
    assert talk.answer(PROMPT + b"\r\n") is None  # the same prompt is not answered twice
    assert talk.done(PROMPT + b"\r\n" + SUCCESS + b"\r\n")
    assert after_success(PROMPT + b"\r\n" + SUCCESS + b"\r\n{\"ok\": 1}\r\n", SUCCESS) == b"{\"ok\": 1}\r\n"


def test_a_wrong_password_or_a_second_prompt_is_an_error_that_never_shows_the_password():
    talk = dialogue()
    talk.answer(PROMPT)
    with pytest.raises(BecomeError, match="wrong password"):
        talk.answer(PROMPT + b"\r\nSorry, try again.\r\n")
    talk = dialogue()
    talk.answer(PROMPT)
    with pytest.raises(BecomeError, match="asked for again"):
        talk.answer(PROMPT + b"\r\n" + PROMPT)
    assert "s3cret" not in talk.shown(b"echoed s3cret by a careless prompt")


def test_exec_body_marks_a_timed_command_and_a_terminal_gets_a_plain_term():
    request = ExecRequest(argv=["true"], environment={"A": "1"}, uid=1000, gid=1000, cwd="/tmp", timeout=3)
    body = exec_body(request, "abc")
    assert body["environment"] == {"A": "1", EXEC_ID_VARIABLE: "abc"}
    assert (body["interactive"], body["user"], body["group"], body["cwd"]) == (False, 1000, 1000, "/tmp")
    terminal = exec_body(request, None, terminal=True)
    assert terminal["interactive"] is True and terminal["environment"]["TERM"] == "dumb"
    assert "abc" in stop_script("abc") and "TERM" in stop_script("abc") and "KILL" in stop_script("abc")


def test_an_exec_lxd_could_not_start_is_refused_as_a_task_failure_only_for_its_arguments():
    check_operation({"status": "Success", "metadata": {"return": 0}})
    with pytest.raises(ExecError) as refused:
        check_operation({"status": "Failure", "err": "fork/exec /usr/bin/lxd: argument list too long"})
    assert refused.value.task_failure and not refused.value.ran
    with pytest.raises(ExecError) as other:
        check_operation({"status": "Failure", "err": "Failed to retrieve PID of executing child process"})
    assert not other.value.task_failure


class ConnectionFailure(Exception):
    pass


class TaskFailure(Exception):
    pass


def test_raised_as_chooses_the_error_class_and_does_not_repeat_the_cause():
    with pytest.raises(TaskFailure) as task:
        with raised_as(ConnectionFailure, task_error_class=TaskFailure):
            raise ExecError("x did not run", ran=False, refused=True)
    assert str(task.value) == "x did not run" and task.value.__cause__ is None and task.value.__suppress_context__
    with pytest.raises(ConnectionFailure):
        with raised_as(ConnectionFailure, task_error_class=TaskFailure):
            raise ExecError("stream broke", ran=True)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked websocket frame, as a server sends it (payloads under 126 bytes)."""
    return bytes([0x80 | opcode, len(payload)]) + payload


def serve_frames_and_leave(listener: socket.socket, frames: bytes) -> None:
    """An exec output stream as LXD serves it: accept the websocket, send `frames` in one write,
    and go. shutdown(SHUT_RD) first makes any answer the client sends fail, every time."""
    conn = listener.accept()[0]
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(4096)
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.shutdown(socket.SHUT_RD)
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + frames)
    conn.close()


def drain_served(tmp_path, frames: bytes, budget: OutputBudget | None = None) -> bytes:
    """What an OutputReader kept of an output stream whose server sends `frames` and leaves."""
    path = str(tmp_path / "lxd.socket")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        server = threading.Thread(target=serve_frames_and_leave, args=(listener, frames))
        server.start()
        stream = open_stream(Remote(url=f"unix:{path}", timeout=5), "/1.0/operations/x", "s", None,
                             reads_output=True)
        try:
            reader = OutputReader(stream, budget or OutputBudget(None, lambda: None))
            return reader.result(time.monotonic() + 10)
        finally:
            stream.close()
            server.join()


BINARY, TEXT, PING = 0x2, 0x1, 0x9


def test_output_that_arrives_with_a_ping_the_stream_can_no_longer_answer_is_kept(tmp_path):
    # What Incus does on a short command's stdout: its output, the end-of-output message (empty
    # text) and its keepalive ping arrive together, and the stream is gone when the client answers
    # the ping. websockets drops what it read with a ping whose pong fails; before OutputSocket,
    # this was b"" (CI on Incus: `cat` gave exit 0 and no output, 1 exec in 1,000).
    frames = ws_frame(BINARY, b"782") + ws_frame(TEXT, b"") + ws_frame(PING, b"keepalive")
    assert drain_served(tmp_path, frames) == b"782"


def test_an_output_stream_that_ends_without_lxds_end_of_output_message_is_an_error(tmp_path):
    with pytest.raises(ConnectionError, match="output may be missing"):
        drain_served(tmp_path, ws_frame(BINARY, b"78"))


def test_output_over_max_output_is_dropped_and_the_command_stopped_once(tmp_path):
    stops = []
    budget = OutputBudget(5, lambda: stops.append(1))
    frames = ws_frame(BINARY, b"1234") + ws_frame(BINARY, b"5678") + ws_frame(BINARY, b"9") + ws_frame(TEXT, b"")
    assert drain_served(tmp_path, frames, budget) == b"1234"
    assert budget.exceeded and stops == [1]


def test_stdout_and_stderr_share_one_budget():
    stops = []
    budget = OutputBudget(10, lambda: stops.append(1))
    assert budget.take(6) and not budget.take(6) and not budget.take(1)
    assert stops == [1] and budget.used == 13
    assert OutputBudget(None, lambda: stops.append(2)).take(10**12) and stops == [1]


class ScriptedTerminal:
    """A terminal websocket that shows `shown` one message at a time and keeps what is typed."""

    def __init__(self, *shown: bytes) -> None:
        self.shown = list(shown)
        self.typed: list[bytes] = []

    def recv(self, timeout: float | None = None, decode: bool | None = None) -> bytes:
        if not self.shown:
            raise TimeoutError
        return self.shown.pop(0)

    def send(self, message: bytes) -> None:
        self.typed.append(message)


def test_the_become_loop_types_the_password_at_the_prompt_and_stops_at_the_marker():
    terminal = ScriptedTerminal(PROMPT, b"\r\n", SUCCESS + b"\r\n", b"{\"ok\": 1}\r\n")
    assert answer_prompts(terminal, dialogue(), timeout=5) == PROMPT + b"\r\n" + SUCCESS + b"\r\n"
    assert terminal.typed == [b"s3cret\n"]
    assert read_terminal(ScriptedTerminal(b"{\"ok\": 1}\r\n", b""), seconds=5) == (b"{\"ok\": 1}\r\n", True)
    assert read_terminal(ScriptedTerminal(b"{\"ok\""), seconds=5) == (b"{\"ok\"", False)


def test_a_terminal_that_ends_or_stays_silent_before_the_marker_is_a_become_error():
    with pytest.raises(BecomeError, match="the command ended before become succeeded"):
        answer_prompts(ScriptedTerminal(PROMPT, b""), dialogue(), timeout=5)
    with pytest.raises(BecomeError, match="no become success within 5s"):
        answer_prompts(ScriptedTerminal(PROMPT), dialogue(), timeout=5)


class ClockedTerminal(ScriptedTerminal):
    """A scripted terminal on a fake clock: each message takes `step` seconds to arrive."""

    def __init__(self, clock: list[float], step: float, *shown: bytes) -> None:
        super().__init__(*shown)
        self.clock = clock
        self.step = step
        self.waits: list[float | None] = []

    def recv(self, timeout: float | None = None, decode: bool | None = None) -> bytes:
        self.waits.append(timeout)
        self.clock[0] += self.step
        return super().recv(timeout, decode)

    def close(self) -> None:
        pass


def test_the_become_path_spends_command_timeout_once_across_reading_the_terminal_and_waiting(monkeypatch):
    clock = [100.0]
    terminal = ClockedTerminal(clock, 2.0, PROMPT, SUCCESS + b"\r\n", b"{\"ok\": 1}\r\n", b"")
    waited: list[float | None] = []

    def wait_for_exec(_api, _url, timeout):
        waited.append(timeout)
        return {"status": "Success", "metadata": {"return": 0}}

    monkeypatch.setattr(password_prompt, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(password_prompt, "require_websockets", lambda: None)
    monkeypatch.setattr(password_prompt, "exec_answer", lambda _response: ("/1.0/operations/x", {"0": "a", "control": "b"}))
    monkeypatch.setattr(password_prompt, "open_stream", lambda _remote, _url, secret, _project, reads_output:
                        terminal if secret == "a" else ClockedTerminal(clock, 0.0))
    monkeypatch.setattr(password_prompt, "wait_for_exec", wait_for_exec)
    api = SimpleNamespace(request=lambda *_args, **_kwargs: None, remote=SimpleNamespace(timeout=5), project="p")
    request = ExecRequest(argv=["true"], environment={}, timeout=10.0)
    code, output = password_prompt.run_with_password(api, "web1", request, dialogue(), become_timeout=5)
    assert code == 0 and output.endswith(b"{\"ok\": 1}\r\n")
    # Become took 4s of the 10 and the rest of the output 4s more: reading it may take 6s, the wait 2s.
    assert terminal.waits[2] == 6.0 and waited == [2.0]
