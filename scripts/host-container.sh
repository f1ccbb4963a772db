#!/usr/bin/env bash
# host-container.sh NAME [PORT [TLS_PORT]]: start a Debian 13 container that
# plays a VPS (systemd as PID 1, as in the Molecule scenarios), or start it
# again if it exists, and wait until it has booted. With PORT, its port 80 is
# published on 127.0.0.1:PORT; with TLS_PORT, its port 443 on
# 127.0.0.1:TLS_PORT. Prints the container's address on the Docker network.
# Used by `make demo` and `make bench`; `docker rm -f NAME` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

name="$1" port="${2:-}" tls_port="${3:-}"
say() { printf 'host-container: %s\n' "$*" >&2; }

scripts/ensure-docker.sh
image=$(scripts/build-host-image.sh "${KEEL_DISTRO:-trixie}" | tail -n 1)

if ! docker inspect "$name" >/dev/null 2>&1; then
  say "creating $name from $image"
  # Not --privileged: the capabilities systemd and the services need.
  docker run --detach --name "$name" --hostname "$name" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE --cap-add AUDIT_CONTROL \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host --volume /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --shm-size 256m \
    --stop-signal SIGRTMIN+3 \
    ${port:+--publish "127.0.0.1:$port:80"} ${tls_port:+--publish "127.0.0.1:$tls_port:443"} \
    "$image" /lib/systemd/systemd >/dev/null
else
  docker start "$name" >/dev/null
fi

for _ in $(seq 60); do
  state=$(docker exec "$name" systemctl is-system-running --wait 2>/dev/null || true)
  if [ "$state" = running ] || [ "$state" = degraded ]; then
    docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$name"
    exit 0
  fi
  sleep 2
done
say "$name did not finish booting in 120 s (systemd says: ${state:-nothing})"
exit 1
