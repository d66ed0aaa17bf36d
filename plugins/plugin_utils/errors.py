"""Errors raised by the mage_lxd library.

Every plugin maps these to its own Ansible error type (plugin_errors.raised_as), so the
message is written once, here, for a person: what failed, on which remote or instance, and the fix.
"""

from __future__ import annotations


class MageLxdError(Exception):
    """A failure a user can act on; the message names the remote/instance/option and the fix."""

    # True when the failure is the task's (bad arguments, a timeout, a wrong password), not the
    # connection's: the host stays reachable and the play goes on with it.
    task_failure = False


class OptionError(MageLxdError):
    """A plugin option or a declared value is invalid; raised before anything is changed."""


class RemoteError(MageLxdError):
    """LXD could not be reached, refused our certificate, or answered with an error."""


class NotFoundError(RemoteError):
    """The LXD object (instance, project, network) does not exist."""


class ExecError(RemoteError):
    """An exec that failed after LXD accepted it; the message says whether the command ran.

    `refused`: LXD would not start it for its arguments (too long), a failure of the task, not of
    the connection. `timed_out`: it outlived its command_timeout and was stopped. `over_limit`: it
    sent more output than max_output and was stopped.
    """

    def __init__(self, message: str, ran: bool, refused: bool = False, timed_out: bool = False,
                 over_limit: bool = False) -> None:
        super().__init__(message)
        self.ran = ran
        self.refused = refused
        self.timed_out = timed_out
        self.over_limit = over_limit
        self.task_failure = refused or timed_out or over_limit


class MissingPackageError(MageLxdError):
    """A Python package the collection imports is not installed in the Python that runs Ansible."""


def missing_package(package: str, cause: ImportError) -> MissingPackageError:
    """The error for `package`, failed to import with `cause`: names it and the fix."""
    return MissingPackageError(
        f"the Python package '{package}' is missing from the Python that runs Ansible ({cause}). "
        f"Fix: pip install -r requirements.txt of the mage.lxd collection (or pip install {package}) "
        "into that Python")
