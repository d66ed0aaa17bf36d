"""The one place where library errors become each plugin type's Ansible error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mage_lxd.errors import ExecError, MageLxdError


@contextmanager
def raised_as(error_class: type[Exception], task_error_class: type[Exception] | None = None) -> Iterator[None]:
    """Re-raise a MageLxdError inside the block as `error_class` (AnsibleParserError, ...).

    An exec LXD refused for its arguments, or one stopped at its command_timeout, is the task's
    failure, not the connection's: it becomes `task_error_class` when one is given.
    """
    try:
        yield
    except MageLxdError as exc:
        task_failure = isinstance(exc, ExecError) and (exc.refused or exc.timed_out)
        error = (task_error_class if task_failure and task_error_class else error_class)(str(exc))
        # Our message already says everything; ansible-core >= 2.19 would append the cause's again.
        error._include_cause_message = False  # type: ignore[attr-defined]
        raise error from exc
