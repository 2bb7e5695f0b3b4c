"""``OverrideRegister.next_change``: when a fake GX must publish the override's fall back to -1."""

from __future__ import annotations

from typing import Optional

import pytest

from venus_prio.sim.plant import OverrideRegister


@pytest.mark.parametrize(
    ("variant", "written_at", "expected"),
    [
        ("honoured", 101.0, 161.0),  # the expiry
        ("ignored", 101.0, 161.0),  # shown (and expiring) like honoured, only not applied
        ("reset_every_5s", 101.0, 105.0),  # the next 5 s boundary comes first
        ("absent", 101.0, None),  # nothing shown, nothing changes
    ],
)
def test_next_change(variant: str, written_at: float, expected: Optional[float]) -> None:
    register = OverrideRegister(variant=variant, expiry_s=60.0)
    register.write(800.0, written_at)
    assert register.next_change(written_at + 1.0) == expected
    if expected is not None:
        # Just before it the value holds; at it, it is -1 and nothing more is due.
        assert register.shown(expected - 0.01) == 800.0
        assert register.shown(expected) == -1.0
        assert register.next_change(expected) is None


def test_released_register_has_no_change_due() -> None:
    register = OverrideRegister(variant="honoured", expiry_s=60.0)
    assert register.next_change(0.0) is None
    register.write(500.0, 10.0)
    register.write(-1.0, 20.0)
    assert register.next_change(20.0) is None
