"""Errors raised by the mage_lxd library, as data.

An error carries what a caller decides on (where it happened, what was being done, LXD's status
code and its classified answer, how far a command got) as fields, and one `render()` turns them
into the text a person reads: what failed, on which remote or instance, and the fix. Every plugin
maps these to its own Ansible error type (plugin_errors.raised_as), which renders them.
"""

from __future__ import annotations

from collections.abc import Iterable

# How far a command got when its exec failed (ExecError.outcome).
NOT_STARTED = "not started"  # its streams never connected: it did not run
REFUSED = "refused"  # LXD would not start it for its arguments (too long)
RAN = "ran"  # it started; its result, or its output, is unknown
TIMED_OUT = "timed out"  # it outlived its command_timeout and was stopped
OVER_LIMIT = "over limit"  # it sent more than max_output and was stopped
OUTCOMES = (NOT_STARTED, REFUSED, RAN, TIMED_OUT, OVER_LIMIT)


class MageLxdError(Exception):
    """A failure a user can act on.

    Fields: `where` (the instance or remote, as messages name it), `said` (what happened, as a
    phrase that follows `where` after `sep`; without it, `action` and `cause` make "ACTION failed:
    CAUSE"), `fix` (what to do, rendered after "Fix: "), `status` (LXD's HTTP or error code, when
    LXD answered), `reasons` (what kind of failure it is, for callers to decide on: LXD's answer as
    transport.classify_answer sorts it, or a library's own, such as proxy_plan.SERVED_BY_DECLARED),
    `outcome` (how far a command got, for execs)."""

    # True when the failure is the task's (bad arguments, a timeout, a wrong password), not the
    # connection's: the host stays reachable and the play goes on with it.
    task_failure = False

    def __init__(self, said: str = "", *, where: str = "", action: str = "", cause: str = "", fix: str = "",
                 status: int | None = None, reasons: Iterable[str] = (), outcome: str | None = None,
                 sep: str = ": ") -> None:
        self.said = said
        self.where = where
        self.action = action
        self.cause = cause
        self.fix = fix
        self.status = status
        self.reasons = frozenset(reasons)
        self.outcome = outcome
        self.sep = sep
        super().__init__(self.render())

    def happened(self) -> str:
        """What happened, without where and the fix."""
        return self.said or (f"{self.action} failed: {self.cause}" if self.action else self.cause)

    def head(self) -> str:
        """The text without the fix: where, then what happened."""
        said = self.happened()
        if not self.where:
            return said
        return f"{self.where}{self.sep}{said}" if said else self.where

    def render(self) -> str:
        """The whole text a person reads: where, what happened, then "Fix: ..." when there is one."""
        return f"{self.head()} Fix: {self.fix}" if self.fix else self.head()

    def __str__(self) -> str:
        return self.render()


class OptionError(MageLxdError):
    """A plugin option or a declared value is invalid; raised before anything is changed."""


class RemoteError(MageLxdError):
    """LXD could not be reached, refused our certificate, or answered with an error."""


class NotFoundError(RemoteError):
    """The LXD object (instance, project, network) does not exist."""


class ExecError(RemoteError):
    """An exec that failed after LXD accepted it; `outcome` says how far the command got.

    `ran`, `refused`, `timed_out` and `over_limit` read the outcome. A refused, timed-out or
    over-limit command is a failure of the task, not of the connection.
    """

    def __init__(self, said: str = "", ran: bool = False, refused: bool = False, timed_out: bool = False,
                 over_limit: bool = False, *, outcome: str | None = None, **fields: object) -> None:
        if outcome is None:
            outcome = (REFUSED if refused else OVER_LIMIT if over_limit else TIMED_OUT if timed_out
                       else RAN if ran else NOT_STARTED)
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown exec outcome {outcome!r}")
        super().__init__(said, outcome=outcome, **fields)  # type: ignore[arg-type]
        self.task_failure = outcome in (REFUSED, TIMED_OUT, OVER_LIMIT)

    @property
    def ran(self) -> bool:
        """True when the command started (whatever became of it)."""
        return self.outcome in (RAN, TIMED_OUT, OVER_LIMIT)

    @property
    def refused(self) -> bool:
        """True when LXD would not start it for its arguments."""
        return self.outcome == REFUSED

    @property
    def timed_out(self) -> bool:
        """True when it outlived its command_timeout (or its stop did not finish)."""
        return self.outcome == TIMED_OUT

    @property
    def over_limit(self) -> bool:
        """True when it sent more output than max_output."""
        return self.outcome == OVER_LIMIT


class MissingPackageError(MageLxdError):
    """A Python package the collection imports is not installed in the Python that runs Ansible."""


def missing_package(package: str, cause: ImportError) -> MissingPackageError:
    """The error for `package`, failed to import with `cause`: names it and the fix."""
    return MissingPackageError(
        f"the Python package '{package}' is missing from the Python that runs Ansible ({cause}).",
        fix=f"pip install -r requirements.txt of the mage.lxd collection (or pip install {package}) "
        "into that Python")


def first_line(exc: BaseException) -> str:
    """What an exception says, on one line for a message: its first line (at most 300 characters),
    or its type's name when it says nothing."""
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
