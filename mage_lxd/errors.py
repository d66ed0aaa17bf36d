"""Errors raised by the mage_lxd library.

Every plugin maps these to its own Ansible error type (see mage_lxd.ansible_errors), so the
message is written once, here, for a person: what failed, on which remote or instance, and the fix.
"""

from __future__ import annotations


class MageLxdError(Exception):
    """A failure a user can act on; the message names the remote/instance/option and the fix."""


class OptionError(MageLxdError):
    """A plugin option or a declared value is invalid; raised before anything is changed."""


class RemoteError(MageLxdError):
    """LXD could not be reached, refused our certificate, or answered with an error."""


class NotFoundError(RemoteError):
    """The LXD object (instance, project, network) does not exist."""
