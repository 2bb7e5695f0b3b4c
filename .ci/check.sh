#!/usr/bin/env bash
# The inner loop's fast tier: lint, types and the unit tests on both cores, under one Python
# (the first that Venus OS ships and this machine has; 3.8 checks the types for 3.8). No broker,
# bus or container: `make test` runs everything, under both Pythons.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r version python < <(bash .ci/pythons.sh | awk '$2 != "-"' | head -n 1) || true
if [ -z "${python:-}" ]; then
  echo "FAIL: no Python that Venus OS ships (3.8, 3.12) found; install one with pyenv" >&2
  exit 1
fi
bash .ci/venv.sh "$version" "$python"
echo "== lint and types (Python $version)"
bash .ci/lint.sh ".venv-$version"
echo "== unit tests (Python $version)"
".venv-$version/bin/python" -m pytest -p no:cacheprovider -q -n "${PYTEST_WORKERS:-2}" tests/unit
