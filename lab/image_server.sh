#!/usr/bin/env bash
# The lab's image servers, idempotently (lab/up.sh calls it last; it also runs on its own).
#
# 1. A simplestreams server over HTTPS on $MAGE_IMAGE_SERVER_ADDRESS (loopback only): lab/image_server.py
#    in the background (pidfile, log), serving copies of the lab's images (lab/images.sh's cache) with
#    streams/v1/index.json and images.json. Its certificate is signed by a CA of its own, which is
#    added to the host's CA store (/usr/local/share/ca-certificates + update-ca-certificates): LXD and
#    Incus check it the way they check any image server.
# 2. LXD-protocol image servers: a public copy of the busybox image on each lab daemon's HTTPS
#    listener (alias $MAGE_PUBLIC_IMAGE_ALIAS). LXD pulls Incus's copy and Incus pulls LXD's: a
#    daemon never downloads an image from itself.
# `lab/image_server.sh trust` does only the CA and the host's CA store: lab/up.sh runs it before it
# starts the daemons, because LXD and Incus read the store once, at their first TLS check, and a
# daemon that read it before the CA was added does not trust the server until it is restarted.
# Copies differ from the local images in their gzip header's timestamp only (lab/image_streams.py),
# so their fingerprints differ and a pull always downloads. No CLI remote is added or changed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/lab.env
. "$here/lab.env"

log() { printf 'lab: image server: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (the host CA store and the daemons' sockets need it)"; exit 1; }

state=$MAGE_IMAGE_SERVER_STATE
www=${MAGE_LAB_CACHE:-/var/cache/mage-lxd}/image-server
images=${MAGE_LAB_CACHE:-/var/cache/mage-lxd}/images
recipe_hash=$(sha256sum "$here/images.sh" | cut -c1-12)
arch=$(dpkg --print-architecture)
host=${MAGE_IMAGE_SERVER_ADDRESS%:*}

ensure_certificates() {
  mkdir -p "$state"
  chmod 0700 "$state"
  if [ ! -s "$state/ca.crt" ]; then
    log "making the lab image CA ($state/ca.crt)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=mage-lxd lab image server CA" -keyout "$state/ca.key" -out "$state/ca.crt" 2>/dev/null
    rm -f "$state/server.crt"
  fi
  if [ ! -s "$state/server.crt" ]; then
    log "making the server certificate for $host"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$host" \
      -keyout "$state/server.key" -out "$state/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$host" >"$state/server.ext"
    openssl x509 -req -in "$state/server.csr" -CA "$state/ca.crt" -CAkey "$state/ca.key" -CAcreateserial \
      -days 825 -extfile "$state/server.ext" -out "$state/server.crt" 2>/dev/null
    rm -f "$state/server.csr" "$state/server.ext"
  fi
  chmod 0600 "$state/ca.key" "$state/server.key"
}

ensure_host_trust() {
  # The host's CA store is what LXD, Incus and the controller's Python all read.
  if ! cmp -s "$state/ca.crt" "$MAGE_IMAGE_SERVER_CA"; then
    log "adding the lab image CA to the host's CA store ($MAGE_IMAGE_SERVER_CA)"
    install -m 0644 "$state/ca.crt" "$MAGE_IMAGE_SERVER_CA"
    update-ca-certificates >/dev/null 2>&1
  fi
}

publish_streams() {
  # Each image is copied once per recipe (the cache key of lab/images.sh).
  local name tag os release aliases products=()
  for entry in "busybox:1:busybox:1:busybox,busybox/1" "debian-12:2:debian:12:debian/12,debian/bookworm"; do
    IFS=: read -r name tag os release aliases <<<"$entry"
    local source=$images/mage_$name-$recipe_hash.tar.gz
    local path=images/$name/$recipe_hash/lxd_combined.tar.gz
    [ -s "$source" ] || { log "$source is missing; run lab/images.sh first (lab/up.sh does)"; exit 1; }
    if [ ! -s "$www/$path" ]; then
      log "serving a copy of mage/$name as $aliases"
      python3 "$here/image_streams.py" copy "$source" "$www/$path" "$tag"
    fi
    products+=("$os:$release:$aliases:$path")
  done
  # Copies of older recipes go; the index names only the current ones.
  find "$www/images" -mindepth 2 -maxdepth 2 -type d ! -name "$recipe_hash" -exec rm -rf {} +
  python3 "$here/image_streams.py" index "$www" "$arch" "${products[@]}"
}

server_answers() {
  curl -fsS --max-time 5 --cacert "$state/ca.crt" -o /dev/null "https://$MAGE_IMAGE_SERVER_ADDRESS/streams/v1/index.json"
}

start_server() {
  server_answers 2>/dev/null && return 0
  local pid
  pid=$(cat "$MAGE_IMAGE_SERVER_PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && grep -qs image_server.py "/proc/$pid/cmdline"; then
    log "the server (pid $pid) does not answer; stopping it"
    kill "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  log "starting lab/image_server.py on https://$MAGE_IMAGE_SERVER_ADDRESS (log: $MAGE_IMAGE_SERVER_LOG)"
  mkdir -p "$(dirname "$MAGE_IMAGE_SERVER_LOG")" "$(dirname "$MAGE_IMAGE_SERVER_PIDFILE")"
  setsid nohup python3 "$here/image_server.py" --root "$www" --address "$MAGE_IMAGE_SERVER_ADDRESS" \
    --cert "$state/server.crt" --key "$state/server.key" --rate "$MAGE_IMAGE_SERVER_RATE" \
    >>"$MAGE_IMAGE_SERVER_LOG" 2>&1 </dev/null &
  echo $! >"$MAGE_IMAGE_SERVER_PIDFILE"
  local tries
  for tries in $(seq 50); do
    server_answers 2>/dev/null && return 0
    sleep 0.1
  done
  log "the server did not answer after 5 s; see $MAGE_IMAGE_SERVER_LOG"
  exit 1
}

ensure_public_image() { # cli tag
  local cli=$1 tag=$2
  local source=$images/mage_busybox-$recipe_hash.tar.gz
  local copy=$www/public/$cli-busybox-$recipe_hash.tar.gz
  [ -s "$copy" ] || python3 "$here/image_streams.py" copy "$source" "$copy" "$tag"
  local want have
  want=$(sha256sum "$copy" | cut -d' ' -f1)
  have=$("$cli" image info "$MAGE_PUBLIC_IMAGE_ALIAS" 2>/dev/null | sed -n 's/^Fingerprint: //p' || true)
  [ "$have" = "$want" ] && return 0
  log "$cli: importing a public copy of mage/busybox as $MAGE_PUBLIC_IMAGE_ALIAS"
  [ -z "$have" ] || "$cli" image delete "$have"
  "$cli" image import "$copy" --public --alias "$MAGE_PUBLIC_IMAGE_ALIAS" >/dev/null
  find "$www/public" -name "$cli-busybox-*.tar.gz" ! -name "*-$recipe_hash.tar.gz" -delete
}

daemon_trusts_ca() { # cli: a pull of an alias the server does not have fails on the alias, not on TLS
  local answer
  answer=$("$1" query -X POST /1.0/instances --wait --data "{\"name\": \"mage-lab-trust-probe\", \"source\":
    {\"type\": \"image\", \"mode\": \"pull\", \"protocol\": \"simplestreams\",
    \"server\": \"https://$MAGE_IMAGE_SERVER_ADDRESS\", \"alias\": \"mage-lab/no-such-alias\"}}" 2>&1 || true)
  ! grep -q x509 <<<"$answer"
}

ensure_certificates
ensure_host_trust
[ "${1:-}" != trust ] || exit 0
publish_streams
start_server
ensure_public_image lxc 11
if [ -S "$MAGE_INCUS_SOCKET" ] && command -v incus >/dev/null; then
  ensure_public_image incus 12
fi
for cli in lxc incus; do
  if command -v "$cli" >/dev/null && "$cli" query /1.0 >/dev/null 2>&1 && ! daemon_trusts_ca "$cli"; then
    log "WARNING: the $cli daemon does not trust the lab image CA: it read the host's CA store before the CA was added. Restart it once (lab/up.sh starts it), when no test runs."
  fi
done
log "ready: simplestreams https://$MAGE_IMAGE_SERVER_ADDRESS; public $MAGE_PUBLIC_IMAGE_ALIAS on https://$MAGE_LAB_HTTPS_ADDRESS (LXD) and https://$MAGE_INCUS_HTTPS_ADDRESS (Incus)"
