#!/bin/sh
# mage-acme: issue and renew mageproxy's ACME certificates with lego over HTTP-01; nginx serves
# the challenge from the webroot. Installed by the mageproxy role; run by mage-acme.timer twice a
# day (renewal needs no playbook run) and by the role after each apply.
#   mage-acme ensure        enable the timer, then run
#   mage-acme run [--force] issue what is missing, renew what expires within MAGE_ACME_DAYS (all: --force)
#   mage-acme remove        once no route says tls: acme: stop the timer, remove its files and itself
# Prints "issued NAME" or "renewed NAME" for each certificate it replaced, "removed ..." for what it
# removed. Exits non-zero when any step failed: a certificate not issued, not installed, or one nginx
# refuses (then the previous pair is put back and nginx keeps serving it).
# Every step checks its own status: set -e does not hold inside a function called in a condition.
set -eu
# MAGE_ACME_ROOT: a directory standing for / (tests only; the timer's service never sets it).
root=${MAGE_ACME_ROOT:-}
conf=$root/etc/nginx/mage-lxd/acme
webroot=$root/var/lib/mage-lxd/acme-webroot
units=$root/etc/systemd/system

lego_for() {
  domain=$1
  shift
  lego --accept-tos --server "$MAGE_ACME_SERVER" --email "$MAGE_ACME_EMAIL" --path "$conf/lego" \
    --http --http.webroot "$webroot" -d "$domain" "$@"
}

# Replace a live file whole (a reload never sees half a file), keeping the previous one as .prev.
install_live() {
  src=$1 dest=$2 mode=$3
  if [ -e "$dest" ]; then cp -p "$dest" "$dest.prev" || return 1; fi
  install -m "$mode" "$src" "$dest.new" || return 1
  mv "$dest.new" "$dest" || return 1
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
  after=$(sha256sum "$issued" 2>/dev/null) || { echo "mage-acme: lego left no certificate for $name" >&2; return 1; }
  [ "$after" != "$before" ] || [ -e "$conf/live/$name.placeholder" ] || return 0
  # Key first, then the certificate.
  { install_live "$conf/lego/certificates/$name.key" "$conf/live/$name.key" 0600 &&
    install_live "$issued" "$conf/live/$name.crt" 0644; } ||
    { echo "mage-acme: installing the new pair of $name failed" >&2; restore "$name"; return 1; }
  # Said first: the new pair is live, so nginx must be tested and reloaded for it even if what follows fails.
  echo "$word $name"
  rm -f "$conf/live/$name.placeholder" || { echo "mage-acme: removing the placeholder of $name failed" >&2; return 1; }
}

# Put back the pair a failed install or a refused config replaced.
restore() {
  for file in "$conf/live/$1.key" "$conf/live/$1.crt"; do
    if [ -e "$file.prev" ]; then mv "$file.prev" "$file" || return 1; fi
  done
}

run() {
  # shellcheck disable=SC1091
  . "$conf/env"
  [ -z "${LEGO_CA_CERTIFICATES:-}" ] || export LEGO_CA_CERTIFICATES
  days=$MAGE_ACME_DAYS
  [ "${1:-}" != --force ] || days=100000
  replaced="" failed=0
  rm -f "$conf"/live/*.prev
  while read -r name; do
    [ -n "$name" ] || continue
    if out=$(one "$name" "$days"); then :; else failed=1; fi
    [ -z "$out" ] || { echo "$out"; replaced="$replaced ${out#* }"; }
  done <"$conf/domains"
  prune
  if [ -n "$replaced" ]; then
    if ! nginx -t -q; then
      echo "mage-acme: nginx -t refuses the new certificates of$replaced; the previous ones are put back" >&2
      for name in $replaced; do restore "$name" || echo "mage-acme: putting back $name failed" >&2; done
      return 1
    fi
    nginx -s reload || { echo "mage-acme: nginx -s reload failed" >&2; return 1; }
  fi
  rm -f "$conf"/live/*.prev
  return "$failed"
}

# Pairs of names no route asks for any more (their sites are gone from nginx's config).
prune() {
  for crt in "$conf"/live/*.crt; do
    [ -e "$crt" ] || continue
    name=$(basename "$crt" .crt)
    if ! grep -qxF "$name" "$conf/domains"; then
      rm -f "$conf/live/$name".* "$conf/lego/certificates/$name".* || return 1
      echo "removed $name"
    fi
  done
}

remove() {
  if systemctl is-enabled --quiet mage-acme.timer 2>/dev/null || systemctl is-active --quiet mage-acme.timer 2>/dev/null; then
    systemctl disable --now mage-acme.timer >&2 || { echo "mage-acme: stopping mage-acme.timer failed" >&2; return 1; }
  fi
  rm -f "$units/mage-acme.timer" "$units/mage-acme.service" || return 1
  systemctl daemon-reload 2>/dev/null || true
  rm -rf "$conf" || return 1
  rm -f "$root/usr/local/sbin/mage-acme" || return 1
  echo "removed mage-acme, its timer and $conf"
}

case "${1:-}" in
  ensure)
    if ! systemctl is-enabled --quiet mage-acme.timer 2>/dev/null; then
      { systemctl daemon-reload && systemctl enable --now mage-acme.timer; } ||
        { echo "mage-acme: enabling mage-acme.timer failed" >&2; exit 1; }
      echo "enabled mage-acme.timer"
    fi
    run ;;
  run) shift; run "$@" ;;
  remove) remove ;;
  *) echo "usage: mage-acme ensure | run [--force] | remove" >&2; exit 2 ;;
esac
