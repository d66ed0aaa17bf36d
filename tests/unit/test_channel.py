"""Pure parts of the exec path: exit statuses LXD would swallow, become markers."""

from __future__ import annotations

import importlib.util
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ansible_collections.mage.lxd.plugins.plugin_utils import channel as channel_module
from ansible_collections.mage.lxd.plugins.plugin_utils.channel import (EXIT_MARKER, ExecUser, InstanceChannel, command_limit,
                                                                       unwrap_exit_status)
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import OptionError
from ansible_collections.mage.lxd.plugins.plugin_utils.exec_stream import DEFAULT_COMMAND_TIMEOUT
from ansible_collections.mage.lxd.plugins.plugin_utils.password_prompt import after_success


def test_exit_status_126_and_127_are_restored_with_the_output():
    assert unwrap_exit_status(1, b"out", b"sh: x: not found" + EXIT_MARKER + b"127") == (127, b"out", b"sh: x: not found")
    assert unwrap_exit_status(1, b"", EXIT_MARKER + b"126") == (126, b"", b"")


def test_other_statuses_and_lookalike_output_are_left_alone():
    assert unwrap_exit_status(1, b"", b"plain failure") == (1, b"", b"plain failure")
    # The marker only counts when the wrapper exited 1 and the status is one it reports.
    assert unwrap_exit_status(0, b"", EXIT_MARKER + b"127") == (0, b"", EXIT_MARKER + b"127")
    assert unwrap_exit_status(1, b"", EXIT_MARKER + b"2") == (1, b"", EXIT_MARKER + b"2")


def test_exec_user_environment_replaces_roots_login_variables():
    assert ExecUser("app", 1000, 1000, "/home/app").environment() == {
        "HOME": "/home/app", "USER": "app", "LOGNAME": "app"}


def _connection_module():
    spec = importlib.util.spec_from_file_location("mage_lxd_connection", Path(__file__).resolve().parents[2] / "plugins" / "connection" / "mage_lxd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_become_success_marker_is_stripped_only_when_it_begins_a_line():
    marker = b"BECOME-SUCCESS-abc"
    # On a pipe (stdout): the marker is the first line.
    assert after_success(marker + b"\n{\"ok\": 1}", marker) == b"{\"ok\": 1}"
    assert after_success(b"\n" + marker + b"\r\n{\"ok\": 1}", marker) == b"{\"ok\": 1}"
    # On a terminal: the prompt and the newline after the password go with it.
    assert after_success(b"[sudo via ansible, key=abc] password:\r\n" + marker + b"\r\nout\r\n", marker) == b"out\r\n"
    # The first marker counts: the command may print it again (ps showing its own command line).
    assert after_success(marker + b"\nsh -c echo " + marker + b"; ps\n", marker) == b"sh -c echo " + marker + b"; ps\n"
    # A marker inside a line was not printed by become's echo; no marker, nothing to strip.
    assert after_success(b"data " + marker + b"\n", marker) == b"data " + marker + b"\n"
    assert after_success(b"no marker", marker) == b"no marker"


def _channel_on(kind):
    from ansible_collections.mage.lxd.plugins.plugin_utils.channel import InstanceChannel
    from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote

    api = SimpleNamespace(remote=Remote(), project="p", log=lambda _m: None, kind=kind,
                          client=SimpleNamespace(api=SimpleNamespace(instances={"web1": None})))
    return InstanceChannel(api, "web1")


def test_file_headers_speak_the_servers_own_dialect():
    from ansible_collections.mage.lxd.plugins.plugin_utils.server_kind import INCUS, LXD

    # Incus 7.2 ignores X-LXD-*: a file would lose its mode and owner there.
    assert _channel_on(INCUS).file_headers(0o751, 1000, 1001) == {
        "X-Incus-type": "file", "X-Incus-mode": "0751", "X-Incus-uid": "1000", "X-Incus-gid": "1001",
        "X-Incus-write": "overwrite"}
    assert _channel_on(LXD).file_headers(0o600, 0, 0) == {
        "X-LXD-type": "file", "X-LXD-mode": "0600", "X-LXD-uid": "0", "X-LXD-gid": "0", "X-LXD-write": "overwrite"}
    # A directory is told by the type header of the server's own dialect.
    assert _channel_on(INCUS)._file_type({"X-Incus-type": "directory", "X-LXD-type": "file"}) == "directory"


def test_each_limit_that_is_hit_names_the_option_that_raises_it():
    from ansible_collections.mage.lxd.plugins.plugin_utils.channel import exec_error
    from ansible_collections.mage.lxd.plugins.plugin_utils.errors import ExecError
    from ansible_collections.mage.lxd.plugins.plugin_utils.exec_stream import output_exceeded

    over = exec_error("instance 'web1'", output_exceeded(1000))
    assert over.task_failure and over.over_limit
    assert str(over).startswith("instance 'web1': the command sent more than 1000 bytes of output (max_output)")
    assert "Fix: raise max_output (ansible_mage_lxd_max_output)" in str(over)
    late = exec_error("instance 'web1'", ExecError("did not finish within 3s", ran=True, timed_out=True))
    assert "Fix: raise command_timeout (ansible_mage_lxd_command_timeout)" in str(late)
    # A failure that says its own fix gets no second one.
    stuck = exec_error("instance 'web1'", ExecError("could not be stopped.", fix="stop them", timed_out=True))
    assert str(stuck).count("Fix:") == 1 and str(stuck).endswith("Fix: stop them.")


def test_a_command_is_bounded_by_default_and_0_is_no_limit_of_its_own():
    option = yaml.safe_load(_connection_module().DOCUMENTATION)["options"]["command_timeout"]
    assert option["default"] == DEFAULT_COMMAND_TIMEOUT == 3600
    assert command_limit(option["default"]) == 3600.0
    assert command_limit(0) is None and command_limit(0.0) is None
    assert command_limit(2.5) == 2.5
    # The library's own channels (bootstrap) have the same bound as the connection.
    assert InstanceChannel.__init__.__defaults__[0] == DEFAULT_COMMAND_TIMEOUT


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), None, True, "10"])
def test_a_command_timeout_that_is_no_number_of_seconds_is_refused_as_data(value):
    with pytest.raises(OptionError) as raised:
        command_limit(value)
    assert raised.value.fix.startswith("set ansible_mage_lxd_command_timeout")


class EndlessFile:
    """The files API's answer for a file root inside the instance made endless (a sparse 1 PiB
    file, or one it keeps writing): chunks without end, each `step` seconds on `clock`."""

    headers = {"X-LXD-type": "file"}

    def __init__(self, clock: list[float], step: float) -> None:
        self.clock = clock
        self.step = step
        self.sent = 0
        self.closed = False

    def iter_content(self, size: int):
        while True:
            if self.sent > 50:
                raise AssertionError("the fetch read on without limit")
            self.sent += 1
            self.clock[0] += self.step
            yield b"\0" * size

    def close(self) -> None:
        self.closed = True


def _fetching_channel(response, command_timeout, max_output):
    from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
    from ansible_collections.mage.lxd.plugins.plugin_utils.server_kind import LXD

    api = SimpleNamespace(remote=Remote(), project="p", log=lambda _m: None, kind=LXD, clustered=False,
                          describe=lambda: "local LXD", request=lambda *_args, **_kwargs: response,
                          _errors=lambda _what: nullcontext())
    return InstanceChannel(api, "web1", command_timeout=command_timeout, max_output=max_output)


def test_a_file_fetched_as_root_stops_at_command_timeout_naming_the_option(tmp_path, monkeypatch):
    from ansible_collections.mage.lxd.plugins.plugin_utils.errors import ExecError

    clock = [0.0]
    monkeypatch.setattr(channel_module, "time", SimpleNamespace(monotonic=lambda: clock[0]), raising=False)
    response = EndlessFile(clock, 1.0)
    local = tmp_path / "fetched"
    with pytest.raises(ExecError) as raised:
        _fetching_channel(response, 10.0, None).fetch_file("/var/log/big", str(local))
    assert raised.value.timed_out and raised.value.task_failure
    assert "within 10s (command_timeout)" in str(raised.value)
    assert "Fix: raise command_timeout (ansible_mage_lxd_command_timeout)" in str(raised.value)
    assert response.sent == 11 and not local.exists() and not (tmp_path / "fetched.part").exists()


class FiveMiBFile(EndlessFile):
    def iter_content(self, size: int):
        for _chunk in range(5):
            self.sent += 1
            yield b"x" * size


def test_a_file_fetched_as_root_larger_than_max_output_arrives_whole(tmp_path):
    # max_output bounds what is held in memory; a fetched file goes to disk as it comes, and its
    # size is the user's to ask for, as with ssh.
    local = tmp_path / "fetched"
    _fetching_channel(FiveMiBFile([0.0], 0.0), 10.0, 1000).fetch_file("/var/log/big", str(local))
    assert local.stat().st_size == 5 * 1024 * 1024
