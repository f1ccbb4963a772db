#!/usr/bin/env bash
# `make demo`: a Debian container plays the VPS. Provision it and deploy
# app/ of this checkout to it with inventories/local, exactly as you would a
# real host, check that it serves, and print the URL to open.
#
# The demo serves HTTPS with a self-signed certificate (tls_mode: selfsigned)
# and Django's HTTPS redirect on, as production does: the browser warns once.
#
#   KEEL_DEMO_PORT       the port on 127.0.0.1 that reaches its nginx's HTTP (8080)
#   KEEL_DEMO_TLS_PORT   the same for HTTPS (8443)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

port="${KEEL_DEMO_PORT:-8080}"
tls_port="${KEEL_DEMO_TLS_PORT:-8443}"
say() { printf '\n==> %s\n' "$*"; }

say "Starting the demo host (container keel-demo)"
if docker inspect keel-demo >/dev/null 2>&1 && ! docker port keel-demo 443 >/dev/null 2>&1; then
  echo "keel-demo exists from an older demo without HTTPS: remove it (docker rm -f keel-demo) and run make demo again." >&2
  exit 1
fi
scripts/host-container.sh keel-demo "$port" "$tls_port" >/dev/null

if ! git diff --quiet HEAD -- app 2>/dev/null; then
  echo "note: app/ has uncommitted changes; the deploy ships the last commit only."
fi

say "Provisioning it: ansible-playbook provision.yml -i inventories/local"
ansible-playbook provision.yml -i inventories/local

say "Deploying app/: ansible-playbook deploy.yml -i inventories/local"
ansible-playbook deploy.yml -i inventories/local

say "Checking it through nginx, over HTTPS"
for path in /readyz /version; do
  printf '%s: ' "$path"
  curl --fail --silent --show-error --max-time 10 --insecure \
    --resolve "keelapp.localhost:$tls_port:127.0.0.1" "https://keelapp.localhost:$tls_port$path"
  echo
done
printf 'http://keelapp.localhost:%s/ answers: ' "$port"
curl --silent --max-time 10 -o /dev/null -w '%{http_code} to %{redirect_url}\n' -H 'Host: keelapp.localhost' "http://127.0.0.1:$port/"

cat <<DONE

The demo is up. Open https://keelapp.localhost:$tls_port/
(its certificate is self-signed: accept the browser's warning once)

  deploy again:   make deploy ENV=local        (commit first: only commits ship)
  roll back:      make rollback ENV=local
  remove it:      docker rm -f keel-demo
DONE
