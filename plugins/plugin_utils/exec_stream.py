"""LXD's exec over websockets, with stdin of any size, TLS checked like the API, and every failure
saying whether the command ran.

The websockets are the maintained `websockets` library's synchronous client. ws4py, which pylxd
uses and this module used before, answers pings from inside `connect()`: when LXD had already
closed a short command's stdin stream, that raised BrokenPipeError outside any handler, and its
reader threads died on a socket set to None (1.8 % of execs from 4 threads). `websockets` runs
each connection's I/O, pings and close handshake in its own thread and reports a stream LXD closed
as ConnectionClosed. An output stream ends with LXD's end-of-output message; closed before it,
output may be missing, and that is an error.

Order matters: stdout and stderr are connected first, then stdin, then the payload is streamed in
chunks (LXD starts the command once all three are connected; a payload larger than the pipe
buffers must be read while it is sent). Over HTTPS our own socket is wrapped in TLS and the server
is checked (pinned certificate, CA store, or off) before the upgrade request, which carries the
operation's secret, is sent.
"""

from __future__ import annotations

import inspect
import logging
import selectors
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from .errors import ExecError, missing_package
from .password_prompt import BecomeError, PasswordDialogue
from .remote import LxdApi, Remote, local_socket_path
from .transport import ApiError, tls_socket, unix_socket

STDIN_CHUNK = 256 * 1024
RELAY_CHUNK = 64 * 1024
# After the command ends, LXD flushes and closes the output websockets; this bounds that wait.
DRAIN_SECONDS = 30.0
# The variable that marks every process of one command, so a timed-out command can be stopped.
EXEC_ID_VARIABLE = "MAGE_LXD_EXEC_ID"
# Seconds between SIGTERM and SIGKILL when stopping a timed-out command.
STOP_GRACE = 2.0
# What LXD answers when the kernel refuses the command line (E2BIG): the command did not run.
ARGUMENTS_REFUSED = ("argument list too long",)
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
    """One command: argv, environment, numeric ids, working directory, stdin bytes and how long
    it may run (None: no limit of its own)."""

    argv: list[str]
    environment: Mapping[str, str]
    uid: int = 0
    gid: int = 0
    cwd: str | None = None
    stdin: bytes = b""
    timeout: float | None = None


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
    nothing ran. Anything later is an ExecError that says whether the command ran.
    """
    require_websockets()
    exec_id = uuid.uuid4().hex if request.timeout else None
    response = api.request("post", f"instances/{quote(instance, safe='')}/exec", json=exec_body(request, exec_id))
    streams: dict[str, ClientConnection] = {}
    stage = "did not start (its streams could not be connected)"
    try:
        operation_url, secrets = exec_answer(response)
        for fd in ("1", "2", "0"):
            streams[fd] = open_stream(api.remote, operation_url, secrets[fd], api.project,
                                      reads_output=fd != "0")  # stdin is only written to
        stage = "started, but its result is unknown (the stream broke while sending its stdin)"
        send_stdin(streams["0"], request.stdin)
        stage = "started, but its result is unknown (waiting for it to finish failed)"
        operation = wait_for_exec(api, operation_url, request.timeout)
        if operation is None:
            raise stopped_after_timeout(api, instance, exec_id, request.timeout)
        check_operation(operation)
        stage = "ran, but its output could not be read"
        stdout, stderr = drain(streams["1"]), drain(streams["2"])
    except ExecError:
        raise
    except Exception as exc:  # every failure of the stream path says how far the command got
        raise ExecError(f"{stage}: {type(exc).__name__}: {exc}", ran=not stage.startswith("did not")) from exc
    finally:
        for stream in streams.values():
            stream.close()
    return int(operation["metadata"]["return"]), stdout, stderr


def run_with_password(api: LxdApi, instance: str, request: ExecRequest, dialogue: PasswordDialogue,
                      become_timeout: float) -> tuple[int, bytes]:
    """Run `request` on a pty, typing the become password when `dialogue` sees its prompt; return
    (exit code, everything the terminal showed). A failed become stops the command (its terminal
    closes) and raises BecomeError; the password is never part of a message."""
    require_websockets()
    exec_id = uuid.uuid4().hex if request.timeout else None
    response = api.request("post", f"instances/{quote(instance, safe='')}/exec",
                           json=exec_body(request, exec_id, terminal=True))
    streams: dict[str, ClientConnection] = {}
    stage = "did not start (its terminal could not be connected)"
    try:
        operation_url, secrets = exec_answer(response)
        for fd in ("0", "control"):
            # The terminal ("0") carries the command's output as well as the password.
            streams[fd] = open_stream(api.remote, operation_url, secrets[fd], api.project,
                                      reads_output=fd == "0")
        stage = "started, but become did not finish (the terminal broke)"
        output = answer_prompts(streams["0"], dialogue, become_timeout)
        # When the command exits, LXD sends an empty message on the terminal and then waits for us
        # to close it before it ends the operation.
        rest, finished = read_terminal(streams["0"], request.timeout)
        output += rest
        if not finished:
            raise stopped_after_timeout(api, instance, exec_id, request.timeout)
        streams["0"].close()
        streams["control"].close()
        stage = "started, but its result is unknown (waiting for it to finish failed)"
        operation = wait_for_exec(api, operation_url, request.timeout)
        if operation is None:
            raise stopped_after_timeout(api, instance, exec_id, request.timeout)
        check_operation(operation)
    except (ExecError, BecomeError):
        raise
    except Exception as exc:  # every failure of the stream path says how far the command got
        raise ExecError(f"{stage}: {type(exc).__name__}: {exc}", ran=not stage.startswith("did not")) from exc
    finally:
        for stream in streams.values():
            stream.close()
    return int(operation["metadata"]["return"]), output


def answer_prompts(terminal: ClientConnection, dialogue: PasswordDialogue, timeout: float) -> bytes:
    """Read the terminal until become reports success, typing the password when asked."""
    output = b""
    deadline = time.monotonic() + timeout
    while not dialogue.done(output):
        try:
            message = terminal.recv(timeout=max(0.0, deadline - time.monotonic()), decode=False)
            if not message:
                raise ConnectionClosed(None, None)  # LXD's end of output: the command has exited
            output += message
        except TimeoutError:
            raise BecomeError(f"no become success within {timeout:g}s; the terminal showed: "
                              f"{dialogue.shown(output)}") from None
        except ConnectionClosed:
            raise BecomeError(f"the command ended before become succeeded; the terminal showed: "
                              f"{dialogue.shown(output)}") from None
        try:
            reply = dialogue.answer(output)
        except BecomeError as exc:
            raise BecomeError(f"{exc}; the terminal showed: {dialogue.shown(output)}") from None
        if reply:
            terminal.send(reply)
    return output


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
        host, port = parsed.hostname or "", parsed.port or 8443
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
    # ws:// keeps websockets from wrapping TLS a second time. Output is kept whole (max_queue None)
    # by the connection's own thread, so stdout and stderr never block each other or stdin.
    options: dict[str, Any] = {"sock": sock, "compression": None, "max_size": None, "max_queue": None,
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


def tls_relay(tls: ssl.SSLSocket) -> socket.socket:
    """A plain socket relayed to `tls` by a thread of its own.

    websockets waits for input with select() on the socket's descriptor, which never wakes for
    bytes OpenSSL has already decrypted and holds (SSLSocket.pending()): given a TLS socket, one
    exec in 40 waited for a handshake answer that had arrived (measured here over 400 execs).
    The relay reads what is pending before it waits.
    """
    ours, theirs = socket.socketpair()
    threading.Thread(target=_relay, args=(tls, theirs), daemon=True).start()
    return ours


def _relay(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    # Reads from TLS never block: a readable descriptor may carry only a TLS 1.3 session ticket,
    # and a blocking read would then wait for data the server sends only after our request.
    tls.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(plain, selectors.EVENT_READ)
            while True:
                ready = [tls] if tls.pending() else [key.fileobj for key, _events in selector.select()]
                if tls in ready and not _pass_on(tls, plain):
                    return
                if plain in ready and not _pass_on(plain, tls):
                    return
    except OSError:
        return  # a reset or a TLS error ends the stream the same way
    finally:
        plain.close()
        tls.close()


def _pass_on(source: socket.socket, target: socket.socket) -> bool:
    """Move what `source` has to `target`; False once `source` is closed."""
    try:
        data = source.recv(RELAY_CHUNK)
    except ssl.SSLWantReadError:
        return True  # TLS records without data (a session ticket): nothing to pass on yet
    if not data:
        return False  # either side closed: close both, the other side sees the end
    if isinstance(target, ssl.SSLSocket):
        target.setblocking(True)  # sendall must finish; the server reads stdin on its own
        try:
            target.sendall(data)
        finally:
            target.setblocking(False)
    else:
        target.sendall(data)
    return True


def send_stdin(stdin: ClientConnection, payload: bytes) -> None:
    """Stream `payload` to the command, then LXD's end-of-file (an empty text message)."""
    try:
        for start in range(0, len(payload), STDIN_CHUNK):
            stdin.send(payload[start:start + STDIN_CHUNK])
        stdin.send("")
    except ConnectionClosed:
        # The command exited (or closed its stdin) before reading all of it, e.g. 127 when python is
        # missing: LXD closed the stream. As with a pipe, what counts is its exit code and output.
        pass


def wait_for_exec(api: LxdApi, operation_url: str, timeout: float | None) -> dict[str, Any] | None:
    """The finished exec operation, or None when it still runs after `timeout` seconds."""
    if timeout is None:
        return _waited(api, operation_url, None)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        # LXD's wait takes whole seconds.
        seconds = max(1, int(left))
        metadata = _waited(api, operation_url, seconds)
        if metadata.get("status") != "Running":
            return metadata
    return None


def _waited(api: LxdApi, operation_url: str, seconds: int | None) -> dict[str, Any]:
    """The operation a wait request answered with, a failed one included (its `err` is read by
    check_operation). Incus answers a wait that timed out with "deadline exceeded": that becomes
    what LXD would have said, so one check reads them."""
    try:
        return api.wait_operation(operation_url, seconds)
    except ApiError as exc:
        text = str(exc)
        if "deadline exceeded" in text.lower():
            return {"status": "Running"}
        return {"status": "Failure", "err": text}


def check_operation(operation: Mapping[str, Any]) -> None:
    """Raise ExecError when LXD reports the exec operation itself failed (the command did not run)."""
    if operation.get("status") == "Success":
        return
    error = str(operation.get("err") or operation.get("status") or "unknown error")
    refused = any(text in error.lower() for text in ARGUMENTS_REFUSED)
    raise ExecError(f"did not run: LXD refused it: {error}", ran=False, refused=refused)


def drain(stream: ClientConnection) -> bytes:
    """Everything LXD sent on an output stream, up to its end-of-output message (bounded by
    DRAIN_SECONDS).

    LXD 5.0 and Incus 6.0 end each output stream with an empty text message, then close it. A
    stream that closes without it may have lost output, which is an error: silently short output
    would be read as the command's whole answer (an empty stdout looks like success).
    """
    chunks = []
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while message := stream.recv(timeout=max(0.0, deadline - time.monotonic()), decode=False):
            chunks.append(message)
    except ConnectionClosed:
        raise ConnectionError("LXD closed the output stream before its end-of-output message; "
                              "output may be missing") from None
    return b"".join(chunks)


def read_terminal(terminal: ClientConnection, seconds: float | None) -> tuple[bytes, bool]:
    """What the terminal shows until LXD's end-of-output (an empty message); (output, ended)."""
    chunks = []
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            message = terminal.recv(timeout=left, decode=False)
            if not message:
                return b"".join(chunks), True
            chunks.append(message)
    except ConnectionClosed:
        return b"".join(chunks), True
    except TimeoutError:
        return b"".join(chunks), False


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
    """Stop a timed-out command: every process carrying its exec id, as root, through one more exec.

    LXD's exec control stream can only signal the first process, and it is no process group leader,
    so its children (sh -c, the module) would keep running.
    """
    request = ExecRequest(argv=["/bin/sh", "-c", stop_script(exec_id)], environment={})
    run_exec(api, instance, request)
