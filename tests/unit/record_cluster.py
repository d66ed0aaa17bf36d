"""Record real answers of the cluster lab with one member down, for the unit tests.

    .venv/bin/python tests/unit/record_cluster.py

It brings up lab/cluster.sh (and takes it down again if it was not up), runs one busybox container
on the first member and one on the second, stops the second member's daemon, waits until the
cluster marks it offline, and saves each answer the snapshot and the cluster checks ask for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lxd_lab import LAB, REPO  # noqa: E402

OUT = Path(__file__).resolve().parent / "recorded" / "lxd-5.0.2-cluster.json"
MEMBERS = LAB["MAGE_CLUSTER_MEMBERS"].split()
PLACED = {"mage-rec-c1": MEMBERS[0], "mage-rec-c2": MEMBERS[1]}


def cluster(*args: str) -> None:
    subprocess.run([str(REPO / "lab" / "cluster.sh"), *args], check=True, capture_output=True)


def lxc(*args: str) -> str:
    env = {**os.environ, "LXD_DIR": f"{LAB['MAGE_CLUSTER_DIR']}/{MEMBERS[0]}"}
    return subprocess.run(["lxc", *args], check=True, capture_output=True, text=True, env=env).stdout


def get(path: str) -> object:
    return json.loads(lxc("query", path) or "null")


def main() -> None:
    was_up = Path(LAB["MAGE_CLUSTER_RUN"], f"{MEMBERS[0]}.pid").exists()
    cluster("up")
    try:
        for name, member in PLACED.items():
            lxc("launch", "mage/busybox", name, "--target", member, "--quiet")
        time.sleep(3)  # busybox's DHCP client: an address in the state answer
        state = get(f"/1.0/instances/mage-rec-c1/state")
        cluster("stop", MEMBERS[1])
        deadline = time.monotonic() + 60
        while get(f"/1.0/cluster/members/{MEMBERS[1]}")["status"] != "Offline":
            if time.monotonic() > deadline:
                raise SystemExit("the stopped member never turned offline")
            time.sleep(1)
        answers = {
            "GET /1.0": get("/1.0"),
            "GET /1.0/projects": get("/1.0/projects"),
            "GET /1.0/instances all-projects=true recursion=1": get("/1.0/instances?all-projects=true&recursion=1"),
            # listed_instance() filters by name; the replay ignores the filter and returns the list.
            "GET /1.0/instances recursion=1": get("/1.0/instances?recursion=1"),
            "GET /1.0/instances/mage-rec-c1/state project=default": state,
            "GET /1.0/cluster/members recursion=1": get("/1.0/cluster/members?recursion=1"),
            f"GET /1.0/cluster/members/{MEMBERS[1]}": get(f"/1.0/cluster/members/{MEMBERS[1]}"),
        }
        OUT.write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(answers)} answers in {OUT}")
    finally:
        cluster("up")
        for name in PLACED:
            subprocess.run(["lxc", "delete", "--force", name], env={**os.environ, "LXD_DIR": f"{LAB['MAGE_CLUSTER_DIR']}/{MEMBERS[0]}"},
                           capture_output=True)
        if not was_up:
            cluster("down")


if __name__ == "__main__":
    main()
