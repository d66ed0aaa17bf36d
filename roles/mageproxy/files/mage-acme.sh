#!/bin/sh
# mage-acme: issue and renew mageproxy's ACME certificates with lego over HTTP-01; nginx serves
# the challenge from the webroot. Installed by the mageproxy role; run by mage-acme.timer twice a
# day (renewal needs no playbook run) and by the role after each apply.
#   mage-acme ensure        enable the timer, then run
#   mage-acme run [--force] issue what is missing, renew what expires within MAGE_ACME_DAYS (all: --force)
# Prints "issued NAME" or "renewed NAME" for each certificate it replaced.
set -eu
conf=/etc/nginx/mage-lxd/acme
webroot=/var/lib/mage-lxd/acme-webroot
# shellcheck disable=SC1091
. "$conf/env"
[ -z "${LEGO_CA_CERTIFICATES:-}" ] || export LEGO_CA_CERTIFICATES

lego_for() {
  domain=$1
  shift
  lego --accept-tos --server "$MAGE_ACME_SERVER" --email "$MAGE_ACME_EMAIL" --path "$conf/lego" \
    --http --http.webroot "$webroot" -d "$domain" "$@"
}

# One name: a placeholder (or nothing) is issued, a real certificate renewed when due.
one() {
  name=$1 days=$2 issued="$conf/lego/certificates/$1.crt"
  before=$(sha256sum "$issued" 2>/dev/null || true)
  if [ -e "$conf/live/$name.placeholder" ] || [ ! -e "$issued" ]; then
    lego_for "$name" run >&2 || { echo "mage-acme: issuing $name failed" >&2; return 1; }
    word=issued
  else
    lego_for "$name" renew --days "$days" --no-random-sleep >&2 || { echo "mage-acme: renewing $name failed" >&2; return 1; }
    word=renewed
  fi
  [ "$(sha256sum "$issued")" != "$before" ] || [ -e "$conf/live/$name.placeholder" ] || return 0
  # Key first, then the certificate, each replaced whole (a reload never sees half a file).
  install -m 0600 "$conf/lego/certificates/$name.key" "$conf/live/$name.key.new"
  mv "$conf/live/$name.key.new" "$conf/live/$name.key"
  install -m 0644 "$issued" "$conf/live/$name.crt.new"
  mv "$conf/live/$name.crt.new" "$conf/live/$name.crt"
  rm -f "$conf/live/$name.placeholder"
  echo "$word $name"
}

run() {
  days=$MAGE_ACME_DAYS
  [ "${1:-}" != --force ] || days=100000
  replaced="" failed=0
  while read -r name; do
    [ -n "$name" ] || continue
    out=$(one "$name" "$days") || failed=1
    [ -z "$out" ] || { echo "$out"; replaced=1; }
  done <"$conf/domains"
  if [ -n "$replaced" ]; then nginx -t -q && nginx -s reload; fi
  return "$failed"
}

case "${1:-}" in
  ensure)
    if ! systemctl is-enabled --quiet mage-acme.timer 2>/dev/null; then
      systemctl daemon-reload && systemctl enable --now mage-acme.timer && echo "enabled mage-acme.timer"
    fi
    run ;;
  run) shift; run "$@" ;;
  *) echo "usage: mage-acme ensure | run [--force]" >&2; exit 2 ;;
esac
