"""Keep the inventory cache to the controller's user.

The cache holds every instance's config as read from the server (environment.*, cloud-init
included). ansible-core's file caches create their directory with the default mode and chmod each
file to 0644 after writing it; a directory of 0700 is what keeps others out, and the file is set
to 0600 after each write.
"""

from __future__ import annotations

import os
import stat

from .errors import OptionError

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
FIX_CACHE_DIR = "Fix: set cache_connection to a directory of your own, e.g. ~/.cache/mage-lxd."


def cache_dir_refusal(directory: str, status: os.stat_result, uid: int) -> str | None:
    """Why `directory` (its stat `status`) cannot hold a private cache for user `uid`, or None."""
    where = f"cache_connection '{directory}'"
    if not stat.S_ISDIR(status.st_mode):
        return f"{where} is not a directory. {FIX_CACHE_DIR}"
    if status.st_uid != uid:
        return (f"{where} belongs to uid {status.st_uid}, not to this user (uid {uid}), so it cannot be made "
                f"private, and the inventory cache holds every instance's config. {FIX_CACHE_DIR}")
    if status.st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        return (f"{where} is shared (mode {stat.S_IMODE(status.st_mode):o}); the inventory cache holds every "
                f"instance's config and is not written there. {FIX_CACHE_DIR}")
    return None


def make_cache_dir_private(directory: str) -> None:
    """Create `directory` as 0700, or take group and other rights off it; raise OptionError when it
    is not this user's own directory (see cache_dir_refusal)."""
    os.makedirs(directory, mode=PRIVATE_DIR_MODE, exist_ok=True)
    status = os.stat(directory)
    refusal = cache_dir_refusal(directory, status, os.getuid())
    if refusal:
        raise OptionError(refusal)
    if stat.S_IMODE(status.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(directory, PRIVATE_DIR_MODE)


def make_cache_files_private(directory: str, prefix: str, key: str) -> None:
    """Set this user's regular files `directory/<prefix>...<key>` to 0600 (ansible-core 2.19 puts a
    schema tag such as `s1_` between the two); a missing directory is fine."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(key)):
            continue
        path = os.path.join(directory, name)
        status = os.lstat(path)
        if stat.S_ISREG(status.st_mode) and status.st_uid == os.getuid() and stat.S_IMODE(status.st_mode) != PRIVATE_FILE_MODE:
            os.chmod(path, PRIVATE_FILE_MODE)
