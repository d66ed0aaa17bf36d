"""mage_lxd_config's sections: a section the test refuses is found, left out with a warning, and the rest goes live."""

from __future__ import annotations

import pytest

from ansible_collections.mage.lxd.plugins.plugin_utils.config_apply import (
    Sections, ServiceCommands, apply_config, find_refused, split_sections, without_sections)
from ansible_collections.mage.lxd.plugins.plugin_utils.errors import RemoteError

CONF = "/etc/nginx/conf.d/mage-sites.conf"


def labels(conf: bytes) -> list[str]:
    return [label for label, _text in split_sections(conf) if label]


def text(*sites: str) -> str:
    return "# header\n" + "".join(f"# mage-lxd section {site}\nserver {site}\n# mage-lxd section end\n\n" for site in sites)


class Service:
    """An instance holding files, whose 'nginx -t' refuses any file holding 'bad' (or a 'clash-' pair)."""

    def __init__(self, foreign_broken: bool = False) -> None:
        self.files: dict[str, bytes] = {}
        self.tests = self.reloads = 0
        self.foreign_broken = foreign_broken

    def describe(self) -> str:
        return "instance 'mageproxy'"

    def read_small_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def write_small_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        self.files[path] = content

    def exec(self, argv: list[str]) -> tuple[int, bytes, bytes]:
        if argv[:2] == ["rm", "-f"]:
            self.files.pop(argv[2], None)
            return 0, b"", b""
        command = argv[-1]
        if "test" in command:
            self.tests += 1
            conf = self.files.get(CONF, b"")
            if self.foreign_broken:
                return 1, b"", b"nginx: [emerg] unknown directive in /etc/nginx/conf.d/zz.conf:1"
            for line in conf.splitlines():
                if b"bad" in line and line.startswith(b"server"):
                    return 1, b"", b"nginx: [emerg] cannot load certificate for " + line.split()[1]
            if conf.count(b"server clash-") > 1:
                return 1, b"", b"nginx: [emerg] clash"
        if "reload" in command:
            self.reloads += 1
        return 0, b"", b""


COMMANDS = ServiceCommands(test="test", reload="reload", running="running", probe="probe")
OWNERS = Sections(CONF, {"bad.example.org": "instance 'w2': proxy[0] bad.example.org/"})


def apply(service: Service, conf: str) -> object:
    return apply_config(service, {CONF: conf}, COMMANDS, record_path="/etc/nginx/mage-lxd-applied", sections=OWNERS)


def test_sections_split_and_leave_out_by_label():
    parts = split_sections(text("a.org", "b.org").encode())
    assert [label for label, _chunk in parts] == ["", "a.org", "", "b.org", ""][:len(parts)]
    assert b"".join(chunk for _label, chunk in parts) == text("a.org", "b.org").encode()
    assert labels(without_sections(text("a.org", "b.org").encode(), {"a.org"})) == ["b.org"]


@pytest.mark.parametrize("bad", [{"s3"}, {"s0", "s9"}, {"s1", "s2", "s3", "s4"}, {f"s{i}" for i in range(10)}])
def test_bisection_finds_every_refused_section(bad):
    labels = [f"s{i}" for i in range(10)]
    calls = []

    def passes(kept):
        calls.append(kept)
        return "refused" if set(kept) & bad else None

    assert set(find_refused(labels, passes)) == bad
    if len(bad) == 1:
        assert len(calls) <= 2 * 4 + 1  # about 2 log2(n) tests, not n


def test_a_section_that_fails_only_beside_another_leaves_one_of_them_out():
    labels = ["clash-a", "ok", "clash-b"]
    refused = find_refused(labels, lambda kept: "clash" if {"clash-a", "clash-b"} <= set(kept) else None)
    assert list(refused) == ["clash-b"]


def test_a_refused_site_is_left_out_named_and_the_rest_goes_live_then_a_rerun_reloads_nothing():
    service = Service()
    result = apply(service, text("a.example.org", "bad.example.org", "c.example.org"))
    assert labels(service.files[CONF]) == ["a.example.org", "c.example.org"]
    assert service.reloads == 1
    assert result.left_out == [
        f"instance 'w2': proxy[0] bad.example.org/: left out of {CONF}, the test refused it: nginx: [emerg] cannot load "
        "certificate for bad.example.org The rest is served. Fix: correct that route, then rerun."]
    tests = service.tests
    again = apply(service, text("a.example.org", "bad.example.org", "c.example.org"))
    assert (again.changed, again.left_out, service.reloads) == ([], result.left_out, 1)
    assert service.tests == tests + 1  # the settled check only
    # The route is repaired: it goes live.
    fixed = apply(service, text("a.example.org", "b.example.org", "c.example.org"))
    assert fixed.left_out == [] and service.files[CONF] == text("a.example.org", "b.example.org", "c.example.org").encode()


def test_a_failure_no_section_causes_is_reported_and_rolled_back_as_before():
    service = Service(foreign_broken=True)
    with pytest.raises(RemoteError, match="zz.conf is not managed by mage-lxd"):
        apply(service, text("a.example.org"))
    assert CONF not in service.files and service.reloads == 0


def test_a_tls_file_that_holds_no_pem_block_is_refused_before_any_change():
    service = Service()
    service.files.update({"/etc/ssl/a.crt": b"-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
                          "/etc/ssl/a.key": b"-----BEGIN EC PRIVATE KEY-----\nMII=\n-----END EC PRIVATE KEY-----\n",
                          "/etc/hostname": b"mageproxy\n"})
    required = {"/etc/ssl/a.crt": "instance 'w': route a.org/: tls.cert", "/etc/ssl/a.key": "instance 'w': route a.org/: tls.key"}
    pem = {"/etc/ssl/a.crt": "CERTIFICATE", "/etc/ssl/a.key": "PRIVATE KEY"}
    apply_config(service, {CONF: text("a.org")}, COMMANDS, required=required, pem=pem)
    with pytest.raises(RemoteError, match=r"^instance 'w': route a.org/: tls.cert: /etc/hostname holds no PEM certificate "
                                          r"on instance 'mageproxy', so nginx would refuse it; nothing was changed\. Fix: "):
        apply_config(service, {CONF: text("b.org")}, COMMANDS, required={"/etc/hostname": required["/etc/ssl/a.crt"]},
                     pem={"/etc/hostname": "CERTIFICATE"})
    assert labels(service.files[CONF]) == ["a.org"]
