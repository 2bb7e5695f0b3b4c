"""The pure switching rule of ``transport: auto`` (venus_prio.venus.fallback.choose_transport)."""

from __future__ import annotations

from typing import Optional

import pytest

from venus_prio.venus.fallback import DBUS, MQTT, Choice, choose_transport

GRACE = 3.0
NOW = 10.0


@pytest.mark.parametrize(
    ("active", "mqtt_ready", "down_since", "gx_on_dbus", "expected"),
    [
        # MQTT ready: MQTT, whatever was active.
        (MQTT, True, None, True, Choice(MQTT, None)),
        (DBUS, True, None, True, Choice(MQTT, None)),
        (DBUS, True, None, False, Choice(MQTT, None)),
        # MQTT down, within the grace period: stay, look again when it ends.
        (MQTT, False, 9.0, True, Choice(MQTT, 12.0)),
        # ...exactly at and after the grace period: D-Bus, if the GX is on it.
        (MQTT, False, 7.0, True, Choice(DBUS, None)),
        (MQTT, False, 0.0, True, Choice(DBUS, None)),
        # Not on a GX (no system service on D-Bus): MQTT keeps trying, no timer.
        (MQTT, False, 0.0, False, Choice(MQTT, None)),
        # On D-Bus, MQTT connected but not complete yet (or still down): stay on D-Bus.
        (DBUS, False, 0.0, True, Choice(DBUS, None)),
        (DBUS, False, 0.0, False, Choice(DBUS, None)),
        (DBUS, False, None, True, Choice(DBUS, None)),
        # Down time unknown: never a switch to D-Bus.
        (MQTT, False, None, True, Choice(MQTT, None)),
    ],
)
def test_choose_transport(
    active: str,
    mqtt_ready: bool,
    down_since: Optional[float],
    gx_on_dbus: bool,
    expected: Choice,
) -> None:
    choice = choose_transport(
        active,
        mqtt_ready=mqtt_ready,
        mqtt_down_since=down_since,
        gx_on_dbus=gx_on_dbus,
        now=NOW,
        grace_s=GRACE,
    )
    assert choice == expected


def test_a_switch_to_dbus_needs_the_full_grace_period() -> None:
    outcomes = [
        choose_transport(
            MQTT, mqtt_ready=False, mqtt_down_since=100.0, gx_on_dbus=True, now=t, grace_s=GRACE
        ).transport
        for t in (100.0, 101.0, 102.9, 103.0, 104.0)
    ]
    assert outcomes == [MQTT, MQTT, MQTT, DBUS, DBUS]
