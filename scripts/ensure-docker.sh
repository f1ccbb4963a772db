#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, installing and starting
# Debian's docker.io when it does not. Idempotent: returns at once when
# `docker info` already works. Needs root (or sudo) on a Debian/Ubuntu machine.
set -euo pipefail

log_file="${KEEL_DOCKERD_LOG:-/var/log/keel-dockerd.log}"
wait_seconds="${KEEL_DOCKERD_WAIT:-60}"

say() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v dockerd >/dev/null 2>&1; then
  say "no Docker engine here: installing Debian's docker.io"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

# A machine with systemd as PID 1 runs the engine as a service; a bare
# container or CI sandbox has no init, so start dockerd ourselves.
if [ "$(ps -o comm= -p 1 2>/dev/null)" = "systemd" ]; then
  as_root systemctl start docker
elif ! pgrep -x dockerd >/dev/null 2>&1; then
  say "starting dockerd (log: $log_file)"
  as_root sh -c "nohup setsid dockerd >>'$log_file' 2>&1 </dev/null &"
fi

for _ in $(seq 1 "$wait_seconds"); do
  if docker info >/dev/null 2>&1; then
    say "Docker engine $(docker version --format '{{.Server.Version}}') is ready"
    exit 0
  fi
  sleep 1
done
say "the Docker engine did not answer within ${wait_seconds}s; last lines of $log_file:"
tail -n 20 "$log_file" >&2 || true
exit 1
