#!/usr/bin/env bash
# Run every check and test: lint, types, Python-version check, then the whole suite under each
# Python that Venus OS ships (3.8 and 3.12), each in its own venv.
#
# The two suites run side by side, each on PYTEST_WORKERS pytest-xdist workers (default 3): most
# integration tests wait (real brokers, buses, timeouts; a suite uses about a quarter of its
# wall time in CPU), so six workers share two cores where one test at a time left them idle.
# "worksteal" hands the long tests' neighbours to idle workers. Each suite writes its own log,
# shown when it ends; the fixtures reserve their ports with lock files and use per-worker
# temporary directories, so neither the workers nor the two suites meet.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/system-deps.sh test

workers=${PYTEST_WORKERS:-3}
ran=()
missing=()
while read -r version python; do
  if [ "$python" = - ]; then
    missing+=("$version"); continue
  fi
  bash .ci/venv.sh "$version" "$python"
  ran+=("$version")
done < <(bash .ci/pythons.sh)

if [ ${#ran[@]} -gt 0 ]; then
  echo "== lint and types (Python ${ran[0]})"
  bash .ci/lint.sh ".venv-${ran[0]}"
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/venus-prio-test.XXXXXX")
pids=()
# Each suite in a process group of its own (job control), so an interrupted run stops it with
# its brokers, buses and fakes: SIGINT lets pytest tear its fixtures down; a suite that ignores
# SIGINT (a run started in the background inherits that) gets SIGTERM after a grace period.
set -m
signal_suites() {
  local sig=$1 pid
  alive=no
  for pid in "${pids[@]}"; do kill "-$sig" -- "-$pid" 2>/dev/null && alive=yes; done
}
stop_suites() {
  [ ${#pids[@]} -gt 0 ] || return 0
  signal_suites INT
  for _ in $(seq 20); do
    signal_suites 0
    [ "$alive" = no ] && return 0
    sleep 0.5
  done
  signal_suites TERM
}
trap 'stop_suites; rm -rf "$logs"' EXIT
trap 'exit 130' INT TERM
for version in "${ran[@]}"; do
  echo "== tests (Python $version) started, $workers workers: log $logs/$version.log"
  ".venv-$version/bin/python" -m pytest -p no:cacheprovider -q -n "$workers" --dist worksteal \
    >"$logs/$version.log" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!ran[@]}"; do
  if wait "${pids[$i]}"; then result=passed; else result=FAILED; failed+=("${ran[$i]}"); fi
  echo "== tests (Python ${ran[$i]}): $result"
  cat "$logs/${ran[$i]}.log"
done
pids=()

echo "== Python versions tested: ${ran[*]:-none}"
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${CI:-}" ]; then
    echo "FAIL: Python ${missing[*]} not found; CI must test every version Venus OS ships" >&2
    exit 1
  fi
  echo "NOTICE: Python ${missing[*]} not found here, not tested (install with pyenv)" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: the suite failed under Python ${failed[*]}" >&2
  exit 1
fi
[ ${#ran[@]} -gt 0 ]
