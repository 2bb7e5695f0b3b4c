"""What a fake GX received as writes: one record per write, applied or dropped.

Both fakes (``fakegx`` over MQTT, ``fakedbus`` over D-Bus) append one ``ReceivedWrite`` for every
write that reaches them, including the ones the real GX would drop silently (out of range, wrong
type, a service that left). Tests and the fault campaign read the GX's own account from here
instead of trusting what the writer says it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReceivedWrite:
    """One write as the GX received it."""

    at: float  # event-loop time
    path: str  # MQTT: the topic suffix (``settings/0/Settings/...``); D-Bus: the object path
    value: Any  # the value asked for; over MQTT the raw payload when it is not a JSON object
    applied: bool  # False: dropped (localsettings refused it or nothing was there to take it)
