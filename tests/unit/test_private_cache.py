"""The inventory cache is kept to the controller's user: its directory 0700, its files 0600."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.private_cache import (cache_dir_refusal, make_cache_dir_private,
                                                                             make_cache_files_private)

KEY = "mage_lxd_k74b83b"


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_cache_directory_is_made_0700(tmp_path):
    directory = tmp_path / "cache" / "mage-lxd"
    make_cache_dir_private(str(directory))
    assert mode(directory) == 0o700


def test_an_existing_cache_directory_and_its_files_are_tightened(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)  # as ansible-core's cache plugin leaves it (the umask's default)
    ours, other = directory / f"ansible_inventory_s1_{KEY}", directory / "facts_host1"
    for path in (ours, other):
        path.write_text("{}")
        os.chmod(path, 0o644)  # as ansible-core's BaseFileCacheModule.set() leaves it
    make_cache_dir_private(str(directory))
    make_cache_files_private(str(directory), "ansible_inventory_", KEY)
    assert (mode(directory), mode(ours), mode(other)) == (0o700, 0o600, 0o644)


@pytest.mark.parametrize("bits", [0o1777, 0o777])
def test_a_shared_directory_is_refused(tmp_path, bits):
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, bits)
    with pytest.raises(OptionError, match=r"cache_connection '.*shared' is shared \(mode 1?777\).* Fix: set cache_connection"):
        make_cache_dir_private(str(directory))
    assert mode(directory) == bits  # never changed


def test_a_directory_of_another_user_is_refused(tmp_path):
    status = os.stat(tmp_path)
    refusal = cache_dir_refusal("/srv/cache", status, status.st_uid + 1)
    assert refusal and refusal.startswith("cache_connection '/srv/cache' belongs to uid") and "Fix:" in refusal


def test_a_missing_cache_file_is_fine(tmp_path):
    make_cache_files_private(str(tmp_path / "none"), "ansible_inventory_", KEY)
