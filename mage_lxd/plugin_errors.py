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
        raise error_class(str(exc), orig_exc=exc) from exc
