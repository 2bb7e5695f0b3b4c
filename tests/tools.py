"""Test prerequisites: a missing tool fails the test in CI and skips it loudly elsewhere."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest


def missing(message: str, *, skipping: str) -> NoReturn:
    """Fail the test in CI; elsewhere skip it, saying ``SKIPPING <skipping>`` past pytest's
    capture (a silently skipped test looks like a pass)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    print(f"\nWARNING: SKIPPING {skipping}: {message}", file=sys.__stderr__)
    pytest.skip(f"!!! SKIPPED: {message} !!!")


def require_tool(name: str, *, hint: str, skipping: str) -> str:
    """Return the path of the command ``name`` (beside this Python first: a venv's tools need no
    activation); ``missing`` when there is none, with ``hint`` on how to install it."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if os.access(beside_python, os.X_OK) else shutil.which(name)
    if found is None:
        missing(f"{name} is not installed: {hint}", skipping=skipping)
    return found
