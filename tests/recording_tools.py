"""What the recorder's tests, the replay's tests and its benchmark share: a fake local clock
(UTC as the local zone), the service status a row is built from, and a stretch of a day."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

from venus_prio.model import Band, Decision, Reason, TargetClass
from venus_prio.recording import LocalDay
from venus_prio.sim.scenarios import Profile
from venus_prio.status import ServiceStatus
from venus_prio.writes import WriteCounters

JUNE_1 = 1748736000.0  # 2025-06-01 00:00 UTC


def utc_day(now: float) -> LocalDay:
    """Return the local day of ``now`` with UTC as the local zone."""
    return LocalDay(time.strftime("%Y-%m-%d", time.gmtime(now)), now % 86400.0)


@contextlib.contextmanager
def local_zone(name: str) -> Iterator[None]:
    """Make ``name`` (``Europe/Berlin``) the process's local time zone while entered."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def service_status(
    *,
    reason: Reason = Reason.PV_PRIORITY,
    floor: float = 20.0,
    target_w: float = 720.0,
    mode: str = "auto",
    actuator: str = "override",
    flash_writes: int = 2,
    override_writes: int = 41,
    connected: bool = True,
) -> ServiceStatus:
    """Return a status as the service shows it after one evaluation with this verdict."""
    decision = Decision(
        target_w=target_w,
        target_class=TargetClass.POSITIVE,
        reason=reason,
        phase=None,
        band=Band.PRIORITY,
        d=None,
        soc=None,
        floor=floor,
        pv_f=0.0,
        pv_share_w=0.0,
        text="",
    )
    return ServiceStatus(
        decision=decision,
        last_write=None,
        counters=WriteCounters(hour=0, day=0, total=flash_writes),
        baseline_w=3000.0,
        mode=mode,
        enabled=True,
        dry_run=mode == "dry-run",
        connected=connected,
        actuator=actuator,
        override_counters=WriteCounters(hour=0, day=0, total=override_writes),
    )


def stretch(profile: Profile, start_s: float, end_s: float) -> Profile:
    """Return the rows of ``profile`` from ``start_s`` to ``end_s`` as a profile of their own."""
    rows = [i for i, t in enumerate(profile.time_s) if start_s <= t < end_s]
    return Profile(
        name=f"{profile.name}-{start_s:g}-{end_s:g}",
        time_s=tuple(profile.time_s[i] for i in rows),
        pv_dc_w=tuple(profile.pv_dc_w[i] for i in rows),
        load_w=tuple(profile.load_w[i] for i in rows),
        pv_ac_w=tuple(profile.pv_ac_w[i] for i in rows),
    )
