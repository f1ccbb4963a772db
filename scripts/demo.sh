#!/usr/bin/env bash
# `make demo`: a Debian container plays the VPS. Provision it and deploy
# app/ of this checkout to it with inventories/local, exactly as you would a
# real host, check that it serves, and print the URL to open.
#
#   KEEL_DEMO_PORT   the port on 127.0.0.1 that reaches its nginx (8080)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

port="${KEEL_DEMO_PORT:-8080}"
say() { printf '\n==> %s\n' "$*"; }

say "Starting the demo host (container keel-demo)"
scripts/host-container.sh keel-demo "$port" >/dev/null

if ! git diff --quiet HEAD -- app 2>/dev/null; then
  echo "note: app/ has uncommitted changes; the deploy ships the last commit only."
fi

say "Provisioning it: ansible-playbook provision.yml -i inventories/local"
ansible-playbook provision.yml -i inventories/local

say "Deploying app/: ansible-playbook deploy.yml -i inventories/local"
ansible-playbook deploy.yml -i inventories/local

say "Checking it through nginx"
for path in /readyz /version; do
  printf '%s: ' "$path"
  curl --fail --silent --show-error --max-time 10 -H 'Host: keelapp.localhost' "http://127.0.0.1:$port$path"
  echo
done

cat <<DONE

The demo is up. Open http://keelapp.localhost:$port/

  deploy again:   make deploy ENV=local        (commit first: only commits ship)
  roll back:      make rollback ENV=local
  remove it:      docker rm -f keel-demo
DONE
