"""mage-lxd on a real three-member cluster (lab/cluster.sh): one code path, members anywhere.

On the LXD pass the cluster is three LXD daemons; on the Incus pass (MAGE_TEST_SERVER=incus) three
Incus daemons (MAGE_CLUSTER_SERVER=incus lab/cluster.sh), with names, addresses and instance names
of their own. The module brings the cluster up, runs site.yml against it (instances placed with
`target`, NAT on a member's address, a mageproxy route balanced over backends on two members), then
stops one member's daemon and checks that the inventory, ping and site.yml fail only for its
instances. The last test tears the cluster down and checks that nothing is left on this machine.
What Incus does differently is asserted where it differs (SERVER_DIFFERENCES).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from lxd_lab import CLI, LAB, ON_INCUS, REPO, SERVER, ansible, inventory_list, recap, recap_changed

pytestmark = pytest.mark.integration

CLUSTER = REPO / "lab" / "cluster.sh"
# lab.env names the Incus cluster's settings MAGE_INCUS_CLUSTER_*, the LXD cluster's MAGE_CLUSTER_*.
CL = {key: LAB[key.replace("MAGE_CLUSTER_", "MAGE_INCUS_CLUSTER_") if ON_INCUS else key]
      for key in LAB if key.startswith("MAGE_CLUSTER_")}
MEMBERS = CL["MAGE_CLUSTER_MEMBERS"].split()
BACKEND = Path(__file__).resolve().parent / "backend_server.py"
# Names unlike any on the host's own LXD and Incus, and unlike the other cluster's: all of them
# share this machine's cgroup tree.
PREFIX = "mage-ic" if ON_INCUS else "mage-cl"
PROXY = f"{PREFIX}-px"
WEB1, WEB2, TOOL = f"{PREFIX}-web1", f"{PREFIX}-web2", f"{PREFIX}-tool"
PLACEMENT = {TOOL: MEMBERS[0], WEB1: MEMBERS[1], WEB2: MEMBERS[2]}
# Placed by LXD (no target): its NAT listens on whichever member it lands on.
FORWARDED = f"{PREFIX}-fwd"
ROUTE = {"name": "rr.cluster.test", "path": "/", "pass": 8080, "balance": True}
NAT_PORT, FORWARD_PORT, MEMBER_PROXY_PORT, CLASH_PORT = 18080, 18081, 18082, 18083
NO_MEMBER = MEMBERS[0][:-1] + "9"
# The process name of the cluster lab's namespace holders (lab/cluster.sh).
HOLDER = "mage-incus-cluster-holder" if ON_INCUS else "mage-lxd-cluster-holder"


def member_address(member: str) -> str:
    return f"{CL['MAGE_CLUSTER_PREFIX']}.1{MEMBERS.index(member) + 1}"


def forward_address(member: str) -> str:
    """The member's second address, which no proxy device listens on (lab/cluster.sh)."""
    return f"{CL['MAGE_CLUSTER_PREFIX']}.2{MEMBERS.index(member) + 1}"


def cluster_lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(CLUSTER), *args], capture_output=True, text=True, check=False,
                            env={**os.environ, "MAGE_CLUSTER_SERVER": SERVER})
    if check and result.returncode != 0:
        raise AssertionError(f"lab/cluster.sh {' '.join(args)} failed:\n{result.stderr}")
    return result


def cluster_lxc(*args: str) -> subprocess.CompletedProcess[str]:
    """lxc (incus) on the first member's socket (test setup only)."""
    env = {**os.environ, "INCUS_DIR" if ON_INCUS else "LXD_DIR": f"{CL['MAGE_CLUSTER_DIR']}/{MEMBERS[0]}"}
    result = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, f"{CLI} {' '.join(args)}: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def cluster(lab, tmp_path_factory):
    """The cluster lab, an inventory of it, and the MAGE_LXD_* environment that points site.yml at it."""
    cluster_lab("up")
    try:
        env = dict(line.split("=", 1) for line in cluster_lab("env").stdout.split())
        inventory = tmp_path_factory.mktemp("cluster") / "inventory"
        (inventory / "group_vars").mkdir(parents=True)
        (inventory / "mage_lxd.yml").write_text(textwrap.dedent(f"""\
            plugin: mage_lxd
            remotes:
              - name: cluster
                url: {env['MAGE_LXD_URL']}
                client_cert: {env['MAGE_LXD_CLIENT_CERT']}
                client_key: {env['MAGE_LXD_CLIENT_KEY']}
                server_cert: {env['MAGE_LXD_SERVER_CERT']}
            """))
        by_member = {member: member_address(member) for member in MEMBERS}
        forward_by_member = {member: forward_address(member) for member in MEMBERS}
        declared = [
            {"name": TOOL, "image": "mage/debian-12", "target": PLACEMENT[TOOL]},
            {"name": WEB1, "image": "mage/debian-12", "target": PLACEMENT[WEB1], "proxy": [ROUTE],
             "nat": [{"extport": NAT_PORT, "intport": 8080, "listen": member_address(PLACEMENT[WEB1])}]},
            {"name": WEB2, "image": "mage/debian-12", "target": PLACEMENT[WEB2], "proxy": [ROUTE]},
            {"name": FORWARDED, "image": "mage/debian-12",
             "devices": {"eth0": {"type": "nic", "network": CL["MAGE_CLUSTER_NAT_NETWORK"], "name": "eth0"}},
             "nat": [{"extport": FORWARD_PORT, "intport": 8080, "backend": "forward",
                      "intif": CL["MAGE_CLUSTER_NAT_NETWORK"], "listen": forward_by_member},
                     {"extport": MEMBER_PROXY_PORT, "intport": 8080, "listen": by_member}]},
        ]
        (inventory / "group_vars" / "all.yml").write_text(json.dumps({
            "mageproxy_name": PROXY,
            "mageproxy_target": MEMBERS[0],
            "lxd_provisioning_image_server": "",
            "lxd_provisioning_inventory": declared,
        }))
        yield {"inventory": inventory, "env": env}
    finally:
        cluster_lab("down", check=False)


def site(cluster) -> subprocess.CompletedProcess[str]:
    return ansible("ansible-playbook", "-i", str(cluster["inventory"]), str(REPO / "playbooks" / "site.yml"),
                   env=cluster["env"], check=False)


def start_backends() -> None:
    for name in (WEB1, WEB2, FORWARDED):
        cluster_lxc("file", "push", str(BACKEND), f"{name}/srv/backend_server.py")
        cluster_lxc("exec", name, "--", "sh", "-c",
                    f"pgrep -f backend_server.py >/dev/null || setsid -f python3 /srv/backend_server.py {name} 8080 "
                    ">/dev/null 2>&1")


def request(address: str, port: int = 80, host: str = ROUTE["name"]) -> str:
    return subprocess.run(["curl", "-s", "-m", "5", "-H", f"Host: {host}", f"http://{address}:{port}/"],
                          capture_output=True, text=True).stdout


def hostvars(cluster) -> dict:
    return inventory_list(cluster["inventory"])["_meta"]["hostvars"]


@pytest.fixture(scope="module")
def provisioned(cluster):
    first = site(cluster)
    assert first.returncode == 0, first.stdout[-4000:]
    start_backends()
    return {"first": first}


def test_instances_land_on_their_target_members(cluster, provisioned):
    placed = {item["name"]: item["location"] for item in json.loads(cluster_lxc("list", "--format", "json").stdout)}
    assert {name: placed[name] for name in PLACEMENT} == PLACEMENT


def test_inventory_has_a_group_per_member_and_member_status(cluster, provisioned):
    inventory = inventory_list(cluster["inventory"])
    for name, member in PLACEMENT.items():
        assert name in inventory[f"location_{member.replace('-', '_')}"]["hosts"]
        variables = inventory["_meta"]["hostvars"][name]
        assert (variables["lxd_location"], variables["lxd_location_status"]) == (member, "online")


def test_second_site_run_changes_nothing(cluster, provisioned):
    again = site(cluster)
    assert again.returncode == 0 and set(recap_changed(again.stdout).values()) == {0}, again.stdout[-4000:]


def test_an_existing_instance_is_not_moved_by_another_target(cluster, provisioned):
    moved = [{"name": WEB1, "image": "mage/debian-12", "target": MEMBERS[0], "proxy": [ROUTE],
              "nat": [{"extport": NAT_PORT, "intport": 8080, "listen": member_address(PLACEMENT[WEB1])}]}]
    result = ansible("ansible", "-i", str(cluster["inventory"]), "localhost", "-c", "local", "-m",
                     "mage_lxd_instance", "-a", json.dumps({"instances": moved, "image_server": ""}),
                     env=cluster["env"], check=False)
    assert result.returncode == 0 and '"changed": false' in result.stdout, result.stdout
    assert f"is on cluster member '{PLACEMENT[WEB1]}', not on target '{MEMBERS[0]}'" in " ".join(result.stderr.split())
    assert json.loads(cluster_lxc("query", f"/1.0/instances/{WEB1}").stdout)["location"] == PLACEMENT[WEB1]


def test_a_cluster_group_target_places_on_a_member_of_the_group(cluster, provisioned):
    args = {"name": f"{PREFIX}-edge", "image": "mage/busybox", "target": f"@{CL['MAGE_CLUSTER_GROUP']}",
            "bootstrap": False, "wait_for_address": "none", "image_server": ""}
    try:
        created = ansible("ansible", "-i", str(cluster["inventory"]), "localhost", "-c", "local", "-m",
                          "mage_lxd_instance", "-a", json.dumps(args), env=cluster["env"], check=False)
        assert created.returncode == 0, created.stdout
        assert location(f"{PREFIX}-edge") == MEMBERS[-1]  # the group's only member
    finally:
        ansible("ansible", "-i", str(cluster["inventory"]), "localhost", "-c", "local", "-m", "mage_lxd_instance",
                "-a", json.dumps({**args, "state": "absent"}), env=cluster["env"])


def test_a_placement_failure_names_the_member(cluster, provisioned):
    result = ansible("ansible", "-i", str(cluster["inventory"]), "localhost", "-c", "local", "-m",
                     "mage_lxd_instance", "-a", json.dumps({"name": f"{PREFIX}-nowhere", "image": "mage/busybox",
                                                            "target": NO_MEMBER, "image_server": ""}),
                     env=cluster["env"], check=False)
    message = " ".join(result.stdout.split())
    assert result.returncode != 0 and f"placing it on cluster member '{NO_MEMBER}' failed" in message, message
    assert f"Members: {MEMBERS[0]} (online)" in message


def test_ping_reaches_instances_on_every_member(cluster, provisioned):
    result = ansible("ansible", "-i", str(cluster["inventory"]), "lxd", "-m", "ansible.builtin.ping",
                     env=cluster["env"], check=False)
    assert result.returncode == 0, result.stdout
    assert sorted(host for host, ok in recap_from_adhoc(result.stdout).items() if ok) == sorted([*PLACEMENT, PROXY, FORWARDED])


def test_files_reach_an_instance_on_another_member_than_the_endpoint(cluster, provisioned, tmp_path):
    # The endpoint is the first member; WEB2 runs on the last one.
    copied = ansible("ansible", "-i", str(cluster["inventory"]), WEB2, "-m", "ansible.builtin.copy",
                     "-a", "content=from-the-controller dest=/tmp/mage-cl-copy mode=0640", env=cluster["env"], check=False)
    assert copied.returncode == 0, copied.stdout
    fetched = ansible("ansible", "-i", str(cluster["inventory"]), WEB2, "-m", "ansible.builtin.fetch",
                      "-a", f"src=/tmp/mage-cl-copy dest={tmp_path}/ flat=true", env=cluster["env"], check=False)
    assert fetched.returncode == 0, fetched.stdout
    assert (tmp_path / "mage-cl-copy").read_text() == "from-the-controller"


def recap_from_adhoc(stdout: str) -> dict[str, bool]:
    # Ad hoc runs print "host | SUCCESS => {...}" per host.
    return {line.split(" | ")[0]: "SUCCESS" in line for line in stdout.splitlines() if " | " in line}


def test_nat_publishes_on_the_member_that_hosts_the_instance(cluster, provisioned):
    assert request(member_address(PLACEMENT[WEB1]), NAT_PORT).startswith(f"backend={WEB1} ")


def location(name: str) -> str:
    # The list comes from the cluster database, so it answers even for a member that is down.
    listed = json.loads(cluster_lxc("query", "/1.0/instances?recursion=1").stdout)
    return next(item["location"] for item in listed if item["name"] == name)


def test_forward_and_proxy_device_listen_on_the_member_lxd_picked(cluster, provisioned):
    member = location(FORWARDED)
    forwards = json.loads(cluster_lxc("query", f"/1.0/networks/{CL['MAGE_CLUSTER_NAT_NETWORK']}/forwards?recursion=1").stdout)
    assert [(item["location"], item["listen_address"]) for item in forwards] == [(member, forward_address(member))]
    assert request(forward_address(member), FORWARD_PORT).startswith(f"backend={FORWARDED} ")
    assert request(member_address(member), MEMBER_PROXY_PORT).startswith(f"backend={FORWARDED} ")


def test_a_forward_on_an_address_a_proxy_device_listens_on(cluster, provisioned):
    """Where the servers differ: Incus counts the listen address of every proxy device of the
    cluster as in use, whatever its port, and refuses a network forward on it ("overlaps with
    another network or NIC"); LXD 5.0 serves both. On Incus the instance is named and removed again."""
    member, name = PLACEMENT[WEB1], f"{PREFIX}-clash"  # WEB1's NAT proxy device listens on this member's address
    network = CL["MAGE_CLUSTER_NAT_NETWORK"]
    args = {"name": name, "image": "mage/busybox", "target": member, "bootstrap": False, "image_server": "",
            "devices": {"eth0": {"type": "nic", "network": network, "name": "eth0"}},
            "nat": [{"extport": CLASH_PORT, "intport": 8080, "backend": "forward", "intif": network,
                     "listen": member_address(member)}]}
    try:
        result = ansible("ansible", "-i", str(cluster["inventory"]), "localhost", "-c", "local", "-m",
                         "mage_lxd_instance", "-a", json.dumps(args), env=cluster["env"], check=False)
        forwards = json.loads(cluster_lxc("query", f"/1.0/networks/{network}/forwards?recursion=1").stdout)
        listening = [(item["location"], item["listen_address"]) for item in forwards]
        if ON_INCUS:
            message = " ".join(result.stdout.split())
            assert result.returncode != 0 and "overlaps with another network or NIC" in message, message
            assert f"instance '{name}' in project 'default' did not exist before this run and was removed again" in message
            assert (member, member_address(member)) not in listening
            assert name not in [item["name"] for item in json.loads(cluster_lxc("list", "--format", "json").stdout)]
        else:
            assert result.returncode == 0, result.stdout
            assert (member, member_address(member)) in listening
    finally:
        ansible("ansible", "-i", str(cluster["inventory"]), "localhost", "-c", "local", "-m", "mage_lxd_instance",
                "-a", json.dumps({"name": name, "state": "absent"}), env=cluster["env"])


def test_a_route_balances_over_backends_on_two_members(cluster, provisioned):
    proxy = hostvars(cluster)[PROXY]["lxd_address"]
    answers = {request(proxy).split()[0] for _ in range(6)}
    assert answers == {f"backend={WEB1}", f"backend={WEB2}"}


def test_with_a_member_down_only_its_instances_fail(cluster, provisioned):
    down = PLACEMENT[WEB2]
    cluster_lab("stop", down)
    try:
        deadline = time.monotonic() + 60
        while (variables := hostvars(cluster)[WEB2])["lxd_location_status"] != "offline":
            assert time.monotonic() < deadline, "the cluster never marked the stopped member offline"
            time.sleep(2)
        assert variables["lxd_status"] == "error" and variables["lxd_location"] == down
        assert hostvars(cluster)[WEB1]["lxd_location_status"] == "online"

        ping = ansible("ansible", "-i", str(cluster["inventory"]), "lxd", "-m", "ansible.builtin.ping",
                       env=cluster["env"], check=False)
        reachable = {name: location_of != down for name, location_of in
                     {**PLACEMENT, PROXY: MEMBERS[0], FORWARDED: location(FORWARDED)}.items()}
        assert recap_from_adhoc(ping.stdout) == reachable, ping.stdout
        assert f"is on cluster member '{down}' (member status: offline)" in " ".join(ping.stdout.split())

        run = site(cluster)
        output = " ".join(run.stdout.split())
        assert run.returncode != 0
        assert f"instance '{WEB2}' in project 'default' is on cluster member '{down}'" in output
        # Only the instance on the stopped member failed: the others converged, mageproxy was
        # updated (the unreachable backend left out), and the failure came last, naming it alone.
        assert recap(run.stdout)[PROXY]["failed"] == 0 and WEB1 not in output.split("Report the instances")[-1]
        proxy = hostvars(cluster)[PROXY]["lxd_address"]
        assert {request(proxy).split()[0] for _ in range(4)} == {f"backend={WEB1}"}
    finally:
        cluster_lab("up")


def test_the_lab_tears_down_fully(cluster):
    cluster_lab("down")
    leftovers = {
        "namespaces": [name for name in MEMBERS if name in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                                          text=True).stdout],
        "links": [line for line in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith(CL["MAGE_CLUSTER_BRIDGE"][:6])],
        "mounts": [line for line in Path("/proc/mounts").read_text().splitlines() if CL["MAGE_CLUSTER_DIR"] in line],
        "processes": [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                      if HOLDER in line or CL["MAGE_CLUSTER_DIR"] in line or CL["MAGE_CLUSTER_RUN"] in line
                      or f"backend_server.py {PREFIX}-" in line],
        # An instance left running would keep its cgroup (the tree is shared with the host).
        "cgroups": sorted(str(path) for pattern in (f"lxc.*{PREFIX}-*", f"*/lxc.*{PREFIX}-*")
                          for path in Path("/sys/fs/cgroup").glob(pattern)),
        "state": [path for path in (CL["MAGE_CLUSTER_DIR"], CL["MAGE_CLUSTER_RUN"]) if Path(path).exists()],
    }
    assert leftovers == {key: [] for key in leftovers}
