#!/usr/bin/env bash
# Lint, format check, types (for Python 3.8) and the Python-version check, with the tools of
# the given venv. mypy runs from the 3.8 venv: newer pytest and numpy stubs use syntax that a
# check for Python 3.8 rejects.
# Usage: .ci/lint.sh VENV
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1
"$venv/bin/ruff" check venus_prio tests
"$venv/bin/ruff" format --check venus_prio tests
"$venv/bin/mypy"
"$venv/bin/vermin" -q --no-tips --violations --target=3.8- --eval-annotations \
  --backport dataclasses --exclude-regex '\.venv' venus_prio tests
