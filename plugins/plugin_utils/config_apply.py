"""Apply config files to a running service in an instance and converge on what it really runs.

Used for mageproxy. Each run reads the files and a record kept next to them (the files API, no
exec), checks that the service runs and that its whole configuration passes the test. The record
holds the digests of the files the service last loaded, written only after a reload (or start)
succeeded, so a file written by a run that was cut off before its reload is not taken for live.

A change is journalled first: the record gets the previous text of every file about to change.
A run cut off anywhere leaves that journal behind, and the next run either completes the change
(the files on disk pass the test and are reloaded) or puts the journalled files back. Any failure
between the write and the reload, whatever its type, restores the previous files. Messages about
what is served are only printed after the probe (a request to the service) answered.

A file may be made of sections (`# mage-lxd section LABEL` ... `# mage-lxd section end`, one per
site for mageproxy). When the test refuses it, the sections it refuses are found by bisection (the
test runs on candidate files, nothing is reloaded meanwhile), left out with a warning naming them,
and the rest goes live; the record keeps what was left out of which text, so the next run with the
same text reloads nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .channel import InstanceChannel
from .errors import RemoteError

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceCommands:
    """Shell commands run in the instance (each must exit 0), after `functions` is sourced.

    running: exits 0 when the service runs; start: starts it; probe: a request that it answers.
    """

    prepare: str = ""
    test: str = ""
    reload: str = ""
    undo_prepare: str = ""
    running: str = ""
    start: str = ""
    probe: str = ""
    functions: str = ""


@dataclass
class ApplyResult:
    """What changed (or would, in check mode), why, and before/after text for diff mode."""

    changed: list[str] = field(default_factory=list)
    diff: list[dict[str, str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    msg: str = ""
    # Sections the test refused, each as a sentence naming it and what the service said.
    left_out: list[str] = field(default_factory=list)


@dataclass
class Record:
    """What the instance holds about the last apply: digests loaded, and a journal if one is open."""

    loaded: dict[str, str] = field(default_factory=dict)
    pending: dict[str, bytes | None] | None = None
    # Sections left out of a sectioned file: path -> (digest of the full text, {label: what was said}).
    left_out: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)


class StepFailed(RemoteError):
    """A service command exited non-zero: `detail` says which and what it said, `step` names it, `fix`
    says what to do."""

    def __init__(self, detail: str, step: str, fix: str) -> None:
        super().__init__(detail, fix=fix)
        self.detail, self.step = detail, step


def digest(content: bytes | None) -> str:
    """The sha256 of a file's bytes ('' for a file that does not exist)."""
    return "" if content is None else hashlib.sha256(content).hexdigest()


_RECORD_HEADER = "# mage-lxd: files the service loaded (sha256), and the journal of a change in progress"


def read_record(channel: InstanceChannel, path: str) -> Record:
    """The record at `path`; an absent or unreadable one is an empty record (nothing known loaded).

    Lines of text, not JSON: the LXD client takes a JSON body from the files API for an API answer.
    """
    raw = channel.read_small_file(path) if path else None
    record = Record()
    try:
        for line in (raw or b"").decode().splitlines()[1:]:
            kind, value, file_path = line.split(" ", 2)
            if kind == "loaded":
                record.loaded[file_path] = value
            elif kind == "left_out":
                source, label, said, file_path = line.split(" ", 4)[1:]
                entry = record.left_out.setdefault(file_path, (source, {}))
                if entry[0] != source:
                    raise ValueError(source)
                entry[1][label] = base64.b64decode(said, validate=True).decode()
            elif kind == "pending":
                record.pending = record.pending or {}
                record.pending[file_path] = None if value == "-" else base64.b64decode(value, validate=True)
            else:
                raise ValueError(kind)
    except ValueError:
        # Someone edited it: assume nothing about what was loaded, so this run reloads.
        return Record()
    return record


def write_record(channel: InstanceChannel, path: str, record: Record) -> None:
    """Write the record (mode 0600: it may journal a key file)."""
    if not path:
        return
    lines = [_RECORD_HEADER, *(f"loaded {value} {file_path}" for file_path, value in sorted(record.loaded.items()))]
    for file_path, (source, labels) in sorted(record.left_out.items()):
        lines += [f"left_out {source} {label} {base64.b64encode(said.encode()).decode()} {file_path}"
                  for label, said in sorted(labels.items())]
    for file_path, content in sorted((record.pending or {}).items()):
        lines.append(f"pending {'-' if content is None else base64.b64encode(content).decode()} {file_path}")
    channel.write_small_file(path, ("\n".join(lines) + "\n").encode(), mode=0o600)


def apply_config(
    channel: InstanceChannel, files: Mapping[str, str], commands: ServiceCommands, check_mode: bool = False,
    record_path: str = "", modes: Mapping[str, int] | None = None, required: Mapping[str, str] | None = None,
    pem: Mapping[str, str] | None = None, sections: Sections | None = None,
) -> ApplyResult:
    """Make `files` (path -> text) the instance's and the service's, safely (see the module docstring)."""
    wanted = {path: text.encode() for path, text in files.items()}
    current = _before_any_change(channel, "reading the files", lambda: {path: channel.read_small_file(path) for path in wanted})
    record = _before_any_change(channel, "reading the record", lambda: read_record(channel, record_path))
    named = _check_required(channel, required or {}, pem or {})
    left_out: dict[str, str] = {}
    source = ""
    full = wanted.get(sections.path, b"") if sections is not None else b""
    if sections is not None and sections.path in wanted:
        # What the test judged: the text and the files it names (a repaired certificate is tried again).
        source = digest(wanted[sections.path] + b"".join(digest(named[path]).encode() for path in sorted(named)))
        if record.left_out.get(sections.path, ("", {}))[0] == source:
            labels = record.left_out[sections.path][1]
            # The same text as the last run: what the test refused then stays out, untested again.
            left_out = dict(labels)
            wanted[sections.path] = without_sections(wanted[sections.path], set(labels))
            files = {**files, sections.path: wanted[sections.path].decode()}
    result = ApplyResult(changed=[path for path in wanted if current[path] != wanted[path]])
    for path in result.changed:
        secret = not (modes or {}).get(path, 0o644) & 0o004
        # A key or password file is never shown, not even in diff mode.
        hidden = f"(not shown: mode {(modes or {}).get(path, 0):04o})"
        result.diff.append({"before_header": path, "after_header": path,
                            "after": hidden if secret else files[path],
                            "before": hidden if secret else (current[path] or b"").decode(errors="replace")})
    # What to put back on failure: a journal left by a cut-off run holds the last good files.
    previous = {path: current[path] for path in wanted}
    if record.pending is not None:
        previous.update({path: text for path, text in record.pending.items() if path in wanted})
        result.actions.append("a previous run was cut off before it finished; completing or undoing it")
    loaded = bool(record_path) and record.loaded == {path: digest(text) for path, text in wanted.items()}
    settled = not result.changed and loaded and record.pending is None
    # Settled: one exec checks that it runs and tests the whole config (a foreign file may break it).
    running = _before_any_change(channel, "checking the service", lambda: _running_and_tested(channel, commands, wanted)
                                 if settled else _succeeds(channel, commands, commands.running))
    if not running:
        result.actions.append("the service is not running; starting it")
    elif not settled and not result.changed and record.pending is None:
        result.actions.append("the files on disk were never reloaded; reloading")
    kept = Record(loaded=record.loaded, left_out={sections.path: (source, left_out)}
                  if left_out and sections is not None else {})
    result.left_out = [_left_out_sentence(sections, label, said) for label, said in sorted(left_out.items())]
    if settled and running:
        return result
    if check_mode:
        return result
    isolate = None if sections is None or sections.path not in wanted else (sections, full, source)
    refused = _transact(channel, commands, wanted, current, previous, kept, record_path, running, modes or {}, isolate)
    if refused and sections is not None:
        result.left_out = [_left_out_sentence(sections, label, said) for label, said in sorted(refused.items())]
        result.changed = sorted(set(result.changed) | {sections.path})
    result.msg = _served_message(channel, commands, running)
    return result


@dataclass(frozen=True)
class Sections:
    """A file of `files` made of sections that may be left out one by one, and who each is (label -> who)."""

    path: str
    owners: Mapping[str, str] = field(default_factory=dict)


_SECTION = re.compile(rb"^# mage-lxd section ([!-~]{1,255})$")
_SECTION_END = b"# mage-lxd section end"


def split_sections(text: bytes) -> list[tuple[str, bytes]]:
    """The text as (label, chunk) pairs in order; text outside any section has the label ''."""
    parts: list[tuple[str, bytes]] = []
    label, chunk = "", []
    for line in text.splitlines(keepends=True):
        start = _SECTION.match(line.rstrip(b"\n"))
        if start and not label and line.rstrip(b"\n") != _SECTION_END:
            if chunk:
                parts.append(("", b"".join(chunk)))
            label, chunk = start.group(1).decode(), [line]
        elif label and line.rstrip(b"\n") == _SECTION_END:
            parts.append((label, b"".join([*chunk, line])))
            label, chunk = "", []
        else:
            chunk.append(line)
    if chunk:
        parts.append((label, b"".join(chunk)))
    return parts


def without_sections(text: bytes, labels: set[str]) -> bytes:
    """The text with the sections of those labels left out."""
    return b"".join(chunk for label, chunk in split_sections(text) if not label or label not in labels)


def find_refused(labels: list[str], passes: Callable[[list[str]], str | None]) -> dict[str, str]:
    """The labels whose sections the test refuses, each to what the test said, by bisection.

    `passes(kept)` runs the test with only those sections and returns None, or what the test said;
    it must pass with none and fail with all. A section that fails only beside others is the one
    tried last, so what is kept always passes together.
    """
    def search(candidates: list[str], good: list[str], said: str) -> dict[str, str]:
        # good passes; good + candidates fails, saying `said`.
        if len(candidates) == 1:
            return {candidates[0]: said}
        refused: dict[str, str] = {}
        half = len(candidates) // 2
        for part in (candidates[:half], candidates[half:]):
            failed = passes(good + part)
            if failed is not None:
                refused.update(search(part, good, failed))
            good = good + [label for label in part if label not in refused]
        return refused

    said = passes(labels)
    return {} if said is None else search(labels, [], said)


def _left_out_sentence(sections: Sections | None, label: str, said: str) -> str:
    who = (sections.owners.get(label) if sections is not None else "") or label
    where = sections.path if sections is not None else "the config"
    return (f"{who}: left out of {where}, the test refused it: {said} The rest is served. "
            "Fix: correct that route, then rerun.")


def _transact(
    channel: InstanceChannel, commands: ServiceCommands, wanted: Mapping[str, bytes], current: Mapping[str, bytes | None],
    previous: Mapping[str, bytes | None], record: Record, record_path: str, running: bool, modes: Mapping[str, int],
    isolate: tuple[Sections, bytes, str] | None = None,
) -> dict[str, str]:
    """Journal, write, test, reload or start, probe, record; on any failure put the previous files back.
    Returns the sections left out because the test refused them (see `_isolate`)."""
    _run(channel, commands, commands.prepare, "prepare")
    write_record(channel, record_path, Record(loaded=record.loaded, pending=dict(previous)))
    reached_service = False
    wanted = dict(wanted)
    refused: dict[str, str] = {}
    left_out = record.left_out
    try:
        for path in wanted:
            if current[path] != wanted[path]:
                channel.write_small_file(path, wanted[path], mode=modes.get(path, 0o644))
        try:
            _run(channel, commands, commands.test, "test", ours=wanted)
        except StepFailed as failure:
            if isolate is None:
                raise
            refused = _isolate(channel, commands, isolate[0], isolate[1], wanted, modes, failure)
            left_out = {isolate[0].path: (isolate[2], refused)}
        reached_service = True
        _run(channel, commands, commands.reload if running else commands.start, "reload" if running else "start")
        _run(channel, commands, commands.probe, "probe")
    except BaseException as failure:
        # Whatever went wrong (a refused config, a broken pipe, an interrupt), the old files return.
        rollback = _restore(channel, commands, previous, wanted, modes, reload=reached_service or not running)
        write_record(channel, record_path, Record(loaded=record.loaded, left_out=record.left_out))
        if not isinstance(failure, Exception):
            raise
        said, fix = (failure.detail, failure.fix) if isinstance(failure, StepFailed) else (
            str(failure) if isinstance(failure, RemoteError) else f"{type(failure).__name__}: {failure}",
            "rerun; a failure between the instance and LXD is usually passing.")
        served = _served_message(channel, commands, running, True)
        raise RemoteError(f"{said} {rollback} {served}".replace("  ", " ").strip(), fix=fix) from None
    write_record(channel, record_path, Record(loaded={path: digest(text) for path, text in wanted.items()},
                                              left_out=left_out))
    return refused


def _isolate(channel: InstanceChannel, commands: ServiceCommands, sections: Sections, full: bytes,
             wanted: dict[str, bytes], modes: Mapping[str, int], failure: StepFailed) -> dict[str, str]:
    """After the test refused the files: find the sections it refuses (each candidate is written
    and tested, nothing is reloaded), leave them out of `wanted` (updated in place, and on disk)
    and return them; re-raise `failure` when the text without any section fails too (a foreign
    file, say), so nothing of ours is to blame."""
    labels = [label for label, _text in split_sections(full) if label]

    def passes(kept: list[str]) -> str | None:
        text = without_sections(full, set(labels) - set(kept))
        channel.write_small_file(sections.path, text, mode=modes.get(sections.path, 0o644))
        code, out, err = _exec(channel, commands, commands.test)
        said = " ".join((err or out).decode(errors="replace").split())
        return None if code == 0 else (said[:600] or f"exit {code}")

    if not labels or passes([]) is not None:
        raise failure
    refused = find_refused(labels, passes)
    wanted[sections.path] = without_sections(full, set(refused))
    channel.write_small_file(sections.path, wanted[sections.path], mode=modes.get(sections.path, 0o644))
    _run(channel, commands, commands.test, "test", ours=wanted)
    return refused


def _restore(
    channel: InstanceChannel, commands: ServiceCommands, previous: Mapping[str, bytes | None],
    wanted: Mapping[str, bytes], modes: Mapping[str, int], reload: bool,
) -> str:
    """Put the previous files back (and make the service load them again when it may have taken the
    new ones, or was down); returns a sentence saying what was done."""
    try:
        for path, content in previous.items():
            if content is None:
                channel.exec(["rm", "-f", path])
            elif content != wanted.get(path):
                channel.write_small_file(path, content, mode=modes.get(path, 0o644))
        _run(channel, commands, commands.undo_prepare, "undo of prepare")
    except Exception as failure:  # noqa: BLE001 - reported, the original failure stays the error
        return f"Putting the previous files back failed too ({failure}); the next run will retry it."
    if reload and commands.test:
        # Only a configuration that passes is loaded again; a failure here is what the probe reports.
        again = commands.reload if _succeeds(channel, commands, commands.running) else commands.start
        if _succeeds(channel, commands, commands.test) and again:
            _succeeds(channel, commands, again)
    return "The previous files were put back."


def _served_message(channel: InstanceChannel, commands: ServiceCommands, was_running: bool,
                    after_rollback: bool = False) -> str:
    """A sentence about what is served, said only after the probe answered."""
    if not commands.probe:
        return ""
    try:
        _run(channel, commands, commands.running, "running check")
        _run(channel, commands, commands.probe, "probe")
    except Exception as failure:  # noqa: BLE001 - the sentence reports it
        said = failure.detail if isinstance(failure, StepFailed) else str(failure)
        return f"The service does not answer ({said}): nothing is served."
    if not after_rollback:
        return "The service was reloaded and answered a request." if was_running else \
            "The service was started and answered a request."
    return "The service answered a request and keeps serving the configuration it had loaded."


def _before_any_change(channel: InstanceChannel, what: str, read: Callable[[], T]) -> T:
    """Run a read-only step; a broken connection there is retried once (nothing changed yet)."""
    for attempt in (1, 2):
        try:
            return read()
        # A socket LXD closed first surfaces as an OSError (BrokenPipeError, ...) or a RuntimeError here.
        except (OSError, RuntimeError) as failure:
            if attempt == 2:
                raise RemoteError(f"{channel.describe()}: {what} failed twice ({type(failure).__name__}: {failure}) "
                                  "before any change; nothing was changed. Fix: rerun.") from None
    raise AssertionError("unreachable")


_PEM_BEGIN = re.compile(rb"^-----BEGIN ([A-Z0-9 ]+)-----\r?$", re.MULTILINE)


def _check_required(channel: InstanceChannel, required: Mapping[str, str], pem: Mapping[str, str]) -> dict[str, bytes]:
    """Refuse, before any change, when a file the config names (path -> who names it) is not there,
    or one that must be PEM (path -> its label, e.g. CERTIFICATE) holds no such block; returns them."""
    missing, not_pem, found = [], [], {}
    for path, who in sorted(required.items()):
        content = _before_any_change(channel, f"reading {path}", lambda path=path: channel.read_small_file(path))
        found[path] = content or b""
        if content is None:
            missing.append(f"{who}: {path}")
        elif path in pem and not any(label.endswith(pem[path].encode()) for label in _PEM_BEGIN.findall(content)):
            not_pem.append(f"{who}: {path} holds no PEM {pem[path].lower()}")
    if missing:
        raise RemoteError(f"{'; '.join(missing)}: not on {channel.describe()}; nothing was changed. Fix: put the "
                          "file there, or let mage-lxd bring it (tls: provided, tls: acme, a mageproxy_htpasswd set).")
    if not_pem:
        raise RemoteError(f"{'; '.join(not_pem)} on {channel.describe()}, so nginx would refuse it; nothing was "
                          "changed. Fix: point the route at the PEM files of that site, or use tls: provided.")
    return found


_NOT_RUNNING = 100


def _running_and_tested(channel: InstanceChannel, commands: ServiceCommands, ours: Mapping[str, bytes]) -> bool:
    """Whether the service runs; when it does, its whole config must pass the test (else StepFailed)."""
    if not commands.running:
        _run(channel, commands, commands.test, "test", ours=ours)
        return True
    both = f"( {commands.running} ) >/dev/null 2>&1 || exit {_NOT_RUNNING}\n{commands.test or 'true'}"
    code, out, err = _exec(channel, commands, both)
    if code == _NOT_RUNNING:
        return False
    if code != 0:
        raise StepFailed(*_failure(channel, commands.test, "test", code, out, err, ours))
    return True


def _succeeds(channel: InstanceChannel, commands: ServiceCommands, command: str) -> bool:
    if not command:
        return True
    return _exec(channel, commands, command)[0] == 0


def _exec(channel: InstanceChannel, commands: ServiceCommands, command: str) -> tuple[int, bytes, bytes]:
    return channel.exec(["/bin/sh", "-c", f"{commands.functions}\n{command}" if commands.functions else command])


_NAMED_FILE = re.compile(r" in (/[^\s:]+):\d+")


def _run(channel: InstanceChannel, commands: ServiceCommands, command: str, step: str,
         ours: Mapping[str, bytes] | None = None) -> None:
    if not command:
        return
    code, out, err = _exec(channel, commands, command)
    if code != 0:
        raise StepFailed(*_failure(channel, command, step, code, out, err, ours))


def _failure(channel: InstanceChannel, command: str, step: str, code: int, out: bytes, err: bytes,
             ours: Mapping[str, bytes] | None) -> tuple[str, str, str]:
    """(detail, step, fix) for a failed step: what the service said, and whose file it names."""
    said = (err or out).decode(errors="replace").strip()
    detail = f"{channel.describe()}: the {step} step ({command}) failed with exit {code}: {said}"
    # nginx names the file it refuses; say when that file is not one this task manages.
    foreign = sorted({path for path in _NAMED_FILE.findall(said) if ours is not None and path not in ours})
    if foreign:
        detail += f" {', '.join(foreign)} is not managed by mage-lxd; nothing can be reloaded until the whole config passes."
        return detail, step, "repair or remove it, then rerun."
    if step == "test":
        return detail, step, "correct the value named above, then rerun."
    return detail, step, "see what the service said above (and its error log), then rerun."
