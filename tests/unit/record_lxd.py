"""Record real LXD answers for the unit tests: run on the lab, then commit tests/unit/recorded/.

    .venv/bin/python tests/unit/record_lxd.py

It creates two projects with a running container, a stopped one, a Debian container and one with a
NIC on an unmanaged parent (so leases cannot cover it), saves each API answer the snapshot asks
for, then deletes everything it made.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lxd_lab import LAB, create_project, delete_project, launch, lxc, query, wait_for_leases  # noqa: E402

OUT = Path(__file__).resolve().parent / "recorded"
PROJECTS = ("mage-rec-a", "mage-rec-b")


def main() -> None:
    create_project(PROJECTS[0], profiles=["web"])
    create_project(PROJECTS[1])
    try:
        launch(PROJECTS[0], "web1", profiles=["default", "web"],
               config={"user.role": "frontend",
                       "user.mage.proxy": json.dumps([{"name": "web1.example.org", "path": "/", "pass": 8080}]),
                       "user.mage.nat": json.dumps([{"extport": 8080, "intport": 80, "proto": "tcp"}])})
        lxc("query", "-X", "PATCH", f"/1.0/instances/web1?project={PROJECTS[0]}",
            "--data", json.dumps({"description": "{{ lookup('pipe', 'id') }}"}))
        launch(PROJECTS[0], "db1", start=False)
        launch(PROJECTS[1], "web2", image="mage/debian-12")
        # Its NIC names the bridge as a plain parent, not a managed network: the state path.
        launch(PROJECTS[1], "odd1", start=False)
        lxc("config", "device", "add", "odd1", "eth0", "nic", "nictype=bridged", "name=eth0", f"parent={LAB['MAGE_LAB_BRIDGE']}",
            "--project", PROJECTS[1])
        lxc("start", "odd1", "--project", PROJECTS[1])
        wait_for_leases(PROJECTS[0], ["web1"])
        wait_for_leases(PROJECTS[1], ["web2", "odd1"])
        answers = {
            "GET /1.0": query("/1.0"),
            "GET /1.0/projects": query("/1.0/projects"),
        }
        every = query("/1.0/instances?recursion=1&all-projects=true")
        answers["GET /1.0/instances all-projects=true recursion=1"] = [
            item for item in every if item["project"] in PROJECTS
        ]
        for project in PROJECTS:
            answers[f"GET /1.0/networks/{LAB['MAGE_LAB_BRIDGE']}/leases project={project}"] = query(
                f"/1.0/networks/{LAB['MAGE_LAB_BRIDGE']}/leases?project={project}")
        for project in PROJECTS:
            answers[f"GET /1.0/networks project={project} recursion=1"] = query(
                f"/1.0/networks?recursion=1&project={project}")
        answers[f"GET /1.0/instances/odd1/state project={PROJECTS[1]}"] = query(
            f"/1.0/instances/odd1/state?project={PROJECTS[1]}")
        OUT.mkdir(exist_ok=True)
        version = answers["GET /1.0"]["environment"]["server_version"]
        (OUT / f"lxd-{version}.json").write_text(json.dumps(answers, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(answers)} answers from LXD {version} into {OUT}")
    finally:
        for project in PROJECTS:
            delete_project(project)


if __name__ == "__main__":
    main()
