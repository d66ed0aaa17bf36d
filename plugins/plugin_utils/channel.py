"""Run commands in an instance and move files in and out of it, through the LXD API only.

`InstanceChannel` is what the mage_lxd connection plugin drives: exec over LXD's exec API (stdin
streamed, stdout/stderr as bytes, both bounded), files streamed in fixed-size chunks so a large
file is never held in memory, modes and ownership kept. No `lxc` binary is involved.

Root's files go through the files API. A non-root user's go through an exec running as that user
(`cat`): LXD's files API works as root and follows symlinks, so a link the user planted in its own
temporary directory would turn a put into a write of /etc/shadow (and a chown of it to the user).
As the user, the kernel refuses that write, as it would over ssh.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

from .cluster import check_reachable, listed_instance
from .errors import ExecError, MageLxdError, NotFoundError, OptionError, RemoteError
from .exec_stream import DEFAULT_COMMAND_TIMEOUT, DEFAULT_MAX_OUTPUT, ExecRequest, run_exec
from .lxd_api import Log, LxdApi, _no_log
from .password_prompt import BecomeError, PasswordDialogue, run_with_password
from .remote import Remote
from .transport import FROZEN, INSTANCE_MISSING, NOT_RUNNING, ApiError

CHUNK_SIZE = 1024 * 1024
# LXD turns an exit status of 126/127 into a failed operation ("Command not executable/not found")
# and drops the command's output. A wrapper shell reports those two statuses on stderr instead.
EXIT_MARKER = b"\nmage_lxd_exit_status="
EXIT_WRAPPER = (
    '"$@"; rc=$?; case $rc in 126|127) printf "\\nmage_lxd_exit_status=%s" "$rc" >&2; exit 1;; esac; exit $rc'
)
PYTHON_MISSING_HINT = (
    "mage_lxd: python is not installed in instance '{instance}'. Fix: bootstrap it with the "
    "mage_lxd_instance action (bootstrap: true), or install it with ansible.builtin.raw."
)
# Files of a non-root user are moved by these, run as the user (see the module docstring).
PUT_AS_USER = 'umask 077 && cat > "$1" && chmod "$2" "$1"'
FETCH_AS_USER = 'exec cat -- "$1"'


@dataclass(frozen=True)
class ExecUser:
    """A user inside the instance, resolved once: LXD's exec API takes numeric ids."""

    name: str
    uid: int
    gid: int
    home: str

    def environment(self) -> dict[str, str]:
        """The login variables LXD would otherwise leave set to root's."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


ROOT = ExecUser(name="root", uid=0, gid=0, home="/root")


def unwrap_exit_status(code: int, stdout: bytes, stderr: bytes) -> tuple[int, bytes, bytes]:
    """Undo EXIT_WRAPPER: restore a 126/127 status it reported on stderr."""
    head, found, status = stderr.rpartition(EXIT_MARKER)
    if found and code == 1 and status in (b"126", b"127"):
        return int(status), stdout, head
    return code, stdout, stderr


def command_limit(seconds: Any) -> float | None:
    """The limit of one command from the connection's command_timeout: None (no limit of its own)
    for 0, else a finite number of seconds above 0; anything else is an OptionError."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
            not math.isfinite(seconds) or seconds < 0:
        raise OptionError(f"command_timeout: {seconds!r} is not a number of seconds (0 for no limit).",
                          fix="set ansible_mage_lxd_command_timeout to a number of seconds, such as 3600, or 0.")
    return float(seconds) if seconds else None


def exec_error(where: str, exc: ExecError) -> ExecError:
    """`exc` with the instance, project and remote named, and what to do next."""
    if exc.fix:  # the failure already says what to do (a stop that did not finish)
        said, fix = f"the command {exc.head()}", f"{exc.fix}."
    else:
        said = f"the command {exc.head()}."
        if exc.refused:
            fix = "shorten the command; pass long data as a file (copy, template) or on stdin, not as arguments."
        elif exc.over_limit:
            fix = ("raise max_output (ansible_mage_lxd_max_output), or have the command write less (to a file "
                   "in the instance).")
        elif exc.timed_out:
            fix = "raise command_timeout (ansible_mage_lxd_command_timeout), or make the command faster."
        elif exc.ran:
            fix = "check what the command changed before running it again; see LXD's log if this recurs."
        else:
            fix = "it is safe to run again; check the LXD daemon (lxc info) if this recurs."
    return ExecError(said, where=where, fix=fix, outcome=exc.outcome, status=exc.status, reasons=exc.reasons)


def refused_exec(where: str, exc: MageLxdError) -> MageLxdError:
    """`exc` (LXD refused the exec request itself) naming the instance and saying nothing ran."""
    named = exc.where == where
    error = type(exc)(f"{exc.happened() if named else exc.head()} The command did not run.", where=where,
                      sep=exc.sep if named else ": ", fix=exc.fix, status=exc.status, reasons=exc.reasons)
    error.task_failure = exc.task_failure
    return error


class InstanceChannel:
    """Exec and file transfer for one instance of one project on one remote."""

    def __init__(self, api: LxdApi, instance: str, command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
                 max_output: int | None = DEFAULT_MAX_OUTPUT) -> None:
        self.api = api
        self.command_timeout = command_timeout
        self.max_output = max_output
        self.remote = api.remote
        self.project = api.project or "default"
        self.instance = instance
        self.log = api.log
        self._files = f"instances/{quote(instance, safe='')}/files"

    @classmethod
    def connect(
        cls, remote: Remote, project: str, instance: str, command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        log: Log = _no_log, max_output: int | None = DEFAULT_MAX_OUTPUT,
    ) -> InstanceChannel:
        """A channel with its own client: every request is bounded by the remote's timeout, a command
        by `command_timeout` (an hour unless given; None: only the task's own timeout applies), its output by `max_output`
        bytes (None: no limit)."""
        # The exec path waits for a command in bounded slices of its own (exec_stream.WAIT_SLICE).
        api = LxdApi(remote, log=log, project=project or "default", timeout=remote.timeout)
        return cls(api, instance, command_timeout, max_output)

    def describe(self) -> str:
        """The instance as messages name it."""
        return f"instance '{self.instance}' in project '{self.project}' on {self.api.describe()}"

    def exec(
        self,
        argv: list[str],
        stdin: bytes | IO[bytes] | None = None,
        environment: Mapping[str, str] | None = None,
        user: ExecUser = ROOT,
        cwd: str | None = None,
        stdout_sink: IO[bytes] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run `argv` in the instance; return (exit code, stdout, stderr) as bytes (stdout is
        written to `stdout_sink` instead, when given)."""
        self.log(f"mage_lxd: exec in {self.describe()} as uid {user.uid}: {argv!r}")
        env = {**user.environment(), **dict(environment or {})}
        request = ExecRequest(
            argv=["/bin/sh", "-c", EXIT_WRAPPER, "mage_lxd", *argv], environment=env,
            uid=user.uid, gid=user.gid, cwd=cwd, stdin=stdin or b"", timeout=self.command_timeout,
            max_output=self.max_output, stdout_sink=stdout_sink,
        )
        try:
            with self._errors("exec"):
                return unwrap_exit_status(*run_exec(self.api, self.instance, request))
        except ExecError as exc:
            raise exec_error(self.describe(), exc) from exc
        except MageLxdError as exc:
            raise refused_exec(self.describe(), exc) from exc
        except Exception as exc:  # anything unforeseen still names the instance and what is known
            raise exec_error(self.describe(), ExecError(f"may have run: {type(exc).__name__}: {exc}", ran=True)) from exc

    def exec_with_password(
        self,
        argv: list[str],
        dialogue: PasswordDialogue,
        environment: Mapping[str, str] | None = None,
        user: ExecUser = ROOT,
        become_timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """Run `argv` on a terminal, answering become's password prompt; return (exit code, output).

        A terminal merges stdout and stderr, as ssh -tt does; nothing is sent on stdin besides the
        password, so modules are not pipelined here.
        """
        self.log(f"mage_lxd: exec on a terminal in {self.describe()} as uid {user.uid}: {argv!r}")
        env = {**user.environment(), **dict(environment or {})}
        request = ExecRequest(argv=["/bin/sh", "-c", EXIT_WRAPPER, "mage_lxd", *argv], environment=env,
                              uid=user.uid, gid=user.gid, timeout=self.command_timeout, max_output=self.max_output)
        try:
            with self._errors("exec"):
                code, output = run_with_password(self.api, self.instance, request, dialogue, become_timeout)
        except ExecError as exc:
            raise exec_error(self.describe(), exc) from exc
        except BecomeError as exc:
            raise BecomeError(f"{exc.happened()}.", where=self.describe(),
                              fix="check ansible_become_password for this host and become user.") from exc
        code, _stdout, output = unwrap_exit_status(code, b"", output)
        return code, output

    def lookup_user(self, name: str) -> ExecUser:
        """Resolve a user name or numeric uid inside the instance (getent, as root)."""
        code, out, err = self.exec(["getent", "passwd", name])
        if code != 0 or not out.strip():
            raise RemoteError(
                f"{self.describe()}: user '{name}' does not exist there "
                f"({err.decode(errors='replace').strip() or 'getent found nothing'}). Fix: create the user, "
                "or set ansible_user to one that exists."
            )
        fields = out.decode(errors="replace").splitlines()[0].split(":")
        return ExecUser(name=fields[0], uid=int(fields[2]), gid=int(fields[3]), home=fields[5] or "/")

    def file_headers(self, mode: int, uid: int, gid: int) -> dict[str, str]:
        """The files API headers that write a file with `mode` and owner: X-LXD-* to LXD, X-Incus-*
        to Incus (Incus 7.2 reads no other; see server_kind.ServerKind)."""
        prefix = self.api.kind.file_header_prefix
        return {f"{prefix}type": "file", f"{prefix}mode": f"{mode:04o}", f"{prefix}uid": str(uid),
                f"{prefix}gid": str(gid), f"{prefix}write": "overwrite"}

    def _file_type(self, headers: Mapping[str, str]) -> str:
        # Incus answers with X-Incus-type only (already in 6.0): an X-LXD-type read finds nothing.
        return headers.get(f"{self.api.kind.file_header_prefix}type", "file")

    def put_file(self, local_path: str, remote_path: str, user: ExecUser = ROOT) -> None:
        """Stream a local file into the instance, keeping its permission bits: as root through the
        files API, as any other user through an exec as that user (it never writes as root)."""
        mode = stat.S_IMODE(os.stat(local_path).st_mode)
        self.log(f"mage_lxd: put {local_path} -> {self.describe()}:{remote_path} mode {mode:04o} as uid {user.uid}")
        if user.uid != 0:
            with open(local_path, "rb") as source:
                self._as_user(user, "put_file", remote_path, [PUT_AS_USER, "mage_lxd_put", remote_path, f"{mode:04o}"],
                              stdin=source)
            return
        headers = self.file_headers(mode, user.uid, user.gid)
        with open(local_path, "rb") as source, self._errors(f"put_file {remote_path}"):
            # A file object is streamed in blocks with its length, never read into memory whole.
            self.api.request("post", self._files, {"path": remote_path}, data=source, headers=headers,
                             timeout=self.remote.timeout)

    def _as_user(self, user: ExecUser, what: str, remote_path: str, script: list[str], **kwargs: Any) -> None:
        code, _out, err = self.exec(["/bin/sh", "-c", *script], user=user, **kwargs)
        if code != 0:
            error = RemoteError(
                f"{self.describe()}: {what} {remote_path} as user '{user.name}' failed (exit {code}: "
                f"{err.decode(errors='replace').strip()[:300] or 'no message'}); it is done with that user's rights, "
                "as over ssh. Fix: make the path writable (or readable) by that user, or use become.")
            error.task_failure = True
            raise error

    def read_small_file(self, remote_path: str) -> bytes | None:
        """The content of a small regular file (config), or None when there is none."""
        try:
            with self._errors(f"read {remote_path}"):
                response = self.api.request("get", self._files, {"path": remote_path}, timeout=self.remote.timeout)
        except NotFoundError:
            return None
        if self._file_type(response.headers) != "file":
            raise RemoteError(f"{self.describe()}: {remote_path} is a {self._file_type(response.headers)}, not a file")
        return response.content

    def write_small_file(self, remote_path: str, content: bytes, mode: int = 0o644) -> None:
        """Write a small file (config) as root with `mode`, replacing what is there."""
        headers = self.file_headers(mode, 0, 0)
        self.log(f"mage_lxd: write {self.describe()}:{remote_path} ({len(content)} bytes)")
        with self._errors(f"write {remote_path}"):
            self.api.request("post", self._files, {"path": remote_path}, data=content, headers=headers,
                             timeout=self.remote.timeout)

    def fetch_file(self, remote_path: str, local_path: str, user: ExecUser = ROOT) -> None:
        """Stream a regular file out of the instance into `local_path`, in fixed-size chunks: as
        root through the files API, as any other user through an exec as that user. Root inside
        the instance decides what the files API sends (one it keeps writing): that transfer is
        bounded by command_timeout, as a command is. Its size is the user's to ask for, as with
        ssh: the file goes to disk as it comes, and max_output (memory held) does not apply."""
        self.log(f"mage_lxd: fetch {self.describe()}:{remote_path} -> {local_path} as uid {user.uid}")
        if user.uid != 0:
            partial = f"{local_path}.part"
            try:
                with open(partial, "wb") as target:
                    self._as_user(user, "fetch_file", remote_path, [FETCH_AS_USER, "mage_lxd_fetch", remote_path],
                                  stdout_sink=target)
            except BaseException:
                os.unlink(partial)
                raise
            os.replace(partial, local_path)
            return
        with self._errors(f"fetch_file {remote_path}"):
            response = self.api.request("get", self._files, {"path": remote_path}, stream=True,
                                        timeout=self.remote.timeout)
            try:
                if self._file_type(response.headers) != "file":
                    raise RemoteError(f"{self.describe()}: {remote_path} is a {self._file_type(response.headers)}, not a file")
                partial = f"{local_path}.part"
                with open(partial, "wb") as target:
                    try:
                        self._receive_file(remote_path, response, target)
                    except BaseException:
                        os.unlink(partial)  # a limit that is hit leaves no part of the file behind
                        raise
                os.replace(partial, local_path)
            finally:
                response.close()

    def _receive_file(self, remote_path: str, response: Any, target: IO[bytes]) -> None:
        # Checked between chunks; each socket read within one waits at most the remote's timeout.
        deadline = None if self.command_timeout is None else time.monotonic() + self.command_timeout
        for chunk in response.iter_content(CHUNK_SIZE):
            if deadline is not None and time.monotonic() > deadline:
                raise ExecError(f"fetch_file {remote_path}: the file did not arrive within {self.command_timeout:g}s "
                                "(command_timeout); the transfer was stopped.", where=self.describe(), timed_out=True,
                                fix="raise command_timeout (ansible_mage_lxd_command_timeout).")
            target.write(chunk)

    def _errors(self, what: str) -> _InstanceErrors:
        return _InstanceErrors(self, what)


class _InstanceErrors:
    """Name the instance and say what to do when LXD refuses an operation on it."""

    def __init__(self, channel: InstanceChannel, what: str) -> None:
        self.channel = channel
        self.what = what
        self.inner = channel.api._errors(what)

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        where = self.channel.describe()
        if self.channel.api.clustered:
            self._name_unreachable_member(where, exc)
        if isinstance(exc, MageLxdError):
            return False
        if isinstance(exc, ApiError) and exc.status == 404:
            if INSTANCE_MISSING in exc.reasons or self.what == "exec":
                raise NotFoundError(
                    "does not exist.", where=where, sep=" ", status=404, reasons=exc.reasons,
                    fix="create it (mage_lxd_instance), or check the project and instance name "
                    "(ansible_mage_lxd_project, ansible_mage_lxd_instance).") from exc
            raise NotFoundError(f"{self.what}: {str(exc).strip() or 'not found'}", where=where, action=self.what,
                                cause=str(exc).strip(), status=404, reasons=exc.reasons) from exc
        cli = self.channel.api.kind.cli
        if isinstance(exc, ApiError) and NOT_RUNNING in exc.reasons:
            raise RemoteError("is not running.", where=where, sep=" ", status=exc.status, reasons=exc.reasons,
                              fix=f"start it ({cli} start, or mage_lxd_instance state=started).") from exc
        if isinstance(exc, ApiError) and FROZEN in exc.reasons:
            raise RemoteError("is frozen.", where=where, sep=" ", status=exc.status, reasons=exc.reasons,
                              fix=f"unfreeze it ({cli} start, or mage_lxd_instance state=started).") from exc
        return self.inner.__exit__(exc_type, exc, tb)

    def _name_unreachable_member(self, where: str, exc: BaseException) -> None:
        # Only on the error path: one more request, to say which member is down instead of LXD's
        # "Missing event connection with target cluster member".
        check_reachable(self.channel.api, listed_instance(self.channel.api, self.channel.instance), where)
