"""Record what a hostile root inside a container makes LXD (or Incus) report, for the unit tests of
nics.nic_addresses: run on the lab, then commit tests/unit/recorded/tenant-nat-*.json.

    .venv/bin/python tests/unit/record_tenant_nat.py                         # LXD
    MAGE_TEST_SERVER=incus .venv/bin/python tests/unit/record_tenant_nat.py  # Incus

Two busybox containers: `victim` and `tenant`. Inside `tenant`, root adds a docker0 bridge with an
address of its own and a link named dummy0 (a veth: the lab kernel has no dummy driver) carrying
the victim's address; both sort before eth0. It saves the instance, its state, the networks and the
leases, then deletes everything it made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "collection"))

from lxd_lab import LAB, SERVER, create_project, delete_project, launch, lxc, project_name, query, wait_for_leases  # noqa: E402

OUT = Path(__file__).resolve().parent / "recorded"
PROJECT = project_name("mage-test-tnat-rec")


def main() -> None:
    create_project(PROJECT)
    try:
        launch(PROJECT, "victim")
        launch(PROJECT, "tenant")
        leases = wait_for_leases(PROJECT, ["victim", "tenant"])
        # arp_ignore: the victim's address on dummy0 must not answer ARP on eth0 (not what is tested).
        lxc("exec", "tenant", "--project", PROJECT, "--", "sh", "-c",
            "echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore; "
            "ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up; "
            f"ip link add dummy0 type veth && ip addr add {leases['victim']}/32 dev dummy0 && ip link set dummy0 up")
        bridge = LAB["MAGE_LAB_BRIDGE"]
        answers = {
            "GET /1.0": query("/1.0"),
            f"GET /1.0/instances/tenant project={PROJECT}": query(f"/1.0/instances/tenant?project={PROJECT}"),
            f"GET /1.0/instances/tenant/state project={PROJECT}": query(f"/1.0/instances/tenant/state?project={PROJECT}"),
            f"GET /1.0/networks project={PROJECT} recursion=1": query(f"/1.0/networks?recursion=1&project={PROJECT}"),
            f"GET /1.0/networks/{bridge}/leases project={PROJECT}": query(f"/1.0/networks/{bridge}/leases?project={PROJECT}"),
        }
        for network in answers[f"GET /1.0/networks project={PROJECT} recursion=1"]:
            network["used_by"] = [url for url in network.get("used_by") or [] if PROJECT in url]
        version = answers["GET /1.0"]["environment"]["server_version"]
        path = OUT / f"tenant-nat-{SERVER}-{version}.json"
        path.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(answers)} answers into {path}")
    finally:
        delete_project(PROJECT)


if __name__ == "__main__":
    main()
