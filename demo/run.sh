#!/usr/bin/env bash
# The demo, as far as the suite goes today: two Debian containers in the `mage-demo` project,
# read back by the mage_lxd dynamic inventory straight from LXD (no hand-edited hosts file).
# The containers are made with the lxc client for now; the mage_lxd_instance action and
# playbooks/site.yml (with mageproxy) take this over as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg
project=mage-demo

if ! lxc project show "$project" >/dev/null 2>&1; then
  lxc project create "$project" -c features.images=false -c features.profiles=false >/dev/null
fi
for name in app1 app2; do
  if ! lxc info "$name" --project "$project" >/dev/null 2>&1; then
    echo "demo: creating $name (mage/debian-12) in project $project"
    lxc launch mage/debian-12 "$name" --project "$project" --config user.mage.role=app >/dev/null
  fi
done

echo "demo: waiting for both containers to get an address"
for _ in $(seq 1 60); do
  leases=$(lxc query "/1.0/networks/magebr0/leases?project=$project")
  if grep -q '"app1"' <<<"$leases" && grep -q '"app2"' <<<"$leases"; then break; fi
  sleep 1
done

echo
echo "\$ ansible-inventory --graph lxd"
.venv/bin/ansible-inventory --graph lxd
echo
echo "\$ ansible-inventory --host app1   (excerpt)"
.venv/bin/ansible-inventory --host app1 | grep -E '"(ansible_host|lxd_status|lxd_project|lxd_image_os|lxd_image_release|mage_role)"'
cat <<'NEXT'

Next, try (after `. .venv/bin/activate`):
  ansible-inventory --graph               every group the inventory makes
  ansible-inventory --list                hosts, groups and variables as JSON
  ansible-doc -t inventory mage_lxd       the plugin's options
  ./run test                              every test, against this same lab LXD
Remove the demo: lxc delete --force app1 app2 --project mage-demo && lxc project delete mage-demo
NEXT
