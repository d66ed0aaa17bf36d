"""What writing a non-root user's files as that user costs: put_file and fetch_file through the
files API (root's path) against an exec running `cat` as the user (every other user's path).

Against the lab's real LXD (its Incus with MAGE_TEST_SERVER=incus), in the project
`mage-bench-tconn-files` (one container, image mage/debian-12, user `app`), created and deleted
here. For each size, --rounds (20) puts and fetches each way; reports the median and p95 in ms.

    .venv/bin/python bench/file_transfer.py
    MAGE_TEST_SERVER=incus .venv/bin/python bench/file_transfer.py --rounds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from lxd_lab import create_project, delete_project, lab_remote, launch, lxc, project_name, wait_for_leases  # noqa: E402

from ansible_collections.mage.lxd.plugins.plugin_utils.channel import ROOT, InstanceChannel  # noqa: E402

PROJECT = project_name("mage-bench-tconn-files")
SIZES = {"1 KiB": 1024, "1 MiB": 1024 * 1024, "50 MiB": 50 * 1024 * 1024}


def timed(action, rounds: int) -> tuple[float, float]:
    """Median and p95 of `rounds` runs of `action`, in ms."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    create_project(PROJECT)
    try:
        launch(PROJECT, "files1", image="mage/debian-12")
        wait_for_leases(PROJECT, ["files1"])
        lxc("exec", "files1", "--project", PROJECT, "--", "useradd", "-m", "app")
        channel = InstanceChannel.connect(lab_remote(), PROJECT, "files1")
        app = channel.lookup_user("app")
        with tempfile.TemporaryDirectory() as work:
            print(f"{'size':>7} {'how':<16} {'put median':>11} {'put p95':>8} {'fetch median':>13} {'fetch p95':>10}")
            for label, size in SIZES.items():
                source = os.path.join(work, "source")
                Path(source).write_bytes(os.urandom(size))
                for how, user, target in (("files API, root", ROOT, "/root/f"), ("exec as app", app, "/home/app/f")):
                    n = rounds if size < 10 * 1024 * 1024 else max(3, rounds // 4)
                    put = timed(lambda: channel.put_file(source, target, user), n)
                    fetch = timed(lambda: channel.fetch_file(target, os.path.join(work, "back"), user), n)
                    print(f"{label:>7} {how:<16} {put[0]:>9.1f}ms {put[1]:>6.1f}ms {fetch[0]:>11.1f}ms {fetch[1]:>8.1f}ms")
    finally:
        delete_project(PROJECT)


if __name__ == "__main__":
    main()
