"""NAT for real, for each backend: a client in its own network namespace, joined to the host by a
veth pair that plays the "external" interface, reaches a server in a container through the host.

Only this machine is involved: the namespace (10.99.0.2; 10.99.1.2 on the Incus pass), the host
end of the veth (10.99.0.1; 10.99.1.1), the lab bridge and its container.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from lxd_lab import (LAB, ON_INCUS, client_namespace, create_project, delete_project, lxc, project_name, query, run_module, subnet_address,
                     wait_for_leases)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-nat")
# The Incus pass has its own namespace, veth, subnet and port, so it can run beside the LXD pass.
NETNS = "mage-test-inc-natc" if ON_INCUS else "mage-test-natc"
HOST_IF, CLIENT_IF = ("mage-inat-h", "mage-inat-c") if ON_INCUS else ("mage-nat-h", "mage-nat-c")
HOST_ADDRESS, CLIENT_ADDRESS = ("10.99.1.1", "10.99.1.2") if ON_INCUS else ("10.99.0.1", "10.99.0.2")
EXTPORT, INTPORT = (18180 if ON_INCUS else 18080), 8080


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def client(lab):
    with client_namespace(NETNS, HOST_IF, CLIENT_IF, HOST_ADDRESS, CLIENT_ADDRESS) as netns:
        yield netns


@pytest.fixture(scope="module")
def server(client):
    """A busybox container answering HTTP on INTPORT."""
    create_project(PROJECT)
    try:
        run_module("mage_lxd_instance", {"name": "nat1", "project": PROJECT, "image": "mage/busybox",
                                         "bootstrap": False, "image_server": ""}, project=PROJECT)
        wait_for_leases(PROJECT, ["nat1"])
        lxc("exec", "nat1", "--project", PROJECT, "--", "sh", "-c",
            f"mkdir -p /www && echo nat-ok > /www/index.html && httpd -p {INTPORT} -h /www")
        yield "nat1"
    finally:
        delete_project(PROJECT)


def fetch_from_client() -> str:
    """What the "external" client gets at the host's address and port ('' when nothing answers)."""
    result = sh("ip", "netns", "exec", NETNS, "curl", "-s", "-m", "3", f"http://{HOST_ADDRESS}:{EXTPORT}/",
                check=False)
    return result.stdout.strip()


def answer_becomes(expected: str, within: float = 10.0) -> str:
    """Poll the client until it gets `expected` (LXD starts and stops forwarders asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        got = fetch_from_client()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def tagged_iptables_rules() -> list[str]:
    rules = sh("iptables-save").stdout.splitlines()
    return [line for line in rules if f"mage-lxd:{PROJECT}/nat1:" in line]


def forward_ports() -> list[dict]:
    forwards = query(f"/1.0/networks/{LAB['MAGE_LAB_BRIDGE']}/forwards?recursion=1") or []
    return [port for forward in forwards for port in forward.get("ports") or []
            if port.get("description", "").startswith(f"mage-lxd:{PROJECT}/nat1:")]


def nat_devices() -> list[str]:
    devices = query(f"/1.0/instances/nat1?project={PROJECT}")["devices"]
    return [name for name in devices if name.startswith("mage-nat-")]


@pytest.mark.parametrize(
    "rule",
    [
        {"backend": "proxy", "listen": HOST_ADDRESS},
        {"backend": "proxy", "extif": HOST_IF},
        {"backend": "forward", "listen": HOST_ADDRESS, "intif": LAB["MAGE_LAB_BRIDGE"]},
        {"backend": "iptables", "extif": HOST_IF, "intif": LAB["MAGE_LAB_BRIDGE"]},
    ],
    ids=["proxy-listen", "proxy-extif", "forward", "iptables"],
)
def test_published_port_answers_and_is_gone_after_removal(server, rule):
    args = {"name": server, "project": PROJECT, "image": "mage/busybox", "bootstrap": False, "image_server": ""}
    nat = [{"extport": EXTPORT, "intport": INTPORT, "proto": "tcp", **rule}]
    assert answer_becomes("") == ""

    published = run_module("mage_lxd_instance", {**args, "nat": nat}, project=PROJECT)
    assert published["changed"] is True, published
    assert answer_becomes("nat-ok") == "nat-ok", (published, query(f"/1.0/instances/nat1?project={PROJECT}")["devices"])
    again = run_module("mage_lxd_instance", {**args, "nat": nat}, project=PROJECT)
    assert again["changed"] is False, again
    recorded = json.loads(query(f"/1.0/instances/nat1?project={PROJECT}")["config"]["user.mage.nat"])
    assert recorded[0]["extport"] == EXTPORT and recorded[0]["backend"] == rule["backend"]

    removed = run_module("mage_lxd_instance", {**args, "nat": []}, project=PROJECT)
    assert removed["changed"] is True
    assert answer_becomes("") == ""
    assert nat_devices() == [] and forward_ports() == [] and tagged_iptables_rules() == []
    assert "user.mage.nat" not in query(f"/1.0/instances/nat1?project={PROJECT}")["config"]


def test_iptables_rules_of_others_are_never_touched(server):
    foreign = ["-t", "nat", "PREROUTING", "-i", HOST_IF, "-p", "tcp", "--dport", "18099", "-j", "DNAT",
               "--to-destination", f"{subnet_address(250)}:80"]
    sh("iptables", "-t", "nat", "-A", *foreign[2:])
    try:
        args = {"name": server, "project": PROJECT, "bootstrap": False, "image_server": ""}
        nat = [{"extport": EXTPORT, "intport": INTPORT, "backend": "iptables", "extif": HOST_IF,
                "intif": LAB["MAGE_LAB_BRIDGE"]}]
        run_module("mage_lxd_instance", {**args, "nat": nat}, project=PROJECT)
        run_module("mage_lxd_instance", {**args, "nat": []}, project=PROJECT)
        assert "--dport 18099" in sh("iptables-save", "-t", "nat").stdout
    finally:
        sh("iptables", "-t", "nat", "-D", *foreign[2:], check=False)
