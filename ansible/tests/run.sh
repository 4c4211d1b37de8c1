#!/usr/bin/env bash
# `tox -e ansible`: lint and syntax-check every playbook, then the real run
# (scenario.py: the playbooks applied to local hosts, checked, cleaned up).
#   ansible/tests/run.sh            # everything
#   ansible/tests/run.sh --static   # lint and syntax checks only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
export ANSIBLE_CONFIG="$PWD/ansible.cfg" ANSIBLE_NOCOLOR=1
started=$SECONDS

echo "== ansible-lint"
ansible-lint --offline --nocolor
echo "== ansible-playbook --syntax-check"
for playbook in site.yml workers.yml rolling-update.yml master-facts.yml; do
    ansible-playbook --syntax-check -i inventory/example.yml "$playbook"
done
echo "== static checks passed in $((SECONDS - started)) s"
[ "${1:-}" = "--static" ] && exit 0

echo "== the real run"
python "$here/scenario.py"
echo "== tox -e ansible passed in $((SECONDS - started)) s"
