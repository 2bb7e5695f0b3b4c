"""Test doubles of a GX: the MQTT one (``mqtt_gx``), the D-Bus one (``dbus_gx``) and the log of
the writes they receive (``writelog``). They drive the simulator's plant but are not part of the
simulation: the tests, the benchmark, the fault campaign and ``venus-prio fake-gx`` use them."""

from __future__ import annotations
