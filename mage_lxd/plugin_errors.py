"""The one place where library errors become each plugin type's Ansible error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mage_lxd.errors import MageLxdError


@contextmanager
def raised_as(error_class: type[Exception]) -> Iterator[None]:
    """Re-raise a MageLxdError inside the block as `error_class` (AnsibleParserError, ...)."""
    try:
        yield
    except MageLxdError as exc:
        # The message once: Ansible prints an error's orig_exc and its cause chain after the message
        # ("X: X: X"), and our messages already say everything the causes did.
        raise error_class(str(exc)) from None
