#!/usr/bin/env bash
# A throwaway PostgreSQL and Redis for the app's tests, on their own ports so
# they never touch a system instance. Installs Debian's packages if missing.
#
#   scripts/test-services.sh start   start both (reuses running ones)
#   scripts/test-services.sh stop    stop both and delete their data
#   scripts/test-services.sh env     print the environment the tests use
set -euo pipefail

state_dir="${KEEL_TEST_SERVICES_DIR:-/tmp/keel-app-test-services}"
pg_port="${KEEL_TEST_PG_PORT:-55432}"
redis_port="${KEEL_TEST_REDIS_PORT:-56379}"
redis_password="keel-test-redis"

say() { printf 'test-services: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# PostgreSQL refuses to run as root: use the postgres system user then.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}

install_missing() {
  local packages=()
  [ -n "$(pg_bin)" ] || packages+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
  [ ${#packages[@]} -eq 0 ] && return
  say "installing ${packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq "${packages[@]}" >/dev/null
}

start_postgres() {
  local bin data="$state_dir/pg"
  bin=$(pg_bin)
  if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then return; fi
  mkdir -p "$state_dir"
  [ "$(id -u)" -eq 0 ] && chown postgres "$state_dir"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$data" -l "$state_dir/pg.log" -w \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $state_dir -c fsync=off" start >/dev/null
  "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'keelapp'" \
    | grep -q 1 || "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres keelapp
  say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"
}

start_redis() {
  if redis-cli -p "$redis_port" -a "$redis_password" --no-auth-warning ping >/dev/null 2>&1; then return; fi
  mkdir -p "$state_dir/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --requirepass "$redis_password" \
    --save '' --appendonly no --dir "$state_dir/redis" --daemonize yes \
    --pidfile "$state_dir/redis.pid" --logfile "$state_dir/redis.log"
  for _ in $(seq 1 50); do
    redis-cli -p "$redis_port" -a "$redis_password" --no-auth-warning ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  say "Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$redis_port"
}

stop_all() {
  local bin
  bin=$(pg_bin) || true
  if [ -n "$bin" ] && [ -d "$state_dir/pg" ]; then
    as_pg "$bin/pg_ctl" -D "$state_dir/pg" -m fast stop >/dev/null 2>&1 || true
  fi
  redis-cli -p "$redis_port" -a "$redis_password" --no-auth-warning shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$state_dir"
}

print_env() {
  echo "DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/keelapp"
  echo "REDIS_URL=redis://:$redis_password@127.0.0.1:$redis_port/0"
}

case "${1:-start}" in
  start) install_missing; start_postgres; start_redis ;;
  stop) stop_all ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
