#!/usr/bin/env bash
# Build the lab's local images and import them into LXD, once.
#
# Images are built from this host's own apt sources (mmdebstrap with no mirror argument), cached
# as unified LXD tarballs keyed by a hash of their recipe, and imported only when the alias is
# missing or points at an older build. A second run takes seconds.
set -euo pipefail

cache=${MAGE_LAB_CACHE:-/var/cache/mage-lxd}/images
suite=bookworm
mkdir -p "$cache"

log() { printf 'lab: %s\n' "$*" >&2; }

# The recipe hash covers this script, so editing a recipe rebuilds the image.
recipe_hash=$(sha256sum "$0" | cut -c1-12)

write_metadata() { # dir os release description
  cat >"$1/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: $2
  release: "$3"
  description: "$4"
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [create, copy]
    template: hosts.tpl
EOF
  mkdir -p "$1/templates"
  printf '{{ instance.name }}\n' >"$1/templates/hostname.tpl"
  printf '127.0.0.1 localhost\n127.0.1.1 {{ instance.name }}\n::1 localhost ip6-localhost ip6-loopback\n' \
    >"$1/templates/hosts.tpl"
}

pack() { # workdir tarball
  tar -C "$1" --numeric-owner -czf "$2.tmp" metadata.yaml templates rootfs
  mv "$2.tmp" "$2"
  rm -rf "$1"
}

build_debian() { # tarball with_python
  local out=$1 with_python=$2 work
  work=$(mktemp -d)
  local include=systemd-sysv,ifupdown,isc-dhcp-client,iproute2,sudo,ca-certificates
  local description="mage Debian 12 (python3, nginx-light)"
  if [ "$with_python" = yes ]; then
    include=$include,python3,nginx-light
  else
    description="mage Debian 12 without python"
  fi
  log "building $(basename "$out") with mmdebstrap (host apt sources)"
  # No mirror argument: mmdebstrap then uses this host's own apt sources.
  mmdebstrap --quiet --variant=minbase --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='printf "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n" > "$1/etc/network/interfaces"' \
    --customize-hook='rm -f "$1/etc/hostname" "$1/etc/machine-id"; touch "$1/etc/machine-id"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$suite" "$work/rootfs" >&2
  write_metadata "$work" debian 12 "$description"
  pack "$work" "$out"
}

build_busybox() { # tarball
  local out=$1 work
  work=$(mktemp -d)
  [ -x /bin/busybox ] || { log "busybox-static is missing (lab/up.sh installs it)"; exit 1; }
  log "building $(basename "$out") from the host's busybox-static"
  local root=$work/rootfs
  mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root,run,var/run}
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  ln -s ../bin/busybox "$root/sbin/init"
  cat >"$root/etc/inittab" <<'EOF'
::sysinit:/bin/mount -t proc proc /proc
::sysinit:/bin/ip link set lo up
::sysinit:/bin/udhcpc -b -i eth0 -s /etc/udhcpc.sh
::respawn:/bin/sleep 2147483647
::shutdown:/bin/umount -a -r
EOF
  cat >"$root/etc/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    # The default route carries replies to NAT clients on other host interfaces.
    [ -z "$router" ] || ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
EOF
  chmod +x "$root/etc/udhcpc.sh"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  write_metadata "$work" busybox "$(/bin/busybox | head -1 | sed -n 's/^BusyBox v\([0-9.]*\).*/\1/p')" "mage busybox"
  pack "$work" "$out"
}

ensure_image() { # alias builder [builder args]
  local alias=$1 builder=$2
  shift 2
  local tarball=$cache/${alias//\//_}-$recipe_hash.tar.gz
  [ -s "$tarball" ] || "$builder" "$tarball" "$@"
  local want have
  want=$(sha256sum "$tarball" | cut -d' ' -f1)
  have=$(lxc image info "$alias" 2>/dev/null | sed -n 's/^Fingerprint: //p' || true)
  if [ "$have" = "$want" ]; then
    return 0
  fi
  log "importing $alias"
  # The older build goes; instances made from it keep their own copy of its files.
  [ -z "$have" ] || lxc image delete "$have"
  if lxc image info "$want" >/dev/null 2>&1; then
    lxc image alias create "$alias" "$want"
  else
    lxc image import "$tarball" --alias "$alias" >/dev/null
  fi
}

ensure_image mage/busybox build_busybox
ensure_image mage/debian-12 build_debian yes
ensure_image mage/debian-12-nopython build_debian no
# Old builds of these recipes are of no further use.
find "$cache" -name '*.tar.gz' ! -name "*-$recipe_hash.tar.gz" -delete
log "images ready: mage/busybox mage/debian-12 mage/debian-12-nopython"
