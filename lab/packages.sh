# shellcheck shell=bash
# What the lab needs from Debian, for lab/up.sh and lab/cluster.sh alike. Sourced, not run.
#
# Debian's lxd Depends only on what its binary links and a few tools; what LXD executes at run time
# is partly in Recommends, which --no-install-recommends leaves out. From LXD's source and its
# package's Recommends:
#   dnsmasq-base  every managed bridge runs a dnsmasq (LXD refuses to create one without it)
#   iproute2      LXD runs `ip` for bridges, veths and routes
#   nftables      before LXD's first start: with only the iptables-nft shim LXD falls back to its
#                 xtables driver, which leaves network-forward DNAT rules behind
#   iptables      the iptables NAT backend (the seed's DNAT rules) and its tests
# Left out on purpose: apparmor (LXD runs without it when the kernel has none loaded), lxd-agent
# (virtual machines only; this lab runs containers).
# The lab's own tools: mmdebstrap and busybox-static build the images, curl checks pages,
# util-linux gives nsenter/unshare to the cluster lab, pebble is the ACME test server the mageproxy
# tests issue certificates from; openssl and ca-certificates make the image server's CA and put it in the
# host's CA store (lab/image_server.sh).
MAGE_LAB_PACKAGES=(lxd dnsmasq-base iproute2 nftables iptables mmdebstrap busybox-static curl util-linux pebble
  openssl ca-certificates)

lab_install_missing_packages() {
  local missing=() pkg
  for pkg in "${MAGE_LAB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  printf 'lab: installing %s from the distribution'"'"'s packages\n' "${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}
