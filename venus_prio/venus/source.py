"""The one I/O seam to the GX: the ``Source`` interface every transport implements.

A source keeps itself connected (``run``), keeps the latest value of every item in
``venus_prio.venus.paths.INPUTS`` and when the GX last proved it is alive, and wakes the
service whenever any of that changes. The service never sees a raw payload: ``snapshot``
returns a validated ``Snapshot``.

``InputStore`` is the shared bookkeeping every transport uses to turn parsed values into a
``Snapshot``; ``MemorySource`` is an in-process fake for tests of the service; ``with_source``
runs a one-shot command while a source keeps itself connected.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    runtime_checkable,
)

from venus_prio.config import ControlConfig, VenusConfig
from venus_prio.errors import SourceUnavailable
from venus_prio.model import NO_OVERRIDE_W, Snapshot, same_value
from venus_prio.tasks import cancel_and_wait, supervise
from venus_prio.venus import paths
from venus_prio.venus.paths import PhaseSum, VenusItem

T = TypeVar("T")
Clock = Callable[[], float]

log = logging.getLogger(__name__)


def override_shown(value: Optional[float]) -> float:
    """Return the override as a read-back reports it: null (invalid) means none is in force."""
    return NO_OVERRIDE_W if value is None else value


async def wait_future(future: asyncio.Future[T], timeout: float) -> Optional[T]:
    """Return the future's result, None after ``timeout`` (without bpo-42130's lost cancel)."""
    try:
        done, _ = await asyncio.wait({future}, timeout=timeout)
    finally:
        if not future.done():
            future.cancel()
    return future.result() if done else None


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Return whether ``event`` was set within ``timeout``."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    return await wait_future(waiter, timeout) is not None


class Wakeup:
    """A flag to wait on with a timeout: ``asyncio.Event`` without a task per wait.

    The service waits for a change after every evaluation. ``wait_event`` would make a task
    for ``Event.wait`` and an ``asyncio.wait`` around it each time: four event-loop passes from
    a change to the service running, where a future that ``set`` completes takes one (most of
    what venus-prio's CPU exceeded a bare subscriber's by in the benchmark).
    """

    def __init__(self) -> None:
        self._flag = False
        self._waiters: List[asyncio.Future[bool]] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._flag = False

    async def wait(self, timeout: Optional[float] = None) -> bool:
        """Return whether the flag was set within ``timeout`` (None: wait until it is)."""
        if self._flag:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


def phase_total(
    values: Iterable[Optional[float]], *, non_negative: bool = False
) -> Optional[float]:
    """Return the sum of per-phase values as Victron sums them (``paths.PhaseSum``): an unknown
    phase counts as 0, all unknown is None; ``non_negative`` clips the sum at 0."""
    total: Optional[float] = None
    for value in values:
        if value is not None:
            total = value if total is None else total + value
    if non_negative and total is not None and total < 0.0:
        return 0.0
    return total


class InputStore:
    """Latest parsed value of every input item, plus liveness and connection state.

    A value is ``None`` when the source marked it invalid (null) or when the item is absent
    (never published, or its service disappeared). Values are validated here: numbers must be
    finite, codes must be integral; anything else is rejected and reported to the caller.
    The per-phase items are also kept summed (``paths.PHASE_SUMS``, ``phase_total``).
    """

    def __init__(self) -> None:
        self._values: Dict[str, Optional[float]] = {
            item.field: None for item in (*paths.INPUTS, paths.OVERRIDE_MAX_DISCHARGE)
        }
        # The phase sums, kept up to date as a phase changes: the snapshot is built several
        # times a second, a phase changes about once a second.
        self._sum_of: Dict[str, PhaseSum] = {
            item.field: phase_sum for phase_sum in paths.PHASE_SUMS for item in phase_sum.items
        }
        self._sums: Dict[str, Optional[float]] = {s.field: None for s in paths.PHASE_SUMS}
        self.setting_min: Optional[float] = None
        self.setting_max: Optional[float] = None
        self.alive_at: Optional[float] = None
        # Whether the GX has the hub4 override path: None = not known yet (Snapshot docs).
        self.override_present: Optional[bool] = None
        self.connected = False
        self.changed = Wakeup()
        # The last snapshot, until anything in it changes: the service takes one at every
        # evaluation and again to account for it, and most messages change nothing it holds.
        # ``set`` drops it; the public attributes are compared (``_snapshot_key``), so
        # assigning one directly cannot leave a stale snapshot behind.
        self._snapshot: Optional[Snapshot] = None
        self._snapshot_key: Tuple[object, ...] = ()

    @staticmethod
    def coerce(item: VenusItem, value: Any) -> Optional[float]:
        """Return the value as the item's type, None for null; raise ValueError for garbage."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{item.path}: not a number: {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{item.path}: not a finite number: {value!r}")
        if item.integer and not number.is_integer():
            raise ValueError(f"{item.path}: not a whole number: {value!r}")
        return number

    def set(self, item: VenusItem, value: Optional[float]) -> None:
        """Store an already coerced value; wake the service if it changed and it decides on it."""
        if self._values.get(item.field) != value:
            self._values[item.field] = value
            self._snapshot = None
            if item.wakes:
                self.changed.set()
            phase_sum = self._sum_of.get(item.field)
            if phase_sum is not None:
                self._add_up(phase_sum)

    def _add_up(self, phase_sum: PhaseSum) -> None:
        values = self._values
        self._sums[phase_sum.field] = phase_total(
            (values[item.field] for item in phase_sum.items), non_negative=phase_sum.non_negative
        )

    def set_bounds(self, setting_min: Optional[float], setting_max: Optional[float]) -> None:
        self.setting_min, self.setting_max = setting_min, setting_max

    def forget_values(self) -> None:
        """Drop every value: a new connection must not take the last one's values as current.

        After a reconnect the GX republishes everything; until then a value kept from before the
        outage may be older than our own last write (issue 10: it was once adopted as the user's
        change). Unknown is honest: the service does not steer on it.
        """
        for key in self._values:
            if self._values[key] is not None:
                self._values[key] = None
                self.changed.set()
        self._snapshot = None
        for phase_sum in paths.PHASE_SUMS:
            self._add_up(phase_sum)
        self.setting_min = self.setting_max = None
        self.set_override_present(None)

    def set_override_present(self, present: Optional[bool]) -> None:
        """Record whether the GX publishes the hub4 override path (None: not known yet)."""
        if present != self.override_present:
            self.override_present = present
            self.changed.set()

    def mark_alive(self, now: float) -> None:
        """Record that the source proved it is alive (heartbeat, read-back, GetValue)."""
        was_stale = self.alive_at is None
        self.alive_at = now
        if was_stale:
            self.changed.set()

    def set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.changed.set()

    def value(self, item: VenusItem) -> Optional[float]:
        return self._values.get(item.field)

    def snapshot(self) -> Snapshot:
        """Return the values as a ``Snapshot`` (the same object until one of them changes)."""
        key = (
            self.alive_at,
            self.connected,
            self.override_present,
            self.setting_min,
            self.setting_max,
        )
        snap = self._snapshot
        if snap is None or key != self._snapshot_key:
            snap = self._snapshot = self._build_snapshot()
            self._snapshot_key = key
        return snap

    def _build_snapshot(self) -> Snapshot:
        def code(item: VenusItem) -> Optional[int]:
            value = self._values[item.field]
            return None if value is None else int(value)

        return Snapshot(
            soc=self._values[paths.SOC.field],
            active_soc_limit=self._values[paths.ACTIVE_SOC_LIMIT.field],
            min_soc_setting=self._values[paths.MIN_SOC_SETTING.field],
            pv_dc_w=self._values[paths.PV_DC.field],
            dc_system_w=self._values[paths.DC_SYSTEM.field],
            battery_power_w=self._values[paths.BATTERY_POWER.field],
            ac_input_source=code(paths.AC_INPUT_SOURCE),
            hub4_mode=code(paths.HUB4_MODE),
            battery_life_state=code(paths.BATTERY_LIFE_STATE),
            dynamic_ess_mode=code(paths.DYNAMIC_ESS_MODE),
            max_discharge_w=self._values[paths.MAX_DISCHARGE_POWER.field],
            max_discharge_min=self.setting_min,
            max_discharge_max=self.setting_max,
            override_w=self._values[paths.OVERRIDE_MAX_DISCHARGE.field],
            ac_load_w=self._sums[paths.AC_LOAD.field],
            grid_w=self._sums[paths.GRID.field],
            pv_ac_w=self._sums[paths.PV_AC.field],
            # battery_kwh stays None: see Snapshot.battery_kwh.
            override_present=self.override_present,
            alive_at=self.alive_at,
            connected=self.connected,
            soc_name=paths.SOC.path,
            floor_names=f"{paths.ACTIVE_SOC_LIMIT.path} and {paths.MIN_SOC_SETTING.path}",
        )


@runtime_checkable
class Readiness(Protocol):
    """A source that can tell when its state is complete after a (re)connect (MQTT, D-Bus)."""

    @property
    def ready(self) -> bool: ...

    async def wait_ready(self, timeout: float) -> bool: ...


@runtime_checkable
class SettingsCheck(Protocol):
    """A source that tells a connection failure no retry mends: a setting is wrong (MQTT)."""

    async def wait_settings_problem(self, timeout: float) -> Optional[str]: ...


class Source(abc.ABC):
    """A connection to the GX that yields snapshots and writes MaxDischargePower."""

    name: str = "source"

    def __init__(self) -> None:
        self.store = InputStore()
        self.portal_id: Optional[str] = None

    @abc.abstractmethod
    async def run(self) -> None:
        """Connect and stay connected (reconnecting with capped backoff) until cancelled."""

    def snapshot(self) -> Snapshot:
        """Return the latest validated view of the GX."""
        return self.store.snapshot()

    def wake(self) -> None:
        """Make a pending ``wait_changed`` return now (a stop request, a mode change)."""
        self.store.changed.set()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait until an input, liveness or the connection changed; False on timeout."""
        if not await self.store.changed.wait(timeout):
            return False
        self.store.changed.clear()
        return True

    @abc.abstractmethod
    async def write_max_discharge(self, value_w: float) -> None:
        """Send a write of MaxDischargePower; raise ``SourceUnavailable`` when not connected."""

    @abc.abstractmethod
    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        """Ask the GX for the current value (read-back); None when it did not answer in time."""

    @abc.abstractmethod
    async def write_override(self, value_w: float) -> None:
        """Send a write of hub4 /Overrides/MaxDischargePower (-1 releases it); raise
        ``SourceUnavailable`` when not connected."""

    @abc.abstractmethod
    async def read_override(self, timeout: float) -> Optional[float]:
        """Ask the GX for the override's current value (-1 when none is in force, also for a
        null); None when it did not answer in time or the GX has no such path."""


async def with_source(source: Source, main: Awaitable[T]) -> T:
    """Run ``main`` while the source keeps itself connected; a failing source fails ``main``."""
    source_task: asyncio.Future[None] = asyncio.ensure_future(source.run())

    async def main_then_stop() -> T:
        try:
            return await main
        finally:
            await cancel_and_wait([source_task])

    main_task: asyncio.Future[T] = asyncio.ensure_future(main_then_stop())
    await supervise([source_task, main_task])
    if main_task.cancelled():
        exc = None if source_task.cancelled() else source_task.exception()
        if exc is not None:
            raise exc
        raise SourceUnavailable("the source stopped")
    return main_task.result()


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class GxSource(Source):
    """A source on a connection to a GX (MQTT, D-Bus): its settings, its clock, and whether its
    state is complete after a (re)connect (``Readiness``; what "complete" means is the
    transport's). Construct it inside the running event loop (it and its store hold asyncio
    events).
    """

    def __init__(self, venus: VenusConfig, control: ControlConfig) -> None:
        super().__init__()
        self._venus = venus
        self._control = control
        self._clock: Clock = _loop_time  # dates liveness and deadlines; a test may replace it
        self._ready = asyncio.Event()  # the transport sets it when complete, clears it on loss

    @property
    def ready(self) -> bool:
        """Return whether the state is complete since the last (re)connect."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the state is complete after a (re)connect; False on timeout."""
        return await wait_event(self._ready, timeout)

    @property
    def reconnect_max_s(self) -> float:
        """Return the cap of the reconnect backoff (``venus.reconnect_max_s``)."""
        return self._venus.reconnect_max_s


class MemorySource(Source):
    """An in-process GX for tests: values are set directly, writes land in ``setting``."""

    name = "memory"

    def __init__(
        self,
        *,
        setting_w: float = -1.0,
        setting_max: float = 1_000_000.0,
        override_present: bool = True,
    ) -> None:
        super().__init__()
        self.setting_w = setting_w
        self.store.set_bounds(-1.0, setting_max)
        self.store.set(paths.MAX_DISCHARGE_POWER, setting_w)
        self.writes: List[float] = []
        # The hub4 override: held as written (no expiry here), absent when not present.
        self.override_w = -1.0
        self.override_writes: List[float] = []
        self.store.set_override_present(override_present)
        if override_present:
            self.store.set(paths.OVERRIDE_MAX_DISCHARGE, -1.0)
        self.reachable = True

    async def run(self) -> None:
        self.store.set_connected(True)
        await asyncio.Event().wait()  # nothing to maintain; runs until cancelled

    async def write_max_discharge(self, value_w: float) -> None:
        if not self.reachable:
            raise SourceUnavailable("memory source unreachable")
        self.writes.append(value_w)
        lo, hi = self.store.setting_min, self.store.setting_max
        if (lo is None or value_w >= lo) and (hi is None or value_w <= hi):
            self.setting_w = value_w
            self.store.set(paths.MAX_DISCHARGE_POWER, value_w)

    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        return self.setting_w if self.reachable else None

    async def write_override(self, value_w: float) -> None:
        if not self.reachable:
            raise SourceUnavailable("memory source unreachable")
        self.override_writes.append(value_w)
        if self.store.override_present:
            self.override_w = value_w
            self.store.set(paths.OVERRIDE_MAX_DISCHARGE, value_w)

    async def read_override(self, timeout: float) -> Optional[float]:
        if not self.reachable or not self.store.override_present:
            return None
        return self.override_w

    def set_override(self, value_w: float) -> None:
        """Change the override as the GX does by itself (expiry, a pre-v3.60 reset: -1) or as
        someone else's write does (Dynamic ESS, scheduled charging); not one of ours."""
        if not self.store.override_present:
            raise ValueError("this GX has no hub4 override")
        self.override_w = value_w
        self.store.set(paths.OVERRIDE_MAX_DISCHARGE, value_w)


async def write_confirmed(
    source: Source,
    value_w: float,
    *,
    override: bool = False,
    stands: Optional[Callable[[float], bool]] = None,
    in_flight: Callable[[], bool] = lambda: False,
    attempts: int = 3,
    timeout: float = 2.0,
    retry_s: float = 0.5,
) -> Optional[bool]:
    """Make the GX hold ``value_w``, confirmed by read-back (writes have no acknowledgement).

    ``override``: the hub4 override instead of the setting. ``stands``: asked about each value
    read before a write; True means that value must stay (the user's), so nothing is written.
    ``in_flight``: asked (after ``stands``) before the first write: True when a write of ours
    may not have landed yet, so the value shown proves nothing (the GX may show ``value_w`` now
    and our older value a moment later): write anyway, and let the read-back after our own
    write confirm (writes through one connection land in order). Return True when a write was
    needed and confirmed, False when the GX already showed the value or one that stands (no
    write spent), None when it could not be confirmed after ``attempts``.
    """
    read = source.read_override if override else source.read_max_discharge
    write = source.write_override if override else source.write_max_discharge
    delay = retry_s
    wrote = False
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(delay)
            delay *= 2
        shown = await read(timeout)
        if shown is not None and stands is not None and stands(shown):
            return wrote
        if same_value(shown, value_w) and (attempt or not in_flight()):
            return wrote
        try:
            await write(value_w)
        except SourceUnavailable as exc:
            log.warning("Write attempt %d: GX unreachable (%s)", attempt + 1, exc)
            continue
        wrote = True
        shown = await read(timeout)
        if same_value(shown, value_w):
            return wrote
        log.warning(
            "Write attempt %d: wrote %g W to %s, the GX shows %s",
            attempt + 1,
            value_w,
            "the override" if override else "MaxDischargePower",
            "nothing" if shown is None else f"{shown:g} W",
        )
    return None
