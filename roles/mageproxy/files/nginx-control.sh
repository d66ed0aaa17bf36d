# Shell functions mage_lxd_config sources in mageproxy before each step (POSIX sh, no file is
# installed: the text is sent with each command). Each returns 0 on success and says why not on stderr.

# The pid of nginx's master, if one runs (a stale pid file or a reused pid does not count).
mage_nginx_master() {
  pid=$(cat /run/nginx.pid 2>/dev/null) || return 1
  [ -n "$pid" ] && grep -qa '^nginx: master' "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

mage_running() {
  mage_nginx_master >/dev/null || { echo "nginx is not running (no master process behind /run/nginx.pid)" >&2; return 1; }
}

# The master's children (its workers): a reload that nginx accepted replaces them.
mage_workers() {
  # cat goes on past a process that ended meanwhile; awk would stop there.
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v master="$1" '$4 == master { print $1 }' | sort
}

# htpasswd sets are written root-owned 0640: nginx's workers (group www-data) read them, no one
# else; the group is set here, right before the test, so the test sees the files as nginx will.
mage_test() {
  if [ -d /etc/nginx/mage-lxd/htpasswd ]; then chgrp -R www-data /etc/nginx/mage-lxd/htpasswd || return 1; fi
  mage_acme_placeholders && nginx -t -q
}

# An ACME site needs a certificate before nginx can load it, and nginx must serve the challenge
# before the CA issues one: a one-day self-signed placeholder until mage-acme replaces it.
mage_acme_placeholders() {
  [ -s /etc/nginx/mage-lxd/acme/domains ] || return 0
  while read -r name; do
    live=/etc/nginx/mage-lxd/acme/live/$name
    [ -e "$live.crt" ] && continue
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$name" \
      -keyout "$live.key" -out "$live.crt" 2>/dev/null && touch "$live.placeholder" || return 1
  done </etc/nginx/mage-lxd/acme/domains
}

# Send the reload and wait until new workers run: nginx -s only signals, and a master that cannot
# apply the new config (a port it cannot bind, say) keeps its old workers and says so in its log.
mage_reload() {
  master=$(mage_nginx_master) || { mage_running; return 1; }
  before=$(mage_workers "$master")
  nginx -s reload || return 1
  tries=0
  while [ "$tries" -lt 100 ]; do
    now=$(mage_workers "$master")
    if [ -n "$now" ] && [ -n "$(printf '%s\n' "$now" | grep -vxF "$before")" ]; then return 0; fi
    tries=$((tries + 1)); sleep 0.1
  done
  echo "nginx did not take the new configuration within 10 s: $(tail -n 3 /var/log/nginx/error.log 2>/dev/null)" >&2
  return 1
}

mage_start() {
  nginx </dev/null >/run/mage-nginx-start.log 2>&1 || { cat /run/mage-nginx-start.log >&2; return 1; }
  tries=0
  while [ "$tries" -lt 50 ]; do
    mage_nginx_master >/dev/null && return 0
    tries=$((tries + 1)); sleep 0.1
  done
  mage_running
}

# A request to nginx on port 80 for a name no site has: the catch-all server answers 503. Old
# workers finish their connections after a reload, so a few tries may meet them first.
mage_probe() {
  python3 -c '
import http.client, sys, time
said = "no answer"
for _ in range(30):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=5)
        conn.request("GET", "/", headers={"Host": "mage-lxd-probe.invalid", "Connection": "close"})
        status = conn.getresponse().status
        if status == 503:
            sys.exit(0)
        said = "nginx answered %d, not the catch-all 503" % status
    except OSError as error:
        said = "no answer on 127.0.0.1:80: %s" % error
    time.sleep(0.1)
sys.exit(said)
'
}

# Only when something is applied: nginx installed if the image lacks it, and Debian's stock site,
# which claims default_server, set aside (the marker lets a failed run put it back).
mage_prepare() {
  command -v nginx >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >&2 ||
    dnf install -y nginx >&2 || apk add --no-cache nginx >&2 || return 1
  mkdir -p /etc/nginx/mage-lxd/tls /etc/nginx/mage-lxd/htpasswd /etc/nginx/mage-lxd/acme/live \
    /var/lib/mage-lxd/acme-webroot && chmod 0700 /etc/nginx/mage-lxd/tls /etc/nginx/mage-lxd/acme/live || return 1
  # lego, the ACME client, only where a route says tls: acme.
  if [ -s /etc/nginx/mage-lxd/acme/domains ] || [ "${MAGE_ACME:-}" = yes ]; then
    command -v lego >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q lego >&2 || return 1
  fi
  if [ -L /etc/nginx/sites-enabled/default ]; then
    rm /etc/nginx/sites-enabled/default && touch /run/mage-lxd-stock-site-removed
  fi
}

mage_undo_prepare() {
  if [ -e /run/mage-lxd-stock-site-removed ]; then
    ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default && rm /run/mage-lxd-stock-site-removed
  fi
}

# After a change went live: the stock site stays away for good.
mage_committed() {
  rm -f /run/mage-lxd-stock-site-removed
}
