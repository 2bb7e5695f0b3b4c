"""The plausibility check of MaxDischargePower's min/max (garbage on N/ must not steer writes)."""

from __future__ import annotations

from typing import Optional

import pytest

from venus_prio.venus.flashmq import plausible_setting_bounds


@pytest.mark.parametrize(
    ("minimum", "maximum", "plausible"),
    [
        (-1.0, 1_000_000.0, True),  # localsettings today
        (-1.0, 100_000.0, True),  # older firmware
        (-1.0, 2000.0, True),
        (None, None, True),
        (-1.0, None, True),
        (None, 0.0, True),
        (9000.0, 1_000_000.0, False),  # a min above 0 forbids the hold value
        (-1.0, -50.0, False),  # a max below 0 forbids every cap
        (None, -50.0, False),
        (1e12, None, False),
        (0.0, -1.0, False),  # a max below the min
    ],
)
def test_plausible_setting_bounds(
    minimum: Optional[float], maximum: Optional[float], plausible: bool
) -> None:
    assert plausible_setting_bounds(minimum, maximum) is plausible
