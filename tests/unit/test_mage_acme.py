"""roles/mageproxy/files/mage-acme.sh tells the truth about its result, under sh and bash.

It runs here against a directory standing for mageproxy's / (MAGE_ACME_ROOT), with lego, nginx
and systemctl replaced by small scripts on PATH that do what the test says (the real ones run in
the integration test against pebble).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "mageproxy" / "files" / "mage-acme.sh"
SHELLS = [shell for shell in ("sh", "bash")
          if subprocess.run(["sh", "-c", f"command -v {shell}"], capture_output=True, check=False).returncode == 0]

LEGO = """#!/bin/sh
# Issues or renews: a new pair for the -d name under --path, each time it is called.
while [ $# -gt 0 ]; do case "$1" in --path) path=$2; shift;; -d) name=$2; shift;; esac; shift; done
mkdir -p "$path/certificates"
n=$(cat "$path/count" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$path/count"
echo "cert $n" > "$path/certificates/$name.crt"; echo "key $n" > "$path/certificates/$name.key"
"""


def tool(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)
    (directory / name).chmod(0o755)


@pytest.fixture
def proxy_root(tmp_path):
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    conf = root / "etc/nginx/mage-lxd/acme"
    (conf / "live").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/local/sbin").mkdir(parents=True)
    (root / "usr/local/sbin/mage-acme").write_text("installed")
    (conf / "env").write_text("MAGE_ACME_SERVER='https://acme.test/dir'\nMAGE_ACME_EMAIL='ops@example.test'\nMAGE_ACME_DAYS=30\n")
    (conf / "domains").write_text("a.example.test\n")
    bin_dir.mkdir()
    tool(bin_dir, "lego", LEGO)
    # nginx -t passes unless NGINX_T_FAILS is set; every call is logged.
    tool(bin_dir, "nginx", f'#!/bin/sh\necho "$*" >> {tmp_path}/nginx.log\n'
                           '[ "$1" = -t ] && [ -n "${NGINX_T_FAILS:-}" ] && { echo "nginx: [emerg] bad" >&2; exit 1; }\nexit 0\n')
    tool(bin_dir, "systemctl", f'#!/bin/sh\necho "$*" >> {tmp_path}/systemctl.log\n'
                               '[ "$1" = is-enabled ] || [ "$1" = is-active ] && exit 0\nexit 0\n')
    return {"root": root, "conf": conf, "bin": bin_dir, "tmp": tmp_path}


def mage_acme(proxy_root, shell: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{proxy_root['bin']}:{os.environ['PATH']}", "MAGE_ACME_ROOT": str(proxy_root["root"]),
               **env}
    return subprocess.run([shell, str(SCRIPT), *argv], capture_output=True, text=True, env=environ, timeout=30,
                          check=False)


@pytest.mark.parametrize("shell", SHELLS)
def test_issue_then_renew_installs_the_pair_and_reloads(proxy_root, shell):
    first = mage_acme(proxy_root, shell, "run")
    assert (first.returncode, first.stdout) == (0, "issued a.example.test\n"), first.stderr
    renewed = mage_acme(proxy_root, shell, "run", "--force")
    assert (renewed.returncode, renewed.stdout) == (0, "renewed a.example.test\n"), renewed.stderr
    assert (proxy_root["conf"] / "live/a.example.test.crt").read_text() == "cert 2\n"
    assert "-s reload" in (proxy_root["tmp"] / "nginx.log").read_text()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_renewal_nginx_refuses_fails_and_puts_the_previous_pair_back(proxy_root, shell):
    assert mage_acme(proxy_root, shell, "run").returncode == 0
    refused = mage_acme(proxy_root, shell, "run", "--force", NGINX_T_FAILS="1")
    assert refused.returncode != 0 and "nginx -t refuses the new certificates of a.example.test" in refused.stderr
    assert (proxy_root["conf"] / "live/a.example.test.crt").read_text() == "cert 1\n"
    assert (proxy_root["conf"] / "live/a.example.test.key").read_text() == "key 1\n"
    assert (proxy_root["tmp"] / "nginx.log").read_text().count("-s reload") == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_install_inside_one_never_says_renewed(proxy_root, shell):
    assert mage_acme(proxy_root, shell, "run").returncode == 0
    tool(proxy_root["bin"], "install", "#!/bin/sh\necho 'install: no space left' >&2\nexit 1\n")
    failed = mage_acme(proxy_root, shell, "run", "--force")
    assert failed.returncode != 0 and "renewed" not in failed.stdout, (failed.stdout, failed.stderr)
    assert "installing the new pair of a.example.test failed" in failed.stderr
    assert (proxy_root["conf"] / "live/a.example.test.crt").read_text() == "cert 1\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_pairs_of_names_gone_from_the_routes_are_removed_and_remove_clears_everything(proxy_root, shell):
    (proxy_root["conf"] / "domains").write_text("a.example.test\nb.example.test\n")
    assert mage_acme(proxy_root, shell, "run").returncode == 0
    (proxy_root["conf"] / "domains").write_text("a.example.test\n")
    pruned = mage_acme(proxy_root, shell, "run")
    assert pruned.returncode == 0 and "removed b.example.test" in pruned.stdout
    assert sorted(path.name for path in (proxy_root["conf"] / "live").iterdir()) == ["a.example.test.crt",
                                                                                     "a.example.test.key"]
    removed = mage_acme(proxy_root, shell, "remove")
    assert removed.returncode == 0 and removed.stdout.startswith("removed mage-acme")
    assert not proxy_root["conf"].exists() and not (proxy_root["root"] / "usr/local/sbin/mage-acme").exists()
    assert "disable --now mage-acme.timer" in (proxy_root["tmp"] / "systemctl.log").read_text()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_placeholder_that_cannot_be_removed_fails_the_run_but_the_new_pair_is_still_reloaded(proxy_root, shell):
    # The step inside `$(one ...)` runs where set -e does not hold: it must check its own status.
    (proxy_root["conf"] / "live/a.example.test.placeholder").write_text("")
    tool(proxy_root["bin"], "rm", '#!/bin/sh\nfor a in "$@"; do case "$a" in *.placeholder) exit 1;; esac; done\n'
                                  'exec /bin/rm "$@"\n')
    run = mage_acme(proxy_root, shell, "run")
    assert run.returncode != 0 and "removing the placeholder of a.example.test failed" in run.stderr
    assert run.stdout == "issued a.example.test\n"
    assert (proxy_root["conf"] / "live/a.example.test.crt").read_text() == "cert 1\n"
    assert "-s reload" in (proxy_root["tmp"] / "nginx.log").read_text()
