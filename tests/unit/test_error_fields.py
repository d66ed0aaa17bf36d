"""Errors are data: each class carries its fields, callers decide on them, and one render() makes the text."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.channel import exec_error, refused_exec
from ansible_collections.mage.lxd.plugins.plugin_utils.config_apply import StepFailed
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import (
    NOT_STARTED, OVER_LIMIT, RAN, REFUSED, TIMED_OUT, ExecError, MageLxdError, MissingPackageError, NotFoundError,
    OptionError, RemoteError, first_line, missing_package)
from ansible_collections.mage.lxd.plugins.plugin_utils.lxd_api import LxdApi
from ansible_collections.mage.lxd.plugins.plugin_utils.password_prompt import BecomeError
from ansible_collections.mage.lxd.plugins.plugin_utils.plugin_errors import raised_as
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.transport import (
    ARGUMENTS_TOO_LONG, DEADLINE, FROZEN, INSTANCE_MISSING, NOT_RUNNING, ApiError, TransportError,
    classify_answer)

WHERE = "instance 'web1' in project 'shop' on LXD remote 'local' (unix:/var/lib/lxd/unix.socket)"


def test_a_base_error_carries_its_fields_and_renders_them_once():
    error = MageLxdError("is not running.", where=WHERE, sep=" ", fix="start it.", status=400,
                         reasons={NOT_RUNNING})
    assert (error.where, error.said, error.fix, error.status, error.reasons, error.outcome) == \
        (WHERE, "is not running.", "start it.", 400, frozenset({NOT_RUNNING}), None)
    assert error.render() == str(error) == f"{WHERE} is not running. Fix: start it."
    assert error.head() == f"{WHERE} is not running."
    assert not error.task_failure


def test_action_and_cause_make_the_sentence_when_nothing_else_is_said():
    error = RemoteError(where="LXD remote 'h'", action="PUT /1.0/instances/x", cause="Invalid value: lots",
                        status=500)
    assert error.happened() == "PUT /1.0/instances/x failed: Invalid value: lots"
    assert error.render() == "LXD remote 'h': PUT /1.0/instances/x failed: Invalid value: lots"
    # A plain message stays what it was.
    assert str(OptionError("mage_lxd_instance: give either name or instances, not both")) == \
        "mage_lxd_instance: give either name or instances, not both"


def test_an_option_error_is_a_refusal_before_any_change():
    error = OptionError("instance 'web1': proxy[0].pass: '0' is out of range.", fix="give a port.")
    assert isinstance(error, MageLxdError) and not isinstance(error, RemoteError)
    assert error.fix == "give a port." and error.status is None
    assert error.render() == "instance 'web1': proxy[0].pass: '0' is out of range. Fix: give a port."


def test_a_not_found_error_is_a_remote_error_with_status_404():
    error = NotFoundError("GET /1.0/instances/x: not found (Instance not found)", where="LXD remote 'h'",
                          action="GET /1.0/instances/x", cause="Instance not found", status=404,
                          reasons=classify_answer(404, "Instance not found"))
    assert isinstance(error, RemoteError)
    assert error.status == 404 and error.cause == "Instance not found" and INSTANCE_MISSING in error.reasons
    assert error.render() == "LXD remote 'h': GET /1.0/instances/x: not found (Instance not found)"


@pytest.mark.parametrize(("flags", "outcome", "ran", "task_failure"), [
    ({}, NOT_STARTED, False, False),
    ({"ran": True}, RAN, True, False),
    ({"refused": True}, REFUSED, False, True),
    ({"ran": True, "timed_out": True}, TIMED_OUT, True, True),
    ({"ran": True, "over_limit": True}, OVER_LIMIT, True, True),
])
def test_an_exec_error_says_how_far_the_command_got(flags, outcome, ran, task_failure):
    error = ExecError("did not finish", **flags)
    assert (error.outcome, error.ran, error.task_failure) == (outcome, ran, task_failure)
    assert (error.refused, error.timed_out, error.over_limit) == \
        (outcome == REFUSED, outcome == TIMED_OUT, outcome == OVER_LIMIT)
    assert ExecError("x", outcome=outcome).outcome == outcome
    with pytest.raises(ValueError):
        raise ExecError("x", outcome="maybe")


def test_a_missing_package_names_it_and_the_fix():
    error = missing_package("websockets", ImportError("No module named 'websockets'"))
    assert isinstance(error, MissingPackageError)
    assert error.fix.startswith("pip install -r requirements.txt of the mage.lxd collection")
    assert error.render() == (
        "the Python package 'websockets' is missing from the Python that runs Ansible (No module named "
        "'websockets'). Fix: pip install -r requirements.txt of the mage.lxd collection (or pip install "
        "websockets) into that Python")


def test_a_failed_service_step_names_the_step_and_says_its_fix_once():
    error = StepFailed(f"{WHERE}: the test step (nginx -t) failed with exit 1: unknown directive", "test",
                       "correct the value named above, then rerun.")
    assert isinstance(error, RemoteError) and not error.task_failure
    assert (error.step, error.fix, error.status) == ("test", "correct the value named above, then rerun.", None)
    assert error.render() == str(error) == (f"{WHERE}: the test step (nginx -t) failed with exit 1: unknown "
                                            "directive Fix: correct the value named above, then rerun.")


def test_a_become_failure_is_the_tasks_and_names_the_instance():
    error = BecomeError("the become password was refused (wrong password).", where=WHERE,
                        fix="check ansible_become_password for this host and become user.")
    assert error.task_failure and error.where == WHERE and error.happened() == \
        "the become password was refused (wrong password)."
    assert error.render() == (f"{WHERE}: the become password was refused (wrong password). Fix: check "
                              "ansible_become_password for this host and become user.")


@pytest.mark.parametrize(("status", "text", "reasons"), [
    (404, "Instance not found", {INSTANCE_MISSING}),
    (404, "Network not found", set()),
    (400, "Instance is not running", {NOT_RUNNING}),
    (400, "Instance is frozen", {FROZEN}),
    (500, "context deadline exceeded", {DEADLINE}),
    (500, "fork/exec /bin/sh: argument list too long", {ARGUMENTS_TOO_LONG}),
    (500, "Invalid value: lots", set()),
])
def test_lxds_answers_are_classified_once_in_the_transport(status, text, reasons):
    assert classify_answer(status, text) == frozenset(reasons)
    assert ApiError(status, text).reasons == frozenset(reasons)


class _Answer:
    def __init__(self, status: int, body: dict) -> None:
        self.status_code, self.headers, self.text = status, {"Content-Type": "application/json"}, json.dumps(body)
        self._body = body

    def json(self) -> dict:
        return self._body

    def close(self) -> None:
        return None


class _Session:
    def __init__(self, answers: dict) -> None:
        self.answers = answers

    def request(self, method: str, url: str, params=None, **_kwargs):
        answer = self.answers[(method, url.split("/1.0", 1)[1] or "/")]
        if isinstance(answer, BaseException):
            raise answer
        return _Answer(*answer)


TRUSTED = {"type": "sync", "metadata": {"auth": "trusted", "api_extensions": [], "environment": {}}}


def _api(answers: dict) -> LxdApi:
    return LxdApi(Remote(name="h", url="https://h:8443"), session=_Session({("get", "/"): (200, TRUSTED), **answers}))


def test_the_client_maps_lxds_answer_to_fields():
    api = _api({("put", "/instances/x"): (400, {"type": "error", "error": "Instance is not running", "error_code": 400})})
    with pytest.raises(RemoteError) as raised:
        api.put("instances/x", {})
    error = raised.value
    assert (error.where, error.action, error.cause, error.status) == \
        ("LXD remote 'h' (https://h:8443)", "PUT /1.0/instances/x", "Instance is not running", 400)
    assert error.reasons == {NOT_RUNNING} and error.fix == ""
    assert error.render() == "LXD remote 'h' (https://h:8443): PUT /1.0/instances/x failed: Instance is not running"


def test_a_connection_failure_has_no_status_and_a_fix():
    api = _api({("get", "/instances"): TransportError("connect", ConnectionRefusedError("refused\nsecond line"))})
    with pytest.raises(RemoteError) as raised:
        api.get("instances")
    error = raised.value
    assert error.status is None and error.cause == "refused"  # the first line of the cause
    assert error.fix.startswith("is LXD running and listening there")
    assert error.render().startswith("LXD remote 'h' (https://h:8443): cannot connect (refused). Fix: is LXD")


def test_an_exec_failure_is_named_and_given_the_fix_of_its_outcome():
    error = exec_error("instance 'web1'", ExecError("did not finish within 3s", timed_out=True))
    assert (error.where, error.outcome, error.task_failure) == ("instance 'web1'", TIMED_OUT, True)
    assert error.render() == ("instance 'web1': the command did not finish within 3s. Fix: raise command_timeout "
                              "(ansible_mage_lxd_command_timeout), or make the command faster.")
    # A failure that brings its own fix keeps it and gets no second one.
    stuck = exec_error("instance 'web1'", ExecError("could not be stopped.", fix="stop them", timed_out=True))
    assert stuck.fix == "stop them." and stuck.render().count("Fix:") == 1


def test_a_refused_exec_names_the_instance_once_and_says_nothing_ran():
    named = RemoteError("is not running.", where=WHERE, sep=" ", fix="start it.", status=400)
    error = refused_exec(WHERE, named)
    assert (error.where, error.fix, error.status) == (WHERE, "start it.", 400)
    assert error.render() == f"{WHERE} is not running. The command did not run. Fix: start it."
    other = RemoteError(where="LXD remote 'h'", action="POST /1.0/instances/web1/exec", cause="boom", status=500)
    assert refused_exec(WHERE, other).render() == \
        f"{WHERE}: LXD remote 'h': POST /1.0/instances/web1/exec failed: boom The command did not run."


def test_the_plugin_adapter_renders_the_error_once():
    class Failure(Exception):
        pass

    class TaskFailure(Exception):
        pass

    with pytest.raises(TaskFailure) as raised, raised_as(Failure, TaskFailure):
        raise ExecError("did not finish", where="instance 'web1'", fix="wait.", timed_out=True)
    assert str(raised.value) == "instance 'web1': did not finish Fix: wait."
    assert raised.value.__cause__ is None
    with pytest.raises(Failure), raised_as(Failure, TaskFailure):
        raise RemoteError("cannot connect.", where="LXD remote 'h'")


def test_a_watched_operation_reads_a_bounded_waits_end_from_the_classified_answer():
    # Incus answers a wait that outlived its timeout with an error ("context deadline exceeded").
    deadline = (504, {"type": "error", "error": "context deadline exceeded", "error_code": 504})
    api = _api({("post", "/images"): (202, {"type": "async", "operation": "/1.0/operations/op1"}),
                ("get", "/operations/op1/wait"): deadline,
                ("get", "/operations/op1"): (200, {"metadata": {"status": "Success", "metadata": {"size": 1}}})})
    assert api.post_watched("images", {}, None, watch=lambda _metadata: None) == {"size": 1}
    failed = _api({("post", "/images"): (202, {"type": "async", "operation": "/1.0/operations/op1"}),
                   ("get", "/operations/op1/wait"): (500, {"type": "error", "error": "disk full", "error_code": 500})})
    with pytest.raises(RemoteError) as raised:
        failed.post_watched("images", {}, None, watch=lambda _metadata: None)
    assert (raised.value.action, raised.value.cause, raised.value.status) == ("POST /1.0/images", "disk full", 500)


def test_an_exception_is_named_by_its_first_line_or_its_type():
    assert first_line(ValueError("Expecting value\n  at byte 0")) == "Expecting value"
    assert first_line(OSError("")) == "OSError"
    assert first_line(ValueError("x" * 400)) == "x" * 300
