"""Run ``python -m venus_prio``."""

from __future__ import annotations

from venus_prio.cli import main

raise SystemExit(main())
