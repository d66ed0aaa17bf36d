#!/usr/bin/env bash
# A real three-member LXD cluster on this one machine, for the tests and for trying clusters out;
# with MAGE_CLUSTER_SERVER=incus (or lab/incus-cluster.sh) a three-member Incus cluster instead, with
# names, addresses, state and bridges of its own (lab.env's MAGE_INCUS_CLUSTER_*), so that both can
# be up at once.
#
#   lab/cluster.sh up       bring it up (idempotent; about 6 s, with the images lab/up.sh cached)
#   lab/cluster.sh down     tear it down fully (about 7 s): no daemons, namespaces, links, mounts or
#                           state left
#   lab/cluster.sh env      print the variables a client needs: MAGE_LXD_URL and its certificates
#   lab/cluster.sh stop M   stop member M's daemon only (its instances keep running), to try a member
#                           outage; `up` starts it again
#
# Each member is an `lxd` (or `incusd`) daemon with its own LXD_DIR (INCUS_DIR), in its own network
# namespace, joined by a
# veth to the host bridge $MAGE_CLUSTER_BRIDGE. Inside its namespace a member bridges that veth
# into `br0`, which carries the member's address and its instances' NICs, so every instance on
# every member sits on one L2 segment with the host; one dnsmasq on the host owns the DHCP range.
# The cluster also gets a managed bridge ($MAGE_CLUSTER_NAT_NETWORK, per member as LXD makes them)
# for network forwards, with a second address on each member to listen on ($MAGE_CLUSTER_PREFIX.2N;
# member N itself is .1N), and a cluster group ($MAGE_CLUSTER_GROUP) holding the last member.
#
# `ip netns exec` alone remounts /sys and so hides the cgroup tree LXD needs. Each member therefore
# runs inside a holder process that entered the namespace, unshared its mounts, mounted a sysfs for
# the namespace and moved the host's /sys/fs/cgroup back under it; the daemon joins the holder's
# network and mount namespaces. The cgroup tree is shared with the host's own LXD and Incus, and
# with the other cluster, so instance names must not collide with theirs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/lab.env
. "$here/lab.env"
# shellcheck source=lab/packages.sh
. "$here/packages.sh"

server=${MAGE_CLUSTER_SERVER:-lxd}
case "$server" in
  lxd)
    cli=lxc daemon=lxd dir_var=LXD_DIR holder_name=mage-lxd-cluster-holder admin_cmd=(lxd)
    ;;
  incus)
    # Incus's own names for everything (lab.env); its client and daemon take the same preseed.
    MAGE_CLUSTER_MEMBERS=$MAGE_INCUS_CLUSTER_MEMBERS MAGE_CLUSTER_BRIDGE=$MAGE_INCUS_CLUSTER_BRIDGE
    MAGE_CLUSTER_HOST_ADDRESS=$MAGE_INCUS_CLUSTER_HOST_ADDRESS MAGE_CLUSTER_PREFIX=$MAGE_INCUS_CLUSTER_PREFIX
    MAGE_CLUSTER_DHCP_RANGE=$MAGE_INCUS_CLUSTER_DHCP_RANGE MAGE_CLUSTER_DIR=$MAGE_INCUS_CLUSTER_DIR
    MAGE_CLUSTER_RUN=$MAGE_INCUS_CLUSTER_RUN MAGE_CLUSTER_NAT_NETWORK=$MAGE_INCUS_CLUSTER_NAT_NETWORK
    MAGE_CLUSTER_NAT_SUBNET=$MAGE_INCUS_CLUSTER_NAT_SUBNET MAGE_CLUSTER_GROUP=$MAGE_INCUS_CLUSTER_GROUP
    cli=incus daemon=/usr/libexec/incus/incusd dir_var=INCUS_DIR holder_name=mage-incus-cluster-holder
    admin_cmd=(incus admin)
    ;;
  *) printf 'cluster: MAGE_CLUSTER_SERVER=%s: use lxd or incus\n' "$server" >&2; exit 2 ;;
esac
# The host end of member N's veth: magecl-mN (LXD), mageic-mN (Incus).
link_prefix=${MAGE_CLUSTER_BRIDGE%0}-m

read -r -a members <<<"$MAGE_CLUSTER_MEMBERS"
state=$MAGE_CLUSTER_DIR
run=$MAGE_CLUSTER_RUN

log() { printf 'cluster (%s): %s\n' "$server" "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }

member_index() { # name -> 1-based position
  local i
  for i in "${!members[@]}"; do [ "${members[$i]}" = "$1" ] && { echo $((i + 1)); return; }; done
  return 1
}
member_address() { echo "$MAGE_CLUSTER_PREFIX.1$(member_index "$1")"; }
# A second address of each member, for network forwards: Incus refuses a forward on an address any
# proxy device of the cluster listens on (LXD 5.0 does not), and members' proxy devices use the first.
member_forward_address() { echo "$MAGE_CLUSTER_PREFIX.2$(member_index "$1")"; }
member_dir() { echo "$state/$1"; }
on_member() { local member=$1; shift; (export "$dir_var=$(member_dir "$member")"; "$@"); }
# The daemon's own commands: `lxd init`, `lxd waitready`... and `incus admin init`, ...
admin() { "${admin_cmd[@]}" "$@"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$run/$1.pid" 2>/dev/null || true; }

host_network_up() {
  ip link show "$MAGE_CLUSTER_BRIDGE" >/dev/null 2>&1 || ip link add "$MAGE_CLUSTER_BRIDGE" type bridge
  ip addr replace "$MAGE_CLUSTER_HOST_ADDRESS/24" dev "$MAGE_CLUSTER_BRIDGE"
  ip link set "$MAGE_CLUSTER_BRIDGE" up
  if ! alive "$(pid_of dnsmasq)"; then
    # No DNS (port 0), no router option: the namespaces have no default route by design.
    dnsmasq --port=0 --strict-order --bind-interfaces --except-interface=lo \
      --interface="$MAGE_CLUSTER_BRIDGE" --listen-address="$MAGE_CLUSTER_HOST_ADDRESS" \
      --dhcp-range="$MAGE_CLUSTER_DHCP_RANGE,1h" --dhcp-option=3 --dhcp-option=6 \
      --dhcp-leasefile="$run/dnsmasq.leases" --pid-file="$run/dnsmasq.pid" \
      --dhcp-no-override --dhcp-authoritative
  fi
}

member_network_up() { # member
  local member=$1 index
  index=$(member_index "$member")
  ip netns list | grep -qw "^$member" || ip netns add "$member"
  if ! ip link show "$link_prefix$index" >/dev/null 2>&1; then
    ip link add "$link_prefix$index" type veth peer name up0 netns "$member"
  fi
  ip link set "$link_prefix$index" master "$MAGE_CLUSTER_BRIDGE" up
  ip -n "$member" link show br0 >/dev/null 2>&1 || ip -n "$member" link add br0 type bridge
  ip -n "$member" link set up0 master br0 up
  ip -n "$member" addr replace "$(member_address "$member")/24" dev br0
  ip -n "$member" addr replace "$(member_forward_address "$member")/24" dev br0
  ip -n "$member" link set br0 up
  ip -n "$member" link set lo up
}

start_holder() { # member
  local member=$1
  alive "$(pid_of "$member-holder")" && return 0
  # The holder sleeps with the member's network and mount namespaces; nothing runs in it but that.
  setsid nsenter --net="/run/netns/$member" unshare --mount --propagation private -- bash -c '
    hold=$(mktemp -d)
    mount --rbind /sys/fs/cgroup "$hold"
    mount -t sysfs sysfs /sys
    mount --move "$hold" /sys/fs/cgroup
    rmdir "$hold"
    exec -a "$1 $0" sleep infinity' "$member" "$holder_name" >/dev/null 2>&1 </dev/null &
  echo $! >"$run/$member-holder.pid"
  # Ready once it sleeps (its mounts are done) in the member's network namespace, not the host's:
  # a daemon that joined it earlier would run on the host's network and mounts.
  local pid=$! tries=0 host_net
  host_net=$(readlink /proc/self/ns/net)
  until [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ] && [ "$(readlink "/proc/$pid/ns/net")" != "$host_net" ]; do
    tries=$((tries + 1)); [ $tries -lt 50 ] || { log "$member: holder did not come up"; exit 1; }
    sleep 0.1
  done
}

launch_daemon() { # member: start it in the background, if it is not running
  local member=$1 dir
  dir=$(member_dir "$member")
  if alive "$(pid_of "$member")"; then return 0; fi
  mkdir -p "$dir" && chmod 711 "$dir"
  env "$dir_var=$dir" setsid nsenter -t "$(pid_of "$member-holder")" -n -m \
    "$daemon" --group root --logfile "$state/$member.log" >/dev/null 2>&1 </dev/null &
  echo $! >"$run/$member.pid"
  disown $!  # stopped by PID later, maybe by this same script: no job report then
}

wait_daemon() { # member
  on_member "$1" admin waitready --timeout 60
}

clustered() { on_member "${members[0]}" "$cli" query /1.0 2>/dev/null | grep -q '"server_clustered": true'; }
joined() { on_member "${members[0]}" "$cli" query /1.0/cluster/members 2>/dev/null | grep -q "/$1\""; }

bootstrap_first() {
  local first=${members[0]} address
  address=$(member_address "$first")
  clustered && return 0
  log "bootstrapping $first at $address"
  on_member "$first" admin init --preseed <<EOF
config:
  core.https_address: $address:8443
  cluster.https_address: $address:8443
  images.auto_update_interval: "0"
cluster:
  server_name: $first
  enabled: true
storage_pools:
- name: mage
  driver: dir
profiles:
- name: default
  devices:
    root: {path: /, pool: mage, type: disk}
    eth0: {name: eth0, nictype: bridged, parent: br0, type: nic}
EOF
}

join_member() { # member
  local member=$1 token
  joined "$member" && return 0
  log "joining $member at $(member_address "$member")"
  token=$(on_member "${members[0]}" "$cli" cluster add "$member" --quiet)
  on_member "$member" admin init --preseed <<EOF
cluster:
  enabled: true
  server_name: $member
  server_address: $(member_address "$member"):8443
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: mage
    key: source
    value: ""
EOF
}

ensure_nat_network() {
  local network=$MAGE_CLUSTER_NAT_NETWORK member shown
  shown=$(on_member "${members[0]}" "$cli" network show "$network" 2>/dev/null || true)
  grep -q '^status: Created' <<<"$shown" && return 0
  # A cluster network is defined on every member first (a run cut short may have left it pending,
  # defined on some), then created once for all.
  for member in "${members[@]}"; do
    grep -q "^- $member\$" <<<"$shown" ||
      on_member "${members[0]}" "$cli" network create "$network" --target "$member" >/dev/null
  done
  on_member "${members[0]}" "$cli" network create "$network" ipv4.address="$MAGE_CLUSTER_NAT_SUBNET" \
    ipv4.nat=false ipv6.address=none >/dev/null
}

ensure_cluster_group() {
  on_member "${members[0]}" "$cli" cluster group show "$MAGE_CLUSTER_GROUP" >/dev/null 2>&1 ||
    on_member "${members[0]}" "$cli" cluster group create "$MAGE_CLUSTER_GROUP" >/dev/null
  # Always: assigning is idempotent, and a run cut short may have created the group only.
  on_member "${members[0]}" "$cli" cluster group assign "${members[-1]}" "default,$MAGE_CLUSTER_GROUP" >/dev/null
}

trust_client() {
  # One client certificate for tests and users of the lab; the cluster shares one trust store.
  if [ ! -s "$state/client.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes -days 3650 \
      -subj "/CN=mage-lxd $server cluster lab client" -keyout "$state/client.key" -out "$state/client.crt" 2>/dev/null
  fi
  on_member "${members[0]}" "$cli" config trust list --format csv | grep -q "mage-lxd-cluster-lab" ||
    on_member "${members[0]}" "$cli" config trust "$([ "$server" = incus ] && echo add-certificate || echo add)" \
      "$state/client.crt" --name mage-lxd-cluster-lab
}

import_images() {
  local cache=${MAGE_LAB_CACHE:-/var/cache/mage-lxd}/images alias file
  for alias in mage/busybox mage/debian-12; do
    on_member "${members[0]}" "$cli" image info "$alias" >/dev/null 2>&1 && continue
    # Newest build of exactly this image (mage_debian-12-<hash>, not mage_debian-12-nopython-<hash>).
    file=$(ls -t "$cache" 2>/dev/null | grep -E "^${alias//\//_}-[0-9a-f]{12}\.tar\.gz$" | head -1 || true)
    [ -n "$file" ] || { log "no cached image for $alias: run lab/up.sh first"; exit 1; }
    file=$cache/$file
    log "importing $alias"
    on_member "${members[0]}" "$cli" image import "$file" --alias "$alias" >/dev/null
  done
}

print_env() {
  # The names the mage_lxd connection, lookup and instance action read (export them to use the cluster).
  cat <<EOF
MAGE_LXD_URL=https://$(member_address "${members[0]}"):8443
MAGE_LXD_CLIENT_CERT=$state/client.crt
MAGE_LXD_CLIENT_KEY=$state/client.key
MAGE_LXD_SERVER_CERT=$(member_dir "${members[0]}")/cluster.crt
EOF
}

stop_member() { # member
  member_index "$1" >/dev/null || { log "no member '$1' (members: ${members[*]})"; exit 2; }
  # SIGTERM stops the daemon and leaves its instances running, as a crashed or cut-off member would.
  stop_pids 30 "$1"
  log "stopped the daemon of $1 (lab/cluster.sh up starts it again)"
}

up() {
  lab_install_missing_packages
  mkdir -p "$state" "$run"
  host_network_up
  local member
  for member in "${members[@]}"; do
    member_network_up "$member"
    start_holder "$member"
    launch_daemon "$member"
  done
  # All launched before any is waited for: a restarted member is ready only once the cluster's
  # database has quorum again.
  for member in "${members[@]}"; do wait_daemon "$member"; done
  bootstrap_first
  for member in "${members[@]:1}"; do join_member "$member"; done
  # The smallest value LXD takes (default 20 s): a stopped member shows as offline sooner. It can
  # only be set once the cluster exists (in the bootstrap preseed it breaks the init).
  on_member "${members[0]}" "$cli" config set cluster.offline_threshold 11
  ensure_nat_network
  ensure_cluster_group
  trust_client
  import_images
  log "up: ${members[*]} ($(member_address "${members[0]}"):8443)"
}

stop_pids() { # seconds pidfile-name...
  # All asked at once, then one deadline for all of them; what is still there then is killed.
  local seconds=$1 name pid waited=0 pids=()
  shift
  for name in "$@"; do
    pid=$(pid_of "$name")
    if alive "$pid"; then kill "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for pid in "${pids[@]}"; do
    while alive "$pid" && [ $waited -lt $((seconds * 10)) ]; do sleep 0.1; waited=$((waited + 1)); done
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  done
  for name in "$@"; do rm -f "$run/$name.pid"; done
}

stop_namespace_processes() {
  # Whatever our member daemons started and left in their namespaces (a network's dnsmasq, an
  # instance's monitor): only processes inside the lab's own network namespaces are touched.
  local member pid
  for member in "${members[@]}"; do
    for pid in $(ip netns pids "$member" 2>/dev/null || true); do kill -9 "$pid" 2>/dev/null || true; done
  done
}

down() {
  local member index i pid emptied=no stranded=()
  # A daemon stopped by `stop` (or crashed) leaves its instances running: start it again, every
  # such one before waiting (a lone member waits for quorum), so they are deleted like the others.
  for member in "${members[@]}"; do
    alive "$(pid_of "$member-holder")" && launch_daemon "$member"
  done
  for member in "${members[@]}"; do
    alive "$(pid_of "$member")" && { wait_daemon "$member" >/dev/null 2>&1 || log "$member did not become ready"; }
  done
  # Instances and networks first, while the cluster has quorum: a daemon stopped with instances
  # running leaves their processes and cgroups behind, and one stopped with a bridge its dnsmasq.
  if clustered 2>/dev/null; then
    local project name deletions=()
    emptied=yes
    # Side by side: each deletion waits on its own member.
    while IFS=, read -r project name; do
      [ -n "$name" ] || continue
      on_member "${members[0]}" "$cli" delete --force --project "$project" "$name" >/dev/null 2>&1 &
      deletions+=($!)
    done < <(on_member "${members[0]}" "$cli" list --all-projects --format csv -c e,n 2>/dev/null || echo ,)
    for pid in "${deletions[@]}"; do wait "$pid" || emptied=no; done
    on_member "${members[0]}" "$cli" network delete "$MAGE_CLUSTER_NAT_NETWORK" >/dev/null 2>&1 || true
  fi
  if [ "$emptied" = no ]; then
    # Something may still run in a member: each one stops its own instances, last-joined first so
    # that the members still up keep quorum for as long as possible.
    for ((i = ${#members[@]} - 1; i >= 0; i--)); do
      member=${members[$i]}
      if alive "$(pid_of "$member")"; then
        on_member "$member" timeout 30 "${admin_cmd[@]}" shutdown --timeout 20 >/dev/null 2>&1 || stranded+=("$member")
      elif [ -d "$(member_dir "$member")/containers" ]; then
        stranded+=("$member")
      fi
    done
  fi
  # Nothing runs in the daemons any more, and their state is deleted below: all are asked to stop
  # at once (one by one, the last ones wait for a quorum that has already gone), and a daemon still
  # busy with a heartbeat round after 3 s is killed. dnsmasq takes 2 s to exit: in the same wait.
  stop_pids 3 "${members[@]}" dnsmasq
  # A holder takes about 2 s to go (its mount namespace is torn down): all at once, too.
  stop_pids 5 "${members[@]/%/-holder}"
  stop_namespace_processes
  for member in "${members[@]}"; do
    index=$(member_index "$member")
    ip link del "$link_prefix$index" 2>/dev/null || true
    ip netns del "$member" 2>/dev/null || true
  done
  ip link del "$MAGE_CLUSTER_BRIDGE" 2>/dev/null || true
  # Only now that no daemon runs: the state (dir storage pools, databases) goes with it, unless
  # an instance may still run from it.
  if [ ${#stranded[@]} -gt 0 ]; then
    log "instances of ${stranded[*]} could not be stopped through LXD; $state is kept for them"
  elif [ -d "$state" ] && ! grep -q " $state" /proc/mounts; then
    rm -rf "$state"
  fi
  rm -rf "$run"
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  stop) stop_member "${2:-}" ;;
  *) sed -n '4,9p' "$0" >&2; exit 2 ;;
esac
