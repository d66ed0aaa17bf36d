"""A hostile tenant against addresses and NAT: someone who is root inside one container, or who may
edit only its config, tries to make a published port or the inventory point elsewhere, or to keep
a port after its owner is gone. Each test asserts what the operator sees: the forward's target
(`network forward show`), the DNAT rule (`iptables -t nat -S`), which container answers a request
through the published port, the inventory's address, and the run's status and warnings.

Only this machine is involved: a client namespace joined to the host by a veth pair (10.99.4.x on
the LXD pass, 10.99.5.x on Incus), the lab bridge and the test's own containers.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from lxd_lab import (LAB, ON_INCUS, client_namespace, create_project, delete_project, inventory_list, lxc, project_name, query,
                     run_module, wait_for_leases)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-tnat")
BRIDGE = LAB["MAGE_LAB_BRIDGE"]
NETNS = "mage-test-inc-tnatc" if ON_INCUS else "mage-test-tnatc"
HOST_IF, CLIENT_IF = ("mage-itnat-h", "mage-itnat-c") if ON_INCUS else ("mage-tnat-h", "mage-tnat-c")
HOST_ADDRESS, CLIENT_ADDRESS = ("10.99.5.1", "10.99.5.2") if ON_INCUS else ("10.99.4.1", "10.99.4.2")
EXTPORT, INTPORT = (18380 if ON_INCUS else 18280), 8080
BASE = {"project": PROJECT, "image": "mage/busybox", "bootstrap": False, "image_server": ""}
BACKENDS = {
    "forward": {"backend": "forward", "listen": HOST_ADDRESS, "intif": BRIDGE},
    "iptables": {"backend": "iptables", "extif": HOST_IF, "intif": BRIDGE},
}


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def nat(backend: str, extport: int = EXTPORT) -> list[dict]:
    return [{"extport": extport, "intport": INTPORT, "proto": "tcp", **BACKENDS[backend]}]


def in_container(name: str, script: str) -> None:
    lxc("exec", name, "--project", PROJECT, "--", "sh", "-c", script)


def serve(name: str) -> str:
    """Launch a busybox container (through the module) that answers HTTP with its own name; its lease."""
    result = run_module("mage_lxd_instance", {**BASE, "name": name}, project=PROJECT)
    assert "msg" not in result, result
    address = wait_for_leases(PROJECT, [name])[name]
    # httpd's stdio on /dev/null: an exec whose streams a daemon still holds may never end.
    in_container(name, f"mkdir -p /www && echo {name} > /www/index.html && "
                       f"httpd -p {INTPORT} -h /www </dev/null >/dev/null 2>&1")
    return address


def fetch(port: int = EXTPORT) -> str:
    """What the client behind the veth gets through the published port ('' when nothing answers)."""
    result = sh("ip", "netns", "exec", NETNS, "curl", "-s", "-m", "3", f"http://{HOST_ADDRESS}:{port}/", check=False)
    return result.stdout.strip()


def answer_becomes(expected: str, port: int = EXTPORT, within: float = 10.0) -> str:
    # LXD starts and stops forwarders asynchronously.
    deadline = time.monotonic() + within
    while True:
        got = fetch(port)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def forward_targets() -> dict[str, str]:
    """{port description: target address} of this project's ports on the lab bridge's forwards."""
    forwards = query(f"/1.0/networks/{BRIDGE}/forwards?recursion=1") or []
    return {port["description"]: port["target_address"] for forward in forwards for port in forward.get("ports") or []
            if port.get("description", "").startswith(f"mage-lxd:{PROJECT}/")}


def dnat_rules() -> list[str]:
    return [line for line in sh("iptables", "-t", "nat", "-S").stdout.splitlines() if f"mage-lxd:{PROJECT}/" in line]


def nat_points_at(backend: str, owner: str) -> list[str]:
    """Where the published port of `owner` points, as the operator reads it on the host."""
    if backend == "forward":
        return [target for description, target in forward_targets().items()
                if description.startswith(f"mage-lxd:{PROJECT}/{owner}:")]
    return [line.split("--to-destination ")[1].split(":")[0] for line in dnat_rules()
            if f"mage-lxd:{PROJECT}/{owner}:" in line and "--to-destination" in line]


def remove_leftovers() -> None:
    # Our project's marked rules, whatever a failed test left behind.
    for table in ("nat", "filter"):
        for line in sh("iptables", "-t", table, "-S").stdout.splitlines():
            if line.startswith("-A ") and f"mage-lxd:{PROJECT}/" in line:
                sh("sh", "-c", f"iptables -t {table} -D {line[3:]}", check=False)
    forwards = query(f"/1.0/networks/{BRIDGE}/forwards?recursion=1") or []
    for forward in forwards:
        if forward["listen_address"] == HOST_ADDRESS:
            lxc("network", "forward", "delete", BRIDGE, HOST_ADDRESS, check=False)


@pytest.fixture(scope="module")
def client(lab):
    with client_namespace(NETNS, HOST_IF, CLIENT_IF, HOST_ADDRESS, CLIENT_ADDRESS) as netns:
        yield netns


@pytest.fixture(scope="module")
def victim(client):
    """A neighbour in the project: the container whose address the tenant borrows."""
    create_project(PROJECT)
    try:
        yield serve("victim")
    finally:
        delete_project(PROJECT)
        remove_leftovers()


@pytest.fixture
def clean(victim):
    yield
    for name in ("tenant", "newcomer"):
        lxc("delete", "--force", name, "--project", PROJECT, check=False)
    remove_leftovers()


def inventory_address(tmp_path: Path, source: str) -> str:
    config = tmp_path / "mage_lxd.yml"
    config.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\naddress_source: {source}\n")
    hostvars = inventory_list(config)["_meta"]["hostvars"]
    return hostvars["tenant"]["lxd_address"]


@pytest.mark.parametrize("backend", ["forward", "iptables"])
def test_docker0_and_a_dummy_with_the_neighbours_address_do_not_move_nat_or_the_inventory(clean, victim, backend,
                                                                                           tmp_path):
    tenant = serve("tenant")
    # Root inside the tenant: a docker0 bridge and a link named dummy0 (a veth: the lab kernel has no
    # dummy driver) carrying the victim's address, both before eth0 in name order. arp_ignore keeps
    # dummy0's address from answering ARP on eth0, which is not what is tested here.
    in_container("tenant", "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore; "
                           "ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && "
                           "ip link set docker0 up; "
                           f"ip link add dummy0 type veth && ip addr add {victim}/32 dev dummy0 && ip link set dummy0 up")

    published = run_module("mage_lxd_instance", {**BASE, "name": "tenant", "nat": nat(backend)}, project=PROJECT)

    assert "msg" not in published and published["changed"] is True, published  # "failed" is not in the tree callback's file
    assert published["ipv4"] == [tenant]
    assert nat_points_at(backend, "tenant") == [tenant]
    assert answer_becomes("tenant") == "tenant"
    assert inventory_address(tmp_path, "leases") == tenant
    assert inventory_address(tmp_path, "state") == tenant


def test_an_address_outside_the_network_is_refused_for_that_instance_and_the_batch_goes_on(clean, victim, tmp_path):
    serve("tenant")
    # Root inside the tenant gives up its lease and puts the metadata address on eth0.
    in_container("tenant", "kill -USR2 $(pidof udhcpc); sleep 1; kill $(pidof udhcpc); ip addr flush dev eth0; "
                           "ip addr add 169.254.169.254/16 dev eth0")
    deadline = time.monotonic() + 10
    while any(lease["hostname"] == "tenant" for lease in query(f"/1.0/networks/{BRIDGE}/leases?project={PROJECT}")):
        assert time.monotonic() < deadline, "the tenant's lease was not released"
        time.sleep(0.3)

    result = run_module("mage_lxd_instance", {
        **BASE, "wait_for_address": "none",
        "instances": [{"name": "tenant", "nat": nat("forward")}, {"name": "victim", "nat": nat("forward", EXTPORT + 1)}],
    }, project=PROJECT)

    entries = {item["name"]: item for item in result["instances"]}
    message = entries["tenant"]["msg"]
    assert result["msg"] == message  # the task fails with the tenant's message alone
    assert entries["tenant"]["failed"] is True
    assert message.startswith(f"instance 'tenant' in project '{PROJECT}': nat tcp-{EXTPORT}"), message
    assert "169.254.169.254" in message and f"network '{BRIDGE}'" in message and "Fix:" in message
    assert not entries["victim"].get("failed"), entries["victim"]
    assert nat_points_at("forward", "tenant") == []
    assert nat_points_at("forward", "victim") == [victim]
    assert answer_becomes("victim", EXTPORT + 1) == "victim"
    # Nor is it the inventory's address (and so no mageproxy upstream), whatever the source.
    assert inventory_address(tmp_path, "leases") == inventory_address(tmp_path, "state") == ""
    run_module("mage_lxd_instance", {**BASE, "name": "victim", "nat": []}, project=PROJECT)


@pytest.mark.parametrize("backend", ["forward", "iptables"])
def test_a_port_of_an_instance_deleted_out_of_band_never_reaches_the_next_holder_of_its_address(clean, victim,
                                                                                                backend):
    tenant = serve("tenant")
    run_module("mage_lxd_instance", {**BASE, "name": "tenant", "nat": nat(backend)}, project=PROJECT)
    assert answer_becomes("tenant") == "tenant"
    lxc("delete", "--force", "tenant", "--project", PROJECT)
    # DHCP hands the address to a new container (pinned here, so the test does not wait for chance).
    lxc("init", "mage/busybox", "newcomer", "--project", PROJECT)
    lxc("config", "device", "override", "newcomer", "eth0", f"ipv4.address={tenant}", "--project", PROJECT)
    lxc("start", "newcomer", "--project", PROJECT)
    wait_for_leases(PROJECT, ["newcomer"])
    in_container("newcomer", f"mkdir -p /www && echo newcomer > /www/index.html && "
                             f"httpd -p {INTPORT} -h /www </dev/null >/dev/null 2>&1")
    assert answer_becomes("newcomer") == "newcomer"  # the attack, before any run

    checked = run_module("mage_lxd_instance", {**BASE, "name": "victim"}, "--check", project=PROJECT)
    assert checked["changed"] is True and {item["instance"] for item in checked["nat_removed"]} == {"tenant"}
    assert "check mode: would remove" in " ".join(checked["_stderr"].split())
    assert nat_points_at(backend, "tenant") == [tenant]

    result = run_module("mage_lxd_instance", {**BASE, "name": "victim"}, project=PROJECT)

    assert "msg" not in result and result["changed"] is True, result
    assert [(item["instance"], item["backend"], item["why"]) for item in result["nat_removed"]] == \
        [("tenant", backend, "the instance no longer exists")] * (2 if backend == "iptables" else 1)
    warnings = " ".join(result["_stderr"].split())
    assert f"of instance 'tenant' in project '{PROJECT}': the instance no longer exists" in warnings
    assert nat_points_at(backend, "tenant") == []
    assert answer_becomes("") == ""
    again = run_module("mage_lxd_instance", {**BASE, "name": "victim"}, project=PROJECT)
    assert again["changed"] is False and again["nat_removed"] == []


@pytest.mark.parametrize("backend", ["forward", "iptables"])
def test_a_port_whose_record_is_unset_by_hand_is_removed_and_others_are_kept(clean, victim, backend):
    serve("tenant")
    run_module("mage_lxd_instance", {**BASE, "name": "tenant", "nat": nat(backend)}, project=PROJECT)
    run_module("mage_lxd_instance", {**BASE, "name": "victim", "nat": nat(backend, EXTPORT + 1)}, project=PROJECT)
    assert answer_becomes("tenant") == "tenant" and answer_becomes("victim", EXTPORT + 1) == "victim"
    # The tenant edits its own config only.
    lxc("config", "unset", "tenant", "user.mage.nat", "--project", PROJECT)

    result = run_module("mage_lxd_instance", {**BASE, "name": "victim", "nat": nat(backend, EXTPORT + 1)},
                        project=PROJECT)

    assert "msg" not in result and result["changed"] is True, result
    assert {item["instance"] for item in result["nat_removed"]} == {"tenant"}
    assert f"its user.mage.nat no longer records {backend} rule tcp-{EXTPORT}" in " ".join(result["_stderr"].split())
    assert nat_points_at(backend, "tenant") == []
    assert answer_becomes("") == ""
    assert answer_becomes("victim", EXTPORT + 1) == "victim"
    run_module("mage_lxd_instance", {**BASE, "name": "victim", "nat": []}, project=PROJECT)
