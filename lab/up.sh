#!/usr/bin/env bash
# Bring up a real local LXD for the demo and the tests, idempotently.
#
# On a machine with no LXD: install Debian's lxd package, start the daemon (in the background
# when no service manager runs it), add a storage pool and a bridge, build the lab images.
# On a machine whose LXD is already set up: only add what is missing; never change what is there.
# Then lab/incus.sh does the same for Incus beside it (MAGE_LAB_INCUS=no skips that).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/lab.env
. "$here/lab.env"
# shellcheck source=lab/packages.sh
. "$here/packages.sh"

log() { printf 'lab: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (LXD's socket and package install need it)"; exit 1; }

lxd_answers() { timeout 10 lxc query /1.0 >/dev/null 2>&1; }

start_daemon() {
  lxd_answers && return 0
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemctl cat lxd.service >/dev/null 2>&1; then
    log "starting lxd.service"
    systemctl start lxd.service
  else
    log "no service manager runs LXD: starting the daemon in the background (log: $MAGE_LAB_DAEMON_LOG)"
    mkdir -p "$(dirname "$MAGE_LAB_DAEMON_LOG")" "$(dirname "$MAGE_LAB_PIDFILE")"
    setsid nohup lxd --group root --logfile "$MAGE_LAB_DAEMON_LOG" >/dev/null 2>&1 </dev/null &
    echo $! >"$MAGE_LAB_PIDFILE"
  fi
  lxd waitready --timeout 120
}

ensure_storage_and_network() {
  lxc storage show "$MAGE_LAB_POOL" >/dev/null 2>&1 || {
    log "creating storage pool $MAGE_LAB_POOL (dir)"
    lxc storage create "$MAGE_LAB_POOL" dir >/dev/null
  }
  lxc network show "$MAGE_LAB_BRIDGE" >/dev/null 2>&1 || {
    log "creating bridge $MAGE_LAB_BRIDGE ($MAGE_LAB_SUBNET, no outbound NAT)"
    lxc network create "$MAGE_LAB_BRIDGE" ipv4.address="$MAGE_LAB_SUBNET" ipv4.nat=false \
      ipv6.address=none >/dev/null
  }
  # A fresh LXD's default profile has no disk and no NIC; fill in only what is absent.
  local profile
  profile=$(lxc profile show default)
  grep -qE '^\s+path: /$' <<<"$profile" ||
    lxc profile device add default root disk path=/ pool="$MAGE_LAB_POOL" >/dev/null
  grep -qE '^\s+type: nic$' <<<"$profile" ||
    lxc profile device add default eth0 nic network="$MAGE_LAB_BRIDGE" name=eth0 >/dev/null
}

raise_inotify_limit() {
  # Each systemd container holds several inotify instances of the host's root user; at the kernel
  # default of 128 only about 20 Debian containers boot. 1024 is LXD's production recommendation.
  local current
  current=$(cat /proc/sys/fs/inotify/max_user_instances)
  if [ "$current" -lt 1024 ]; then
    log "raising fs.inotify.max_user_instances from $current to 1024 (LXD's recommendation)"
    echo 1024 >/proc/sys/fs/inotify/max_user_instances
  fi
}

ensure_https_on_loopback() {
  # Remote (HTTPS) access is tested over loopback only; an address already set is left as is.
  [ -n "$(lxc config get core.https_address)" ] ||
    lxc config set core.https_address "$MAGE_LAB_HTTPS_ADDRESS"
}

lab_install_missing_packages
raise_inotify_limit
# The image server's CA goes into the host's CA store before the daemons start (they read it once).
"$here/image_server.sh" trust
start_daemon
ensure_storage_and_network
ensure_https_on_loopback
"$here/images.sh"
log "LXD $(lxc query /1.0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["environment"]["server_version"])') is ready"
# Incus beside LXD, for the tests on both servers; MAGE_LAB_INCUS=no leaves Incus out.
[ "${MAGE_LAB_INCUS:-yes}" = no ] || "$here/incus.sh"
# The image servers the image tests pull from (a simplestreams server, public images on both daemons).
"$here/image_server.sh"
