#!/usr/bin/env bash
# Bring up a real local Incus beside the lab's LXD, idempotently (lab/up.sh calls it).
#
# On a machine with no Incus: add Debian's bookworm-backports suite from this host's own Debian
# source (the URI is read from the apt sources at run time, never written here), install the
# containers-only incus-base from it, start incusd in the background when no service manager runs
# it, add a storage pool and a bridge with its own subnet (no outbound NAT), and import the lab's
# cached images (built by lab/images.sh) under the same aliases.
# On a machine whose Incus is already set up: only add what is missing; never change what is there.
# LXD is not touched: incus-base installs only new packages beside Debian's lxd.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/lab.env
. "$here/lab.env"

log() { printf 'lab: incus: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (Incus's socket and package install need it)"; exit 1; }

incus_answers() { [ -S "$MAGE_INCUS_SOCKET" ] && timeout 10 incus query /1.0 >/dev/null 2>&1; }

debian_source() { # prints "URI KEYRING" of the apt source serving the host's Debian release
  local codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  python3 - "$codename" <<'PY'
import glob, re, sys
codename = sys.argv[1]
# deb822 sources first (Debian 12's default), then one-line sources.list entries.
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if not line.startswith("#") and ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and codename in fields.get("suites", "").split() \
                and fields.get("enabled", "yes") != "no":
            print(fields["uris"].split()[0], fields.get("signed-by", ""))
            sys.exit(0)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
            print(words[1], "")
            sys.exit(0)
sys.exit(1)
PY
}

ensure_backports_source() {
  local codename uri keyring
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  [ -s "$MAGE_INCUS_SOURCES" ] && return 0
  read -r uri keyring < <(debian_source) ||
    { log "no apt source serves Debian '$codename'; add one, then rerun"; exit 1; }
  log "adding $codename-backports from this host's Debian source ($MAGE_INCUS_SOURCES)"
  {
    echo "# Added by mage-lxd lab/incus.sh: $codename-backports from this host's own Debian source."
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: $codename-backports"
    echo "Components: main"
    [ -z "$keyring" ] || echo "Signed-By: $keyring"
  } >"$MAGE_INCUS_SOURCES"
}

ensure_incus_installed() {
  command -v incus >/dev/null && [ -x /usr/libexec/incus/incusd ] && return 0
  ensure_backports_source
  local codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  log "installing incus-base (containers only) from $codename-backports"
  export DEBIAN_FRONTEND=noninteractive
  # Only the new suite's lists are refreshed; the pkg/suite form takes incus-base (and the new
  # libraries it needs) from backports without upgrading anything LXD uses.
  apt-get update -q -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=- \
    -o Dir::Etc::sourcelist="$MAGE_INCUS_SOURCES" -o APT::Get::List-Cleanup=0 >/dev/null
  apt-get install -y -q --no-install-recommends "incus-base/$codename-backports" >/dev/null
}

start_daemon() {
  incus_answers && return 0
  # Debian's package ships a unit; on a machine booted with systemd, let it run the daemon.
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemctl cat incus.service >/dev/null 2>&1; then
    log "starting incus.service"
    systemctl start incus.service
  else
    log "no service manager runs Incus: starting incusd in the background (log: $MAGE_INCUS_DAEMON_LOG)"
    mkdir -p "$(dirname "$MAGE_INCUS_DAEMON_LOG")" "$(dirname "$MAGE_INCUS_PIDFILE")"
    setsid nohup /usr/libexec/incus/incusd --group root --logfile "$MAGE_INCUS_DAEMON_LOG" \
      >/dev/null 2>&1 </dev/null &
    echo $! >"$MAGE_INCUS_PIDFILE"
  fi
  incus admin waitready --timeout 120
}

ensure_storage_and_network() {
  incus storage show "$MAGE_INCUS_POOL" >/dev/null 2>&1 || {
    log "creating storage pool $MAGE_INCUS_POOL (dir)"
    incus storage create "$MAGE_INCUS_POOL" dir >/dev/null
  }
  incus network show "$MAGE_INCUS_BRIDGE" >/dev/null 2>&1 || {
    log "creating bridge $MAGE_INCUS_BRIDGE ($MAGE_INCUS_SUBNET, no outbound NAT)"
    incus network create "$MAGE_INCUS_BRIDGE" ipv4.address="$MAGE_INCUS_SUBNET" ipv4.nat=false \
      ipv6.address=none >/dev/null
  }
  local profile
  profile=$(incus profile show default)
  grep -qE '^\s+path: /$' <<<"$profile" ||
    incus profile device add default root disk path=/ pool="$MAGE_INCUS_POOL" >/dev/null
  grep -qE '^\s+type: nic$' <<<"$profile" ||
    incus profile device add default eth0 nic network="$MAGE_INCUS_BRIDGE" name=eth0 >/dev/null
}

ensure_https_on_loopback() {
  # HTTPS is tested over loopback only; Incus also needs a listener to copy images between
  # projects. An address already set is left as is.
  [ -n "$(incus config get core.https_address)" ] ||
    incus config set core.https_address "$MAGE_INCUS_HTTPS_ADDRESS"
}

ensure_images() {
  # The tarballs lab/images.sh built for its current recipe (same cache, same hash rule).
  local cache=${MAGE_LAB_CACHE:-/var/cache/mage-lxd}/images recipe_hash alias tarball want have
  recipe_hash=$(sha256sum "$here/images.sh" | cut -c1-12)
  for alias in mage/busybox mage/debian-12 mage/debian-12-nopython; do
    tarball=$cache/${alias//\//_}-$recipe_hash.tar.gz
    [ -s "$tarball" ] || { log "$tarball is missing; run lab/images.sh first (lab/up.sh does)"; exit 1; }
    want=$(sha256sum "$tarball" | cut -d' ' -f1)
    have=$(incus image info "$alias" 2>/dev/null | sed -n 's/^Fingerprint: //p' || true)
    [ "$have" = "$want" ] && continue
    log "importing $alias"
    [ -z "$have" ] || incus image delete "$have"
    if incus image info "$want" >/dev/null 2>&1; then
      incus image alias create "$alias" "$want"
    else
      incus image import "$tarball" --alias "$alias" >/dev/null
    fi
  done
}

ensure_incus_installed
start_daemon
ensure_storage_and_network
ensure_https_on_loopback
ensure_images
log "Incus $(incus query /1.0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["environment"]["server_version"])') is ready on $MAGE_INCUS_SOCKET"
