#!/usr/bin/env bash
# Run every check and test: lint, types, Python-version check, then the whole suite under each
# Python that Venus OS ships (3.8 and 3.12), each in its own venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/system-deps.sh test

ran=()
missing=()
lint_done=no
while read -r version python; do
  if [ "$python" = - ]; then
    missing+=("$version"); continue
  fi
  venv=".venv-$version"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e ".[dev]"
  if [ "$lint_done" = no ]; then
    echo "== lint and types (Python $version)"
    "$venv/bin/ruff" check venus_prio tests
    "$venv/bin/ruff" format --check venus_prio tests
    "$venv/bin/mypy"
    "$venv/bin/vermin" -q --no-tips --violations --target=3.8- --eval-annotations \
      --backport dataclasses --exclude-regex '\.venv' venus_prio tests
    lint_done=yes
  fi
  echo "== tests (Python $version)"
  "$venv/bin/python" -m pytest -p no:cacheprovider -q
  ran+=("$version")
done < <(bash .ci/pythons.sh)

echo "== Python versions tested: ${ran[*]:-none}"
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "${CI:-}" ]; then
    echo "FAIL: Python ${missing[*]} not found; CI must test every version Venus OS ships" >&2
    exit 1
  fi
  echo "NOTICE: Python ${missing[*]} not found here, not tested (install with pyenv)" >&2
fi
[ ${#ran[@]} -gt 0 ]
