#!/usr/bin/env bash
# Keel's test harness: `make test` runs this. On a fresh Debian machine where
# you are root it does everything itself: starts a Docker engine, builds the
# Debian test-host images, lints, syntax-checks the playbooks, runs the app's
# tests, and proves every role on real systemd hosts with Molecule.
#
#   scripts/test.sh                  everything
#   scripts/test.sh lint             the static checks only: nothing runs a
#                                    playbook, a host or a database
#   scripts/test.sh playbooks        the playbooks' input checks and the unit
#                                    tests of Keel's scripts (tests/)
#   scripts/test.sh app              the reference app's tests, on a real
#                                    PostgreSQL and Redis it installs
#   scripts/test.sh molecule [NAME]  Molecule scenarios only (all, or NAME...)
#   scripts/test.sh demo             `make demo` in a container made for it
#
# Environment:
#   KEEL_MATRIX=all     run every scenario on every distro (make test-matrix);
#                       by default only the scenarios in MATRIX_SCENARIOS do
#   KEEL_DISTROS        distros to build and test (default "bookworm trixie")
#   KEEL_IMAGE          test every scenario on this image instead (no build)
#
# Each step's full output goes to .cache/test-logs/<step>.log; a failed step
# prints its last lines. The last line sums up: "harness: N passed, M failed".
set -uo pipefail

cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1

what="${1:-all}"
[ $# -gt 0 ] && shift
only_scenarios=("$@")

distros=(${KEEL_DISTROS:-bookworm trixie})
default_distro="${distros[-1]}"
# Scenarios that run on every distro even without KEEL_MATRIX=all.
MATRIX_SCENARIOS="common"

log_dir=.cache/test-logs
mkdir -p "$log_dir"
passed=() failed=()

run_step() {
  local name="$1"; shift
  local log="$log_dir/$name.log" start end
  start=$(date +%s)
  printf '==> %s\n' "$name"
  if "$@" >"$log" 2>&1; then
    end=$(date +%s); passed+=("$name")
    printf '    ok      %s (%ss)\n' "$name" "$((end - start))"
  else
    end=$(date +%s); failed+=("$name")
    printf '    FAILED  %s (%ss); last lines of %s:\n' "$name" "$((end - start))" "$log"
    tail -n 60 "$log" | sed 's/^/    | /'
  fi
}

remove_test_containers() {
  docker ps -aq --filter label=owner=molecule 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter label=owner=molecule 2>/dev/null | xargs -r docker network rm >/dev/null 2>&1 || true
}

check_collections() {
  local out
  out=$(ansible-galaxy collection install -r requirements.yml 2>&1) || { echo "$out"; return 1; }
  echo "$out"
  grep -q "Nothing to do" <<<"$out" || { echo "requirements.yml asks for collections the pinned ansible package lacks"; return 1; }
}

syntax_check_playbooks() {
  local playbook env rc=0
  for playbook in provision deploy rollback backup restore status; do
    for env in local prod staging multihost; do
      echo "--- $playbook.yml -i inventories/$env"
      ansible-playbook --syntax-check "$playbook.yml" -i "inventories/$env" || rc=1
    done
  done
  return $rc
}

# Every host of an environment must sit in its environment's group: a stray
# file in an inventory folder would otherwise become a host of its own.
check_inventories() {
  local env stray rc=0
  for env in local prod staging multihost; do
    stray=$(comm -23 <(ansible-inventory -i "inventories/$env" --list 2>/dev/null \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("\n".join(sorted(d["_meta"]["hostvars"])))') \
      <(ansible-inventory -i "inventories/$env" --graph "$env" 2>/dev/null | sed -n 's/^.*--\([^@].*\)$/\1/p' | sort -u))
    if [ -n "$stray" ]; then
      echo "inventories/$env: hosts outside the '$env' group: $stray"; rc=1
    else
      echo "inventories/$env: every host is in the '$env' group"
    fi
  done
  return $rc
}

# The reference app's tests against a real PostgreSQL and Redis, which are
# stopped afterwards whatever the outcome.
app_tests() {
  local rc=0
  make -C app test || rc=$?
  make -C app stop
  return $rc
}

# A Molecule scenario, then proof that its check step (the converge playbook
# in --check mode on the converged host) would change nothing anywhere.
molecule_test() {
  local scenario="$1" log="$2" recap
  molecule test -s "$scenario" || return 1
  recap=$(sed 's/\x1b\[[0-9;]*m//g' "$log" \
    | sed -n "/$scenario [>➜] check[]:] Executing/,/$scenario [>➜] check[]:] Executed/p" \
    | grep -E ' changed=[0-9]+' | grep -v '^localhost ')
  if [ -z "$recap" ]; then
    echo "harness: no check-mode recap found for $scenario"; return 1
  fi
  if grep -qvE ' changed=0 ' <<<"$recap"; then
    echo "harness: check mode would change the converged hosts:"; echo "$recap"; return 1
  fi
  echo "harness: check mode reports no change on the converged hosts"
}

# `make demo` as a newcomer runs it: a container as the VPS, provisioned and
# deployed with inventories/local. A demo host that was already there (yours)
# is kept; one made here is removed.
demo_test() {
  local made=0 rc=0
  docker inspect keel-demo >/dev/null 2>&1 || made=1
  KEEL_DEMO_PORT="${KEEL_DEMO_PORT:-18080}" KEEL_DEMO_TLS_PORT="${KEEL_DEMO_TLS_PORT:-18443}" scripts/demo.sh || rc=$?
  if [ $made = 1 ]; then docker rm -f keel-demo >/dev/null; fi
  return $rc
}

lint_steps() {
  run_step yamllint yamllint --strict .
  run_step ansible-lint ansible-lint --profile production --offline
  run_step ruff ruff check .
  run_step ruff-format ruff format --check .
  run_step collections check_collections
  run_step inventories check_inventories
  run_step role-readmes python scripts/role-docs.py --check
  run_step syntax-check syntax_check_playbooks
}

playbook_steps() {
  run_step playbook-input-tests pytest -q tests
}

app_steps() {
  if [ -f app/Makefile ]; then
    run_step app-tests app_tests
  fi
}

molecule_steps() {
  local images=() distro scenario scenarios=()
  run_step docker-engine scripts/ensure-docker.sh
  [ ${#failed[@]} -eq 0 ] || return
  remove_test_containers
  trap remove_test_containers EXIT
  if [ -z "${KEEL_IMAGE:-}" ]; then
    for distro in "${distros[@]}"; do
      run_step "image-$distro" scripts/build-host-image.sh "$distro"
    done
  fi
  if [ ${#only_scenarios[@]} -gt 0 ]; then
    scenarios=("${only_scenarios[@]}")
  else
    for scenario in molecule/*/molecule.yml; do
      scenarios+=("$(basename "$(dirname "$scenario")")")
    done
  fi
  for scenario in "${scenarios[@]}"; do
    for distro in "${distros[@]}"; do
      if [ "$distro" != "$default_distro" ] && [ "${KEEL_MATRIX:-}" != all ] \
        && [[ " $MATRIX_SCENARIOS " != *" $scenario "* ]]; then
        continue
      fi
      KEEL_DISTRO="$distro" KEEL_IMAGE="${KEEL_IMAGE:-keel-host:$distro}" \
        run_step "molecule-$scenario-$distro" molecule_test "$scenario" "$log_dir/molecule-$scenario-$distro.log"
    done
  done
}

case "$what" in
  all) lint_steps; playbook_steps; app_steps; molecule_steps; [ ${#only_scenarios[@]} -gt 0 ] || run_step demo demo_test ;;
  lint) lint_steps ;;
  playbooks) playbook_steps ;;
  app) app_steps ;;
  molecule) molecule_steps ;;
  demo) run_step demo demo_test ;;
  *) echo "usage: scripts/test.sh [all|lint|playbooks|app|molecule [SCENARIO...]|demo]" >&2; exit 2 ;;
esac

echo
[ ${#failed[@]} -eq 0 ] || printf 'failed steps: %s\n' "${failed[*]}"
printf 'harness: %d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
[ ${#failed[@]} -eq 0 ]
