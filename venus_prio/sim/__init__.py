"""Deterministic simulator: a plant with stock ESS logic, day profiles, policies and metrics."""

from __future__ import annotations
