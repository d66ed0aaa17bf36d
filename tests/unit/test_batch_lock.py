"""The batch lock lives where only the controller's user can reach it."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.batch import batch_lock, directory_problem, lock_directory
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import RemoteError
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote

REMOTE = Remote(url="unix:/nonexistent/lxd.socket")


def fake_stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


def test_only_a_directory_of_this_user_closed_to_others_is_a_lock_directory():
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o700, 1000), 1000) == ""
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o755, 1000), 1000) == ""
    assert "belongs to uid 65534" in directory_problem(fake_stat(stat.S_IFDIR | 0o700, 65534), 1000)
    assert "writable by others (mode 1777)" in directory_problem(fake_stat(stat.S_IFDIR | 0o1777, 1000), 1000)
    assert "writable by others" in directory_problem(fake_stat(stat.S_IFDIR | 0o770, 1000), 1000)
    assert "not a directory" in directory_problem(fake_stat(stat.S_IFREG | 0o600, 1000), 1000)


def test_the_lock_goes_to_the_users_runtime_directory_with_mode_0700(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    with batch_lock(REMOTE):
        locks = list((runtime / "mage-lxd").iterdir())
    assert len(locks) == 1 and stat.S_IMODE(locks[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((runtime / "mage-lxd").stat().st_mode) == 0o700


def test_a_runtime_directory_open_to_others_is_not_used_and_home_cache_is(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    directory, fd = lock_directory(REMOTE)
    os.close(fd)
    assert directory == str(tmp_path / "home" / ".cache" / "mage-lxd")
    assert not (shared / "mage-lxd").exists()


def test_a_lock_directory_that_is_a_symlink_or_open_to_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".cache").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / ".cache" / "mage-lxd").symlink_to(elsewhere)
    with pytest.raises(RemoteError, match="cannot be used .*Fix: remove it if it is a symlink"):
        lock_directory(REMOTE)
    (tmp_path / ".cache" / "mage-lxd").unlink()
    (tmp_path / ".cache" / "mage-lxd").mkdir()
    (tmp_path / ".cache" / "mage-lxd").chmod(0o777)
    with pytest.raises(RemoteError, match="writable by others .*Fix: remove it"):
        lock_directory(REMOTE)


def test_a_second_run_of_the_same_user_waits_and_names_the_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    held, release = threading.Event(), threading.Event()

    def hold():
        with batch_lock(REMOTE):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(RemoteError, match=r"for more than 0.3s .*Fix: wait for it"):
            with batch_lock(REMOTE, wait=0.3):
                pass
    finally:
        release.set()
        holder.join()
