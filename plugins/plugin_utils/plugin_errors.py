"""The one place where library errors become each plugin type's Ansible error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import MageLxdError


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
        error = (task_error_class if exc.task_failure and task_error_class else error_class)(exc.render())
        # The message once: Ansible prints an error's orig_exc and its cause chain after the message
        # ("X: X: X"), and our messages already say everything the causes did.
        raise error from None
