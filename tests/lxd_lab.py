"""Test-side access to the lab's real LXD or Incus: projects, instances, ansible commands.

Integration tests create what they need in their own LXD projects (names start with `mage-test-`)
and delete them afterwards; nothing outside those projects is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The checkout is the mage.lxd collection, found through collection/ (pytest.ini's pythonpath does
# the same); the benchmarks import this module outside pytest.
if str(REPO / "collection") not in sys.path:
    sys.path.insert(0, str(REPO / "collection"))

from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote  # noqa: E402
VENV_BIN = Path(sys.executable).parent


def lab_env() -> dict[str, str]:
    """The lab's names and addresses from lab/lab.env."""
    values = {}
    for line in (REPO / "lab" / "lab.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip('"')
    return values


# Which lab server this pytest run tests: `lxd` (default) or `incus` (./run test makes a second pass
# with MAGE_TEST_SERVER=incus over tests/integration). The same tests run on both.
SERVER = os.environ.get("MAGE_TEST_SERVER", "lxd")
if SERVER not in ("lxd", "incus"):
    raise SystemExit(f"MAGE_TEST_SERVER={SERVER!r}: use lxd or incus")
ON_INCUS = SERVER == "incus"
LAB = lab_env()
if ON_INCUS:
    # Incus's own pool and bridge stand in for LXD's under the names the tests use.
    LAB.update(MAGE_LAB_POOL=LAB["MAGE_INCUS_POOL"], MAGE_LAB_BRIDGE=LAB["MAGE_INCUS_BRIDGE"],
               MAGE_LAB_SUBNET=LAB["MAGE_INCUS_SUBNET"], MAGE_LAB_HTTPS_ADDRESS=LAB["MAGE_INCUS_HTTPS_ADDRESS"])
    # The one variable that points every plugin (inventory included) at Incus; the ansible
    # commands the tests run inherit it.
    os.environ["MAGE_LXD_URL"] = f"unix:{LAB['MAGE_INCUS_SOCKET']}"
# The client command and how messages name the server.
CLI = "incus" if ON_INCUS else "lxc"
TITLE = "Incus" if ON_INCUS else "LXD"


def project_name(name: str) -> str:
    """A test project's name on this pass's server. LXD and Incus share the host's cgroup tree
    (instances are named project_instance there), so Incus's projects get names of their own."""
    return name.replace("mage-test-", "mage-test-inc-", 1) if ON_INCUS else name


# The lab server's own certificate, to pin over HTTPS.
SERVER_CERT = "/var/lib/incus/server.crt" if ON_INCUS else "/var/lib/lxd/server.crt"


def trust_certificate(cert: Path) -> None:
    """Make the lab server trust a client certificate (the two CLIs spell this differently)."""
    lxc("config", "trust", "add-certificate" if ON_INCUS else "add", str(cert))


def lab_remote() -> Remote:
    """The lab server as a Remote (Incus's socket on the Incus pass, else discovery finds LXD)."""
    return Remote(url=os.environ.get("MAGE_LXD_URL", "") if ON_INCUS else "")


def subnet_address(last: int) -> str:
    """An address in the lab bridge's subnet (the host part replaced by `last`)."""
    network = LAB["MAGE_LAB_SUBNET"].split("/")[0].rsplit(".", 1)[0]
    return f"{network}.{last}"


def lxc(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the server's own client, lxc or incus (test setup only; the plugins never need it)."""
    result = subprocess.run([CLI, *args], capture_output=True, text=True, input=stdin, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{CLI} {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def query(path: str) -> Any:
    """GET an LXD API path through `lxc query` and return the decoded JSON."""
    return json.loads(lxc("query", path).stdout or "null")


def create_project(name: str, profiles: Iterable[str] = ()) -> None:
    """A project with its own default profile on the lab pool and bridge, plus extra profiles."""
    delete_project(name)
    lxc("project", "create", name, "-c", "features.images=false", "-c", "features.profiles=true")
    lxc("profile", "device", "add", "default", "root", "disk", "path=/", f"pool={LAB['MAGE_LAB_POOL']}",
        "--project", name)
    lxc("profile", "device", "add", "default", "eth0", "nic", f"network={LAB['MAGE_LAB_BRIDGE']}", "name=eth0",
        "--project", name)
    for profile in profiles:
        lxc("profile", "create", profile, "--project", name)


def _names(urls: list[str] | None) -> list[str]:
    # LXD lists objects as URLs such as /1.0/instances/web1?project=p.
    return [url.split("?", 1)[0].rsplit("/", 1)[-1] for url in urls or []]


def delete_project(name: str) -> None:
    """Delete a test project and everything in it; a missing project is fine."""
    if lxc("project", "show", name, check=False).returncode != 0:
        return
    for instance in _names(query(f"/1.0/instances?project={name}")):
        lxc("delete", "--force", instance, "--project", name)
    if query(f"/1.0/projects/{name}")["config"].get("features.images") == "true":
        for image in _names(query(f"/1.0/images?project={name}")):
            lxc("image", "delete", image, "--project", name)
    for profile_name in _names(query(f"/1.0/profiles?project={name}")):
        if profile_name != "default":
            lxc("profile", "delete", profile_name, "--project", name)
    lxc("project", "delete", name)


def launch(project: str, name: str, image: str = "mage/busybox", profiles: Iterable[str] = ("default",),
           config: dict[str, str] | None = None, start: bool = True) -> None:
    """Create (and start) an instance in a test project."""
    args = ["launch" if start else "init", image, name, "--project", project]
    for profile in profiles:
        args += ["--profile", profile]
    for key, value in (config or {}).items():
        args += ["--config", f"{key}={value}"]
    lxc(*args)


def wait_for_leases(project: str, names: Iterable[str], timeout: float = 60) -> dict[str, str]:
    """Wait until every named instance has a DHCP lease on the lab bridge; return name -> IPv4."""
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        leases = query(f"/1.0/networks/{LAB['MAGE_LAB_BRIDGE']}/leases?project={project}") or []
        found = {lease["hostname"]: lease["address"] for lease in leases if lease["hostname"] in wanted}
        if set(found) == wanted:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no DHCP lease after {timeout}s for {sorted(wanted - set(found))}")
        time.sleep(0.3)


def ansible(tool: str, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an ansible command-line tool from the project's venv with the repo's ansible.cfg."""
    full_env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    result = subprocess.run([str(VENV_BIN / tool), *args], capture_output=True, text=True, cwd=cwd,
                            env=full_env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def inventory_list(config_path: Path, **kwargs: Any) -> dict[str, Any]:
    """`ansible-inventory -i CONFIG --list` as decoded JSON, unsafe markers removed."""
    return strip_unsafe(json.loads(ansible("ansible-inventory", "-i", str(config_path), "--list", **kwargs).stdout))


def strip_unsafe(data: Any) -> Any:
    """Replace ansible-inventory's {"__ansible_unsafe": value} markers by the value."""
    if isinstance(data, dict):
        if set(data) == {"__ansible_unsafe"}:
            return data["__ansible_unsafe"]
        return {key: strip_unsafe(value) for key, value in data.items()}
    if isinstance(data, list):
        return [strip_unsafe(item) for item in data]
    return data


def run_module(module: str, args: dict[str, Any], *extra: str, project: str = "default") -> dict[str, Any]:
    """Run one module (or action) on localhost ad hoc; return its result from the tree callback.

    The command's own output is under "_stdout" (diffs) and "_stderr" (warnings). The inventory is the mage_lxd inventory of `project`, as in real use: a second run then finds
    its instances already there (add_host of a host Ansible does not know counts as a change).
    """
    import shutil
    import tempfile

    tree = Path(tempfile.mkdtemp(prefix="mage-module-"))
    (tree / "inventory").mkdir()
    (tree / "inventory" / "mage_lxd.yml").write_text(f"plugin: mage_lxd\nprojects: [{project}]\n")
    (tree / "results").mkdir()
    try:
        result = ansible("ansible", "-i", str(tree / "inventory"), "localhost", "-c", "local", "-m", module,
                         "-a", json.dumps(args), "-t", str(tree / "results"), *extra,
                         env={"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}, check=False)
        output = tree / "results" / "localhost"
        if not output.exists():
            raise AssertionError(f"no result from {module}:\n{result.stdout}\n{result.stderr}")
        reported = json.loads(output.read_text())
        reported["_stdout"] = result.stdout
        reported["_stderr"] = result.stderr
        return reported
    finally:
        shutil.rmtree(tree)


def instance_names(project: str) -> list[str]:
    """Names of the instances in a project."""
    return sorted(_names(query(f"/1.0/instances?project={project}")))


def exec_stress_playbook(workdir: Path, group: str, commands: int, transfers: int) -> Path:
    """A play over `group` (forks are the caller's) that runs, per host, `commands` pipelined
    `command` tasks and as many `raw`, then puts and fetches back `transfers` small files, named by
    host so hosts sharing an instance do not collide; fetched files land in workdir/back. Shared by
    the in-suite stress test and bench/exec_stress.py."""
    small = workdir / "small.txt"
    small.write_text("stress\n")
    playbook = workdir / "stress.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - name: Exec stress
          hosts: {group}
          gather_facts: false
          tasks:
            - name: Pipelined module
              ansible.builtin.command: "echo {{{{ item }}}}"
              loop: "{{{{ range({commands}) | list }}}}"
              changed_when: false
            - name: Raw
              ansible.builtin.raw: "echo {{{{ item }}}}"
              loop: "{{{{ range({commands}) | list }}}}"
              changed_when: false
            - name: Put a file
              ansible.builtin.copy:
                src: {small}
                dest: "/tmp/stress-{{{{ inventory_hostname }}}}-{{{{ item }}}}.txt"
                mode: "0644"
              loop: "{{{{ range({transfers}) | list }}}}"
            - name: Get it back
              ansible.builtin.fetch:
                src: "/tmp/stress-{{{{ inventory_hostname }}}}-{{{{ item }}}}.txt"
                dest: "{workdir}/back/{{{{ inventory_hostname }}}}-{{{{ item }}}}.txt"
                flat: true
              loop: "{{{{ range({transfers}) | list }}}}"
        """))
    return playbook


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """ansible-playbook's PLAY RECAP as {host: {"ok": n, "changed": n, "failed": n, ...}}."""
    found = {}
    for line in stdout.split("PLAY RECAP")[-1].splitlines():
        if "changed=" in line:
            host, _, counts = line.partition(":")
            found[host.strip()] = {key: int(value) for key, value in (pair.split("=") for pair in counts.split())}
    return found


def recap_changed(stdout: str) -> dict[str, int]:
    """Changed tasks per host, from the PLAY RECAP."""
    return {host: counts["changed"] for host, counts in recap(stdout).items()}


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@contextmanager
def client_namespace(netns: str, host_if: str, client_if: str, host_address: str, client_address: str) -> Iterator[str]:
    """A network namespace joined to the host by a veth pair (host_if/24 on the host, client_if in
    the namespace): the "external" client that reaches published ports through the host."""
    _ip("netns", "del", netns, check=False)
    _ip("link", "del", host_if, check=False)
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", client_if)
        _ip("link", "set", client_if, "netns", netns)
        _ip("addr", "add", f"{host_address}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", netns, "ip", "addr", "add", f"{client_address}/24", "dev", client_if)
        _ip("netns", "exec", netns, "ip", "link", "set", client_if, "up")
        _ip("netns", "exec", netns, "ip", "link", "set", "lo", "up")
        yield netns
    finally:
        _ip("link", "del", host_if, check=False)
        _ip("netns", "del", netns, check=False)
