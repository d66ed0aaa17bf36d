"""LXD's exec over websockets, with stdin of any size, TLS checked like the API, and every failure
saying whether the command ran.

The websockets are the `websockets` library's synchronous client (the README says why this one):
it runs each connection's I/O, pings and close handshake in its own thread and reports a stream
LXD closed as ConnectionClosed, also when LXD closes a short command's stdin stream before we are
done with it. An output stream ends with LXD's end-of-output message; closed before it, output
may be missing, and that is an error.

Order matters: stdout and stderr are connected first, then stdin, then the payload is streamed in
chunks (LXD starts the command once all three are connected; a payload larger than the pipe
buffers must be read while it is sent). Over HTTPS our own socket is wrapped in TLS and the server
is checked (pinned certificate, CA store, or off) before the upgrade request, which carries the
operation's secret, is sent (transport.tls_socket, relayed to websockets by transport.tls_relay).
"""

from __future__ import annotations

import inspect
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from .errors import ExecError, missing_package
from .lxd_api import LxdApi
from .remote import Remote, local_socket_path
from .transport import ARGUMENTS_TOO_LONG, DEADLINE, DEFAULT_HTTPS_PORT, ApiError, classify_answer, tls_relay, tls_socket, unix_socket

STDIN_CHUNK = 256 * 1024
# A file on stdin (a non-root user's put) goes in 1 MiB messages: a 50 MiB put took 1.42 s in
# 256 KiB ones, 0.76 s so (bench/file_transfer.py, lab LXD under load).
FILE_STDIN_CHUNK = 1024 * 1024
# After the command ends, LXD flushes and closes the output websockets; this bounds that wait.
DRAIN_SECONDS = 30.0
# The most output (stdout and stderr together) a command may send: it is held in memory until the
# task ends, and a runaway or hostile command must not exhaust the controller's. Option max_output.
DEFAULT_MAX_OUTPUT = 256 * 1024 * 1024
# The longest one command may run unless the connection's command_timeout says otherwise (0: no
# limit): root inside an instance can make any command hang, and every wait needs a limit. An hour
# is longer than package upgrades and builds take; longer jobs belong in `async` tasks, whose exec
# returns at once. Option command_timeout.
DEFAULT_COMMAND_TIMEOUT = 3600.0
# LXD sends output in io.Copy's 32 KiB writes; a larger frame is refused, and each stream buffers
# at most MAX_QUEUE frames before it stops reading (our reader threads empty it as it fills).
MAX_FRAME = 4 * 1024 * 1024
MAX_QUEUE = 64
# A wait for a command without command_timeout is made of bounded waits: a server that stops
# answering is an error after this plus the remote's timeout, not a hang.
WAIT_SLICE = 60
# The longest the stop command (SIGTERM, grace, SIGKILL) may take.
STOP_TIMEOUT = 30.0
# The variable that marks every process of one command, so a timed-out command can be stopped.
EXEC_ID_VARIABLE = "MAGE_LXD_EXEC_ID"
# Seconds between SIGTERM and SIGKILL when stopping a timed-out command.
STOP_GRACE = 2.0
# websockets logs its own teardown races (a stream LXD closed while we closed it too) as errors;
# the connection still ends in ConnectionClosed, which is handled. Without a handler here, Python
# would print them to an Ansible worker's stderr.
WEBSOCKET_LOG = logging.getLogger("mage_lxd.websockets")
WEBSOCKET_LOG.addHandler(logging.NullHandler())

# A missing websockets is reported when a command runs (require_websockets), so the inventory,
# the lookup and ansible-doc work without it.
try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect, unix_connect
except ImportError as exc:
    WEBSOCKETS_IMPORT_ERROR: ImportError | None = exc
    _PLAIN_CONNECTION: dict[str, bool] = {}
else:
    WEBSOCKETS_IMPORT_ERROR = None
    # websockets 17 asks to choose between a plain connection and its reconnecting iterator
    # (legacy=True keeps the plain one, without a warning); 16, which Python 3.10 gets, knows neither.
    _PLAIN_CONNECTION = {"legacy": True} if "legacy" in inspect.signature(unix_connect).parameters else {}
if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection


def require_websockets() -> None:
    """Raise MissingPackageError when the websockets package could not be imported."""
    if WEBSOCKETS_IMPORT_ERROR is not None:
        raise missing_package("websockets", WEBSOCKETS_IMPORT_ERROR)


@dataclass(frozen=True)
class ExecRequest:
    """One command: argv, environment, numeric ids, working directory, stdin (bytes, or a file
    streamed in chunks), how long it may run (None: no limit of its own), how much output it may
    send (None: no limit), and where its stdout goes when it is not kept (a file: fetch)."""

    argv: list[str]
    environment: Mapping[str, str]
    uid: int = 0
    gid: int = 0
    cwd: str | None = None
    stdin: bytes | IO[bytes] = b""
    timeout: float | None = None
    max_output: int | None = DEFAULT_MAX_OUTPUT
    stdout_sink: IO[bytes] | None = None


def exec_body(request: ExecRequest, exec_id: str | None, terminal: bool = False) -> dict[str, Any]:
    """The POST /1.0/instances/<name>/exec body for `request` (websockets; a pty when `terminal`)."""
    environment = dict(request.environment)
    if exec_id:
        environment[EXEC_ID_VARIABLE] = exec_id
    body: dict[str, Any] = {
        "command": request.argv,
        "environment": environment,
        "wait-for-websocket": True,
        "interactive": terminal,
        "user": request.uid,
        "group": request.gid,
    }
    if request.cwd:
        body["cwd"] = request.cwd
    if terminal:
        # No colours or cursor moves in the output the become plugin's checks read.
        body["environment"].setdefault("TERM", "dumb")
    return body


def run_exec(api: LxdApi, instance: str, request: ExecRequest) -> tuple[int, bytes, bytes]:
    """Run `request` in `instance`; return (exit code, stdout, stderr).

    LXD's refusal of the exec request itself (instance stopped, missing) propagates as ApiError:
    nothing ran. Anything later is an ExecError that says whether the command ran. command_timeout
    counts from the moment the streams are connected, so stdin the command does not read is within
    it; output is read while the command runs, up to `request.max_output`.
    """
    return _run_exec(api, instance, request, stop_when_late=True)


def _run_exec(api: LxdApi, instance: str, request: ExecRequest, stop_when_late: bool) -> tuple[int, bytes, bytes]:
    require_websockets()
    exec_id = uuid.uuid4().hex
    response = api.request("post", f"instances/{quote(instance, safe='')}/exec", json=exec_body(request, exec_id),
                           timeout=api.remote.timeout)
    streams: dict[str, ClientConnection] = {}
    readers: list[OutputReader] = []
    stopper: list[threading.Thread] = []
    sender: StdinSender | None = None
    budget = OutputBudget(request.max_output, lambda: stopper.append(
        _started(threading.Thread(target=_stop_quietly, args=(api, instance, exec_id), daemon=True))))
    stage, ran = "did not start (its streams could not be connected)", False
    try:
        operation_url, secrets = exec_answer(response)
        for fd in ("1", "2", "0"):
            streams[fd] = open_stream(api.remote, operation_url, secrets[fd], api.project,
                                      reads_output=fd != "0")  # stdin is only written to
        started = time.monotonic()
        readers = [OutputReader(streams["1"], budget, request.stdout_sink), OutputReader(streams["2"], budget)]
        stage, ran = "started, but its result is unknown (waiting for it to finish failed)", True
        sender = StdinSender(streams["0"], request.stdin)
        left = None if request.timeout is None else request.timeout - (time.monotonic() - started)
        operation = wait_for_exec(api, operation_url, left)
        if operation is None:
            if not stop_when_late:
                raise ExecError(f"did not finish within its limit of {request.timeout:g}s", ran=True, timed_out=True)
            raise stopped_after_timeout(api, instance, exec_id, request.timeout or 0)
        if budget.exceeded:
            for thread in stopper:
                thread.join(STOP_TIMEOUT)
            raise output_exceeded(request.max_output or 0)
        check_operation(operation)
        stage = "ran, but its output could not be read"
        deadline = time.monotonic() + DRAIN_SECONDS
        stdout, stderr = (reader.result(deadline) for reader in readers)
        if sender.error is not None:
            raise sender.error  # our side of stdin failed: the command may have read only part of it
        if budget.exceeded:  # went over in the last output it sent
            raise output_exceeded(request.max_output or 0)
    except ExecError:
        raise
    except Exception as exc:  # every failure of the stream path says how far the command got
        raise ExecError(f"{stage}: {type(exc).__name__}: {exc}", ran=ran) from exc
    finally:
        if sender is not None:
            sender.abandon()
        for stream in streams.values():
            stream.close()
    return int(operation["metadata"]["return"]), stdout, stderr


def _started(thread: threading.Thread) -> threading.Thread:
    thread.start()
    return thread


def output_exceeded(limit: int) -> ExecError:
    """The error for a command stopped because its output went over `limit` bytes."""
    return ExecError(f"sent more than {limit} bytes of output (max_output); it was stopped (SIGTERM to every "
                     f"process of it, SIGKILL {STOP_GRACE:g}s later)", ran=True, over_limit=True)


class OutputBudget:
    """How much output one command may still send, shared by its output streams; the first time it
    is exceeded, `on_exceeded` runs once (it stops the command)."""

    def __init__(self, limit: int | None, on_exceeded: Callable[[], Any]) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = False
        self._on_exceeded = on_exceeded
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Count `size` more bytes; False when they are over the limit (and must be dropped)."""
        with self._lock:
            self.used += size
            if self.limit is None or self.used <= self.limit:
                return True
            first, self.exceeded = not self.exceeded, True
        if first:
            self._on_exceeded()
        return False


class OutputReader:
    """Reads one output stream in a thread of its own while the command runs: the command never
    blocks on a full pipe, and what is kept is bounded by the budget (a sink, a local file, takes
    stdout unbounded: it is not held in memory).

    LXD 5.0 and Incus 6.0 end each output stream with an empty text message, then close it. A
    stream that closes without it may have lost output, which is an error: silently short output
    would be read as the command's whole answer (an empty stdout looks like success).
    """

    def __init__(self, stream: ClientConnection, budget: OutputBudget, sink: IO[bytes] | None = None) -> None:
        self.stream = stream
        self.budget = budget
        self.sink = sink
        self.chunks: list[bytes] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            # LXD ends each output stream with an empty text message, then closes it.
            while message := self.stream.recv(decode=False):
                if self.sink is not None:
                    self.sink.write(message)
                elif self.budget.take(len(message)):
                    self.chunks.append(message)
        except ConnectionClosed:
            self.error = ConnectionError("LXD closed the output stream before its end-of-output message; "
                                         "output may be missing")
        except BaseException as exc:  # reported by result(), in the caller's thread
            self.error = exc
        finally:
            self.done.set()

    def result(self, deadline: float) -> bytes:
        """The output, once the stream ended (by `deadline`, a time.monotonic() value)."""
        if not self.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"the output did not end within {DRAIN_SECONDS:g}s of the command's exit")
        if self.error is not None:
            raise self.error
        return b"".join(self.chunks)


class StdinSender:
    """Streams stdin to the command from a thread of its own, so the wait for the command (and its
    command_timeout) runs while stdin is sent: a command that never reads it cannot hang us."""

    def __init__(self, stream: ClientConnection, payload: bytes | IO[bytes]) -> None:
        self.stream = stream
        self.payload = payload
        self.error: BaseException | None = None
        self.thread = _started(threading.Thread(target=self._send, daemon=True))

    def _send(self) -> None:
        try:
            send_stdin(self.stream, self.payload)
        except BaseException as exc:
            self.error = exc

    def abandon(self) -> None:
        """Once the command is over: a send still blocked (the command never read) is cut off."""
        self.thread.join(0.5)
        if self.thread.is_alive():
            try:
                self.stream.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.thread.join(2)


def exec_answer(response: Any) -> tuple[str, dict[str, str]]:
    """The operation URL and the websocket secrets from LXD's answer to an exec request."""
    answer = response.json()
    return answer["operation"], answer["metadata"]["metadata"]["fds"]


def open_stream(remote: Remote, operation_url: str, secret: str, project: str | None,
                reads_output: bool) -> ClientConnection:
    """Connect one exec websocket; over HTTPS the server is checked before the secret is sent.
    A stream we read output from keeps it when LXD has closed the stream (see OutputSocket)."""
    path = f"{urlparse(operation_url).path}/websocket?secret={quote(secret)}"
    if project:
        path += f"&project={quote(project)}"
    if remote.is_https:
        parsed = urlparse(remote.url)
        host, port = parsed.hostname or "", parsed.port or DEFAULT_HTTPS_PORT
        tls = tls_socket(remote, host, port, remote.timeout)
        tls.settimeout(None)  # a quiet command must not time its streams out
        sock = tls_relay(tls)
    else:
        host = "lxd"
        sock = unix_socket(local_socket_path(remote.url), remote.timeout)
        # Connected: from here websockets bounds the handshake itself, and a quiet command must
        # not time the stream out.
        sock.settimeout(None)
    if reads_output:
        sock = OutputSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    # The socket is already connected (and TLS already checked), so the URI only names the path:
    # ws:// keeps websockets from wrapping TLS a second time. Each stream buffers at most MAX_QUEUE
    # frames; our reader threads empty them while the command runs (OutputReader).
    options: dict[str, Any] = {"sock": sock, "compression": None, "max_size": MAX_FRAME, "max_queue": MAX_QUEUE,
                               "open_timeout": remote.timeout, "ping_interval": None, "close_timeout": 2,
                               "user_agent_header": None, "logger": WEBSOCKET_LOG, **_PLAIN_CONNECTION}
    if not remote.is_https:
        # unix_connect, not connect: websockets before 17 set TCP_NODELAY on any socket connect() is
        # given, which a unix socket refuses (EOPNOTSUPP); Python 3.10 gets websockets 16.
        return unix_connect(None, f"ws://{host}{path}", **options)
    return connect(f"ws://{host}{path}", proxy=None, **options)


class OutputSocket(socket.socket):
    """The socket of a stream we read: a send that LXD can no longer receive is dropped.

    websockets answers LXD's pings from its reader thread, and when that answer fails it drops every
    message it read together with the ping. Incus pings each exec websocket as it connects and closes
    them all as soon as the command ends, so when our reader was slow (five busy threads), a short
    command's whole output arrived with the ping, the pong found the stream closed, and the output was
    lost: `cat` answered exit 0 and nothing, 1 exec in 1,000 in CI. What we send on an output stream
    (pongs, the close frame) only matters while LXD still listens; the output always matters.
    """

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            super().sendall(data, flags)
        except (BrokenPipeError, ConnectionResetError):
            pass  # LXD closed the stream: reading what it sent first is all that is left to do


def send_stdin(stdin: ClientConnection, payload: bytes | IO[bytes]) -> None:
    """Stream `payload` (bytes, or a file read in chunks) to the command, then LXD's end-of-file
    (an empty text message)."""
    try:
        if isinstance(payload, bytes):
            for start in range(0, len(payload), STDIN_CHUNK):
                stdin.send(payload[start:start + STDIN_CHUNK])
        else:
            while chunk := payload.read(FILE_STDIN_CHUNK):
                stdin.send(chunk)
        stdin.send("")
    except ConnectionClosed:
        # The command exited (or closed its stdin) before reading all of it, e.g. 127 when python is
        # missing: LXD closed the stream. As with a pipe, what counts is its exit code and output.
        pass


def receive(stream: ClientConnection, timeout: float | None) -> bytes:
    """The next message of `stream` within `timeout` seconds (None: no limit; TimeoutError after
    it), as bytes; b"" once the output is over: LXD's end-of-output message, or the stream closed."""
    try:
        return stream.recv(timeout=timeout, decode=False)
    except ConnectionClosed:
        return b""


def wait_for_exec(api: LxdApi, operation_url: str, timeout: float | None) -> dict[str, Any] | None:
    """The finished exec operation, or None when it still runs after `timeout` seconds (None: as
    long as it runs, in waits of WAIT_SLICE seconds, each bounded)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return None
        # LXD's wait takes whole seconds.
        metadata = _waited(api, operation_url, max(1, min(WAIT_SLICE, int(left))))
        if metadata.get("status") != "Running":
            return metadata


def _waited(api: LxdApi, operation_url: str, seconds: int | None) -> dict[str, Any]:
    """The operation a wait request answered with, a failed one included (its `err` is read by
    check_operation). Incus answers a wait that timed out with "deadline exceeded": that becomes
    what LXD would have said, so one check reads them."""
    try:
        return api.wait_operation(operation_url, seconds)
    except ApiError as exc:
        if DEADLINE in exc.reasons:
            return {"status": "Running"}
        return {"status": "Failure", "err": str(exc)}


def check_operation(operation: Mapping[str, Any]) -> None:
    """Raise ExecError when LXD reports the exec operation itself failed (the command did not run)."""
    if operation.get("status") == "Success":
        return
    error = str(operation.get("err") or operation.get("status") or "unknown error")
    reasons = classify_answer(400, error)
    raise ExecError(f"did not run: LXD refused it: {error}", refused=ARGUMENTS_TOO_LONG in reasons, reasons=reasons)


def stop_script(exec_id: str) -> str:
    """A POSIX sh script that signals every process whose environment carries `exec_id`."""
    marker = f"{EXEC_ID_VARIABLE}={exec_id}"
    signal_all = (
        'for p in /proc/[0-9]*; do tr "\\000" "\\n" < "$p/environ" 2>/dev/null | '
        f'grep -qx "{marker}" && kill -$1 "${{p#/proc/}}" 2>/dev/null; done'
    )
    return f"sig() {{ {signal_all}; }}; sig TERM; sleep {STOP_GRACE:g}; sig KILL; exit 0"


def stopped_after_timeout(api: LxdApi, instance: str, exec_id: str | None, timeout: float) -> ExecError:
    """Stop a command that outlived its timeout; the error that says so."""
    stop_command(api, instance, exec_id or "")
    return ExecError(f"did not finish within {timeout:g}s; it was stopped (SIGTERM to every process of it, "
                     f"SIGKILL {STOP_GRACE:g}s later)", ran=True, timed_out=True)


def stop_command(api: LxdApi, instance: str, exec_id: str) -> None:
    """Stop a command: every process carrying its exec id, as root, through one more exec, itself
    bounded (STOP_TIMEOUT, a little output): a stop that hangs is an ExecError, never a wait.

    LXD's exec control stream can only signal the first process, and it is no process group leader,
    so its children (sh -c, the module) would keep running.
    """
    request = ExecRequest(argv=["/bin/sh", "-c", stop_script(exec_id)], environment={}, timeout=STOP_TIMEOUT,
                          max_output=64 * 1024)
    try:
        _run_exec(api, instance, request, stop_when_late=False)
    except ExecError as exc:
        raise ExecError(f"could not be stopped: the stop command {exc}; processes of it may still run.",
                        fix=f"stop the processes with {EXEC_ID_VARIABLE}={exec_id} in their environment in the "
                        "instance, and check its sh, tr, grep, kill and sleep", timed_out=True) from exc


def _stop_quietly(api: LxdApi, instance: str, exec_id: str) -> None:
    # From a reader thread: the caller reports the limit that was hit, whatever the stop says.
    try:
        stop_command(api, instance, exec_id)
    except Exception:  # noqa: BLE001 - reported as the limit that was hit
        pass
