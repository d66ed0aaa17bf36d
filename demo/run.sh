#!/usr/bin/env bash
# The demo: two app containers and mageproxy declared in inventory/group_vars/all.yml, provisioned
# by playbooks/site.yml (through playbooks/demo.yml), then requests through the proxy and the NAT port.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg
bin=$PWD/.venv/bin

echo "demo: ansible-playbook playbooks/demo.yml"
"$bin/ansible-playbook" playbooks/demo.yml

proxy=$("$bin/ansible" localhost -c local -m ansible.builtin.debug \
  -a "msg={{ lookup('mage.lxd.mage_lxd', 'mageproxy', key='address', project='mage-demo') }}" |
  sed -n 's/.*"msg": "\(.*\)".*/\1/p')
echo
for app in app1 app2; do
  echo "\$ curl -H 'Host: $app.mage.test' http://$proxy/"
  curl -sS -m 5 -H "Host: $app.mage.test" "http://$proxy/"
done
echo "\$ curl -H 'Host: nobody.mage.test' http://$proxy/   (unknown host)"
curl -sS -m 5 -o /dev/null -w '%{http_code}\n' -H "Host: nobody.mage.test" "http://$proxy/"
echo "\$ curl http://127.0.0.1:8081/   (NAT: app1's port 80 published on this host)"
curl -sS -m 5 http://127.0.0.1:8081/
cat <<'NEXT'

Next, try (after `. .venv/bin/activate`):
  ansible-inventory --graph                    every LXD instance, grouped, straight from LXD
  ansible lxd -m ansible.builtin.ping          modules through the LXD API (mage_lxd connection)
  ansible-playbook playbooks/site.yml          again: nothing changes
  ansible-doc -t module mage_lxd_instance      what an instance declaration can say
Remove the demo: ansible-playbook playbooks/teardown.yml -e teardown_mageproxy=true
NEXT
