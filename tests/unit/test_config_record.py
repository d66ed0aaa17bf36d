"""The record mage_lxd_config keeps in the instance: digests loaded, and the journal of a change."""

from __future__ import annotations

from ansible_collections.mage.lxd.plugins.plugin_utils.config_apply import Record, digest, read_record, write_record


class Files:
    """The two file calls the record uses, on a dict (the record's format is what is tested)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int]] = {}

    def read_small_file(self, path: str) -> bytes | None:
        return self.files[path][0] if path in self.files else None

    def write_small_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self.files[path] = (content, mode)


def test_a_journal_round_trips_with_absent_and_binary_files_and_is_kept_0600():
    files = Files()
    journal = Record(loaded={"/etc/a.conf": digest(b"a")}, pending={"/etc/a.conf": b"\x00old\nx y", "/etc/b": None})
    write_record(files, "/etc/rec", journal)
    assert files.files["/etc/rec"][1] == 0o600
    # Not JSON: the LXD client takes a JSON body from the files API for an API answer.
    assert not files.files["/etc/rec"][0].startswith(b"{")
    assert read_record(files, "/etc/rec") == journal


def test_a_missing_or_edited_record_means_nothing_is_known_to_be_loaded():
    files = Files()
    assert read_record(files, "/etc/rec") == Record()
    files.write_small_file("/etc/rec", b"# header\nloaded abc /etc/a.conf\nsomething else\n")
    assert read_record(files, "/etc/rec") == Record()
    files.write_small_file("/etc/rec", b"# header\npending !!notbase64 /etc/a.conf\n")
    assert read_record(files, "/etc/rec") == Record()
