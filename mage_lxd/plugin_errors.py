"""The one place where library errors become each plugin type's Ansible error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mage_lxd.errors import MageLxdError


@contextmanager
def raised_as(error_class: type[Exception], task_error_class: type[Exception] | None = None) -> Iterator[None]:
    """Re-raise a MageLxdError inside the block as `error_class` (AnsibleParserError, ...).

    A failure of the task rather than of the connection (an exec LXD refused for its arguments,
    one stopped at its command_timeout, a wrong become password) becomes `task_error_class` when
    one is given.
    """
    try:
        yield
    except MageLxdError as exc:
        error = (task_error_class if exc.task_failure and task_error_class else error_class)(str(exc))
        # Our message already says everything; ansible-core >= 2.19 would append the cause's again.
        error._include_cause_message = False  # type: ignore[attr-defined]
        raise error from exc
