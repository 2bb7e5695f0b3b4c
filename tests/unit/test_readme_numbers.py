"""Every number the README states about a default is the value in config.yaml (issue 11.1)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import pytest

from tests.readme_numbers import (
    README,
    MarkerError,
    load_defaults,
    marked_numbers,
    rewrite,
)
from venus_prio.config import parse_config

# The defaults "How it decides" and "How it keeps your system safe" are made of: each must be
# shown (and so checked) at least once.
MUST_BE_SHOWN = {
    "control.pv_factor",
    "control.pv_offset_w",
    "control.step_w",
    "control.pv_min_w",
    "control.pv_window_s",
    "control.hold_w",
    "control.prio_band",
    "control.recover_band",
    "control.half_power_fraction",
    "control.ramp_w_per_min",
    "control.stale_after_s",
    "writes.deadband_w",
    "writes.min_increase_interval_s",
    "writes.max_writes_per_hour",
    "actuator.override.pv_factor",
    "actuator.override.step_w",
}


def test_every_marked_number_in_the_readme_is_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    marked = marked_numbers(text, load_defaults())
    wrong = [f"line {m.line}: {m.shown} <!--cfg:{m.expr}--> is {m.expected}" for m in marked]
    assert [w for w, m in zip(wrong, marked) if not m.ok] == []
    # And the generator would leave it as it is.
    assert rewrite(text, load_defaults()) == text


def test_the_readme_shows_the_defaults_the_decisions_are_made_of() -> None:
    shown = {key for m in marked_numbers(README.read_text(encoding="utf-8"), load_defaults())
             for key in m.keys}  # fmt: skip
    assert MUST_BE_SHOWN - shown == set()


def _parsed_default(config: Any, path: str) -> Any:
    node = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def test_config_yaml_holds_the_parsers_defaults_for_every_shown_key() -> None:
    # The README describes what you get without a config; config.yaml must say the same.
    defaults = load_defaults()
    parsed = parse_config({"control": {"max_inverter_power_w": 3000}}, env={})
    keys = {k for m in marked_numbers(README.read_text(encoding="utf-8"), defaults) for k in m.keys}
    for key in sorted(keys):
        section, *rest = key.split(".")
        raw: Any = defaults[section]
        for part in rest:
            raw = raw[part]
        assert _parsed_default(parsed, key) == raw, key


CONFIG: Dict[str, Any] = {
    "control": {"pv_factor": 0.95, "half_power_fraction": 0.2, "max_inverter_power_w": 3000},
    "writes": {"min_increase_interval_s": 240, "deadband_w": 250, "dry_run": False},
}


@pytest.mark.parametrize(
    ("text", "ok", "fixed"),
    [
        ("share 0.95<!--cfg:control.pv_factor--> x PV", True, None),
        ("share 0.8<!--cfg:control.pv_factor--> x PV", False, "share 0.95<!--cfg:"),
        ("every 4<!--cfg:writes.min_increase_interval_s / 60--> min", True, None),
        ("every 240<!--cfg:writes.min_increase_interval_s / 60--> min", False, "every 4<!--"),
        # 0.2 * 100 is not exactly 20 in binary floating point: shown as 20 all the same.
        ("20<!--cfg: control.half_power_fraction * 100 --> %", True, None),
        ("600<!--cfg:control.half_power_fraction * control.max_inverter_power_w--> W", True, None),
        ("1,500<!--cfg:(control.half_power_fraction + 0.3) * 3000--> W", True, None),
        ("2,500<!--cfg:writes.deadband_w * 10--> W", True, None),
        ("-250<!--cfg:-writes.deadband_w--> W", True, None),
        ("(0.95) x<!--cfg:control.pv_factor-->", False, "x0.95<!--cfg:"),  # no number before it
        ("0.950<!--cfg:control.pv_factor-->", False, "0.95<!--cfg:"),  # not how it is written
    ],
)
def test_marked_numbers_are_checked_and_rewritten(
    text: str, ok: bool, fixed: Optional[str]
) -> None:
    [marked] = marked_numbers(text, CONFIG)
    assert marked.ok is ok
    rewritten = rewrite(text, CONFIG)
    if fixed is None:
        assert rewritten == text
    else:
        assert fixed in rewritten
        assert all(m.ok for m in marked_numbers(rewritten, CONFIG))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1<!--cfg:control.pv_factr-->", "control.pv_factr: not a key set in config.yaml"),
        ("1<!--cfg:control-->", "control: not a number in config.yaml"),
        ("0<!--cfg:writes.dry_run-->", "writes.dry_run: not a number"),
        ("1<!--cfg:__import__('os')-->", "only key paths, numbers and"),
        ("1<!--cfg:control.pv_factor ** 2-->", "only key paths, numbers and"),
        ("1<!--cfg:control.-->", "'control.': "),
    ],
)
def test_broken_markers_are_errors_with_the_line(text: str, error: str) -> None:
    with pytest.raises(MarkerError, match="line 2") as raised:
        marked_numbers("first line\n" + text, CONFIG)
    assert error in str(raised.value)
