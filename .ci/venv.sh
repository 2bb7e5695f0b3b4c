#!/usr/bin/env bash
# Make .venv-VERSION with PYTHON and install the project with its dev extras into it; again only
# when pyproject.toml changed since (the stamp), so a second run starts at once.
# Usage: .ci/venv.sh VERSION PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
python=$2
venv=".venv-$version"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ ! "$venv/.installed" -nt pyproject.toml ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e ".[dev]"
  touch "$venv/.installed"
fi
