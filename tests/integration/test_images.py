"""Images pulled from real image servers: the lab's simplestreams server over HTTPS (its own CA, in
the host's CA store) and the other lab daemon's public image over the LXD protocol. Every pull is
counted in the simplestreams server's log (its lines name the daemon's User-Agent) and checked by
fingerprint. The pulled images are deleted before and after, so each run downloads them again."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

from lxd_lab import (LAB, ON_INCUS, REPO, ansible, create_project, delete_project, instance_names, lab_env, lxc,
                     project_name, query, run_module)

pytestmark = pytest.mark.integration

PROJECT = project_name("mage-test-img")
NEW_PROJECT = project_name("mage-test-img-new")
SERVER = f"https://{LAB['MAGE_IMAGE_SERVER_ADDRESS']}"
LOG = Path(LAB["MAGE_IMAGE_SERVER_LOG"])
AGENT = "Incus" if ON_INCUS else "LXD"
# The daemon whose public image this pass pulls: never the one under test (it has the image already).
OTHER_CLI = "lxc" if ON_INCUS else "incus"
# lab.env as written (LAB names this pass's server's listener MAGE_LAB_HTTPS_ADDRESS).
OTHER_URL = f"https://{lab_env()['MAGE_LAB_HTTPS_ADDRESS' if ON_INCUS else 'MAGE_INCUS_HTTPS_ADDRESS']}"
OTHER_CERT = "/var/lib/lxd/server.crt" if ON_INCUS else "/var/lib/incus/server.crt"
PUBLIC_ALIAS = LAB["MAGE_PUBLIC_IMAGE_ALIAS"]
BASE = {"project": PROJECT, "bootstrap": False, "wait_for_address": "none"}


def served() -> dict[str, str]:
    """alias -> fingerprint of the images the simplestreams server lists (read over HTTPS, verified
    with the host's CA store, as the plugins do)."""
    context = ssl.create_default_context()
    with urllib.request.urlopen(f"{SERVER}/streams/v1/images.json", context=context, timeout=10) as answer:
        products = json.load(answer)["products"]
    found = {}
    for product in products.values():
        (version,) = product["versions"].values()
        for alias in product["aliases"].split(","):
            found[alias] = version["items"]["lxd_combined.tar.gz"]["sha256"]
    return found


def public_fingerprint() -> str:
    out = subprocess.run([OTHER_CLI, "query", f"/1.0/images/aliases/{PUBLIC_ALIAS}"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)["target"]


def forget(*fingerprints: str) -> None:
    """Delete pulled images from the server under test (the default project's store)."""
    have = {image["fingerprint"] for image in query("/1.0/images?recursion=1") or []}
    for fingerprint in fingerprints:
        if fingerprint in have:
            lxc("image", "delete", fingerprint)


def downloads(offset: int, path_part: str) -> int:
    """Downloads of files whose path holds `path_part` by this pass's daemon since `offset` of the log."""
    with LOG.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    return sum(1 for line in lines if f"GET /images/{path_part}" in line and f"[{AGENT} " in line
               and '" 200 ' in line)


def base_image(name: str, project: str = PROJECT) -> str:
    return query(f"/1.0/instances/{name}?project={project}")["config"]["volatile.base_image"]


@pytest.fixture(scope="module")
def images(lab):
    fingerprints = served()
    pulled = (fingerprints["busybox"], fingerprints["debian/12"], public_fingerprint())
    delete_project(NEW_PROJECT)
    create_project(PROJECT)
    forget(*pulled)
    try:
        yield fingerprints
    finally:
        delete_project(PROJECT)
        delete_project(NEW_PROJECT)
        forget(*pulled)


def test_a_simplestreams_alias_is_pulled_once_for_the_batch_then_used_from_the_server(images):
    offset = LOG.stat().st_size
    source = {"alias": "busybox", "server": SERVER, "protocol": "simplestreams"}
    result = run_module("mage.lxd.mage_lxd_instance", {
        **BASE, "image": source, "instances": [{"name": "img-ss1"}, {"name": "img-ss2"}, {"name": "img-ss3"}]},
        project=PROJECT)
    assert not result.get("failed"), result.get("msg")
    assert [item["status"] for item in result["instances"]] == ["running"] * 3
    assert {base_image(name) for name in ("img-ss1", "img-ss2", "img-ss3")} == {images["busybox"]}
    # One download for the three, by the first instance's creation; the others used the pulled image.
    assert downloads(offset, "busybox/") == 1
    pulled = [item["name"] for item in result["instances"] if any(a.startswith("pulled image") for a in item["actions"])]
    assert pulled == ["img-ss1"]

    offset = LOG.stat().st_size
    again = run_module("mage.lxd.mage_lxd_instance", {**BASE, "name": "img-ss4", "image": source}, project=PROJECT)
    assert again["status"] == "running" and base_image("img-ss4") == images["busybox"]
    # Cached: nothing is downloaded and nothing is shown.
    assert downloads(offset, "busybox/") == 0
    assert not any(a.startswith("pulled image") for a in again["actions"])
    assert "pulling image" not in again["_stdout"]


def test_an_image_on_an_lxd_protocol_server_is_pulled_with_its_pinned_certificate(images):
    fingerprint = public_fingerprint()
    source = {"alias": PUBLIC_ALIAS, "server": OTHER_URL, "protocol": "lxd", "server_cert": OTHER_CERT}
    result = run_module("mage.lxd.mage_lxd_instance", {
        **BASE, "image": source, "instances": [{"name": "img-pub1"}, {"name": "img-pub2"}]}, project=PROJECT)
    assert not result.get("failed"), result.get("msg")
    assert [item["status"] for item in result["instances"]] == ["running"] * 2
    assert {base_image(name) for name in ("img-pub1", "img-pub2")} == {fingerprint}
    # The first instance pulled it; the second was created from the pulled image by its fingerprint
    # (a source without a server: LXD has nothing to download it from).
    pulled = [item["name"] for item in result["instances"]
              if any(action.startswith(f"pulled image '{PUBLIC_ALIAS}'") for action in item["actions"])]
    assert pulled == ["img-pub1"]

    again = run_module("mage.lxd.mage_lxd_instance", {**BASE, "name": "img-pub3", "image": source}, project=PROJECT)
    assert again.get("status") == "running", again.get("msg")
    assert base_image("img-pub3") == fingerprint
    assert not any(action.startswith("pulled image") for action in again["actions"])
    assert "pulling image" not in again["_stdout"]


def test_a_misspelt_alias_refuses_the_batch_before_any_write(images):
    result = run_module("mage.lxd.mage_lxd_instance", {
        **BASE, "project": NEW_PROJECT, "instances": [
            {"name": "img-typo-ok", "image": "mage/busybox", "image_server": ""},
            {"name": "img-typo", "image": {"alias": "busybxo", "server": SERVER}},
            {"name": "img-typo-pub", "image": {"alias": "mage-public/busybxo", "server": OTHER_URL,
                                               "protocol": "lxd", "server_cert": OTHER_CERT}}]},
        project=PROJECT)
    assert "status" not in result and "msg" in result, result
    message = result["msg"]
    assert "instance 'img-typo'" in message and "'busybxo'" in message and SERVER in message
    assert "instance 'img-typo-pub'" in message and "mage-public/busybxo" in message and OTHER_URL in message
    assert "Nothing was changed" in message
    # Not even the project was created, nor the instance whose image was fine.
    assert lxc("project", "show", NEW_PROJECT, check=False).returncode != 0


@pytest.mark.parametrize(("pin", "words"), [
    (None, "TLS verification failed"),
    # The daemon under test's own certificate is not the other daemon's.
    ("/var/lib/incus/server.crt" if ON_INCUS else "/var/lib/lxd/server.crt", "is not the pinned server_cert"),
])
def test_an_image_server_whose_certificate_is_not_trusted_refuses_the_batch(images, pin, words):
    source = {"alias": PUBLIC_ALIAS, "server": OTHER_URL, "protocol": "lxd", **({"server_cert": pin} if pin else {})}
    result = run_module("mage.lxd.mage_lxd_instance", {**BASE, "name": "img-untrusted", "image": source},
                        project=PROJECT)
    assert "status" not in result and "msg" in result, result
    assert "instance 'img-untrusted'" in result["msg"] and OTHER_URL in result["msg"] and words in result["msg"]
    assert "img-untrusted" not in instance_names(PROJECT)


def test_an_unreachable_image_server_refuses_the_batch_naming_it(images):
    dead = "https://127.0.0.1:1"
    result = run_module("mage.lxd.mage_lxd_instance", {**BASE, "name": "img-dead",
                                                       "image": {"alias": "busybox", "server": dead}},
                        project=PROJECT)
    assert "status" not in result and "msg" in result, result
    assert "instance 'img-dead'" in result["msg"] and dead in result["msg"] and "cannot be read" in result["msg"]
    assert "img-dead" not in instance_names(PROJECT)


def test_the_seeds_role_form_pulls_the_largest_image_from_the_lab_server_showing_progress(images, tmp_path):
    offset = LOG.stat().st_size
    playbook = tmp_path / "test-lxd.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          gather_facts: false
          roles:
            - role: mage.lxd.provisioning
              lxd_provisioning_project: {PROJECT}
              lxd_provisioning_image_server: {SERVER}
              lxd_provisioning_inventory:
                - name: img-seed1
                  image: "debian/12/amd64"
        """))
    inventory = tmp_path / "mage_lxd.yml"
    inventory.write_text(f"plugin: mage_lxd\nprojects: [{PROJECT}]\n")
    run = ansible("ansible-playbook", "-i", str(inventory), str(playbook), cwd=REPO)
    assert base_image("img-seed1") == images["debian/12"]
    assert downloads(offset, "debian-12/") == 1
    # LXD's download_progress, shown at default verbosity while the image came in.
    progress = re.findall(r"instance 'img-seed1' in project '[^']+': pulling image 'debian/12/amd64' "
                          r"\([0-9a-f]{12}\) from " + re.escape(SERVER) + r": (.*)", run.stdout)
    assert progress, run.stdout
    # Percent and speed, as LXD and Incus word it ("metadata: 38% (24.99MB/s)").
    assert any(re.search(r"\d+% \([^)]*/s\)", line) for line in progress), progress
