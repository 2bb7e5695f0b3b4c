"""The log of every write a fake GX received, kept the same way by the MQTT and D-Bus fakes.

Tests assert on what reached the GX, not on what venus-prio believes it sent: "-1 written to the
override on SIGTERM", "nothing written to the setting while the override was in use". Each entry
keeps the value as it arrived (a dropped write too: ``accepted`` False) and when. A fake running
as a process appends each entry as one JSON line to ``path`` (``--write-log``), flushed at once so
a test can read it while the fake runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, List, Optional

from venus_prio.venus.paths import VenusItem


@dataclass(frozen=True)
class ReceivedWrite:
    """One write as the fake GX received it."""

    service: str  # the service type: settings, hub4, system...
    path: str  # the D-Bus path, e.g. /Overrides/MaxDischargePower
    value: Any  # as sent (JSON value over MQTT, unwrapped Variant over D-Bus); None = null
    accepted: bool  # False: the GX dropped or refused it
    at: float  # the fake's event-loop time
    wall: float  # time.time(), to compare with another process's clock


class WriteLog:
    """Every write received, in order; optionally mirrored to a JSON-lines file."""

    def __init__(self, path: Optional[Path] = None) -> None:
        self.entries: List[ReceivedWrite] = []
        self._path = path
        if path is not None:
            path.write_text("", encoding="utf-8")

    def record(
        self, service: str, path: str, value: Any, *, accepted: bool, at: float
    ) -> ReceivedWrite:
        entry = ReceivedWrite(service, path, value, accepted=accepted, at=at, wall=time.time())
        self.entries.append(entry)
        if self._path is not None:
            with self._path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(entry)) + "\n")
        return entry

    def to(self, item: VenusItem, *, accepted_only: bool = False) -> List[ReceivedWrite]:
        """Return the writes received for ``item`` (only the accepted ones if asked)."""
        return writes_to(self.entries, item, accepted_only=accepted_only)

    def values(self, item: VenusItem, *, accepted_only: bool = False) -> List[Any]:
        """Return the values written to ``item``, in order."""
        return [w.value for w in self.to(item, accepted_only=accepted_only)]


def writes_to(
    entries: List[ReceivedWrite], item: VenusItem, *, accepted_only: bool = False
) -> List[ReceivedWrite]:
    """Return the entries for ``item`` (only the accepted ones if asked)."""
    return [
        w
        for w in entries
        if (w.service, w.path) == (item.service, item.path) and (w.accepted or not accepted_only)
    ]


def read_write_log(path: Path) -> List[ReceivedWrite]:
    """Return the entries a fake running as a process wrote to ``path`` (``--write-log``)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline may still be written
    return [ReceivedWrite(**json.loads(line)) for line in lines if line.strip()]
