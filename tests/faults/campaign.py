"""A seeded fault campaign: the real ``venus-prio run`` against the fake GX, faults at random.

    python tests/faults/campaign.py --rounds 500 --seed 1        # the long form
    python tests/faults/campaign.py --rounds 200 --seed 1 --actuator auto   # with the override
    python tests/faults/campaign.py --seed 1 --round 17          # replay one round
    options: --transport auto|mqtt, --actuator setting|override|auto, --backend dbus_fast|dbus_next,
             --faults MIN MAX (per round), --keep DIR (logs and journals), -v (a line per round)

Each round is self-contained: a fresh Mosquitto (no retained state from an earlier round), a fresh
fake GX holding the harness's ``PLANT`` (an ESS just above its floor, the user's 2500 W), a fresh
state directory, and ``python -m venus_prio run`` as a subprocess. With ``--transport auto``
(the default) the GX is seen through two doors at once, the ``FakeGx`` (dbus-flashmq) on the
broker and the ``FakeVenus`` services on a real dbus-daemon, kept in step by the harness's
``Mirror`` (and for the hub4 override by ``OverrideMirror``). With ``--actuator auto`` or
``override`` each round's fakes play a hub4 variant drawn from ``VARIANTS`` (mostly honoured,
sometimes reset every 5 s, or absent) with a short expiry, and the override timings in
``OVERRIDE_CONFIG`` are scaled to rounds of ~10 s. A round's schedule is drawn from
``Random("<seed>/<round>")`` alone, so ``--seed S --round R`` replays the same faults in the
same order (the timing of a real broker and real processes around them is not replayed bit for
bit).

Faults, all real: the broker killed and restarted; ``system`` or ``settings`` leaving the GX
(both doors) and returning; frozen inputs (no heartbeat, reads unanswered, systemcalc hung);
heartbeats stopping; garbage payloads; SIGKILL of venus-prio and a restart; SIGTERM and a
restart; the user changing MaxDischargePower in the GUI (sometimes back to a value they had
before); Home Assistant asking for mode off/auto/dry-run. With the override also: another tool
(Dynamic ESS, scheduled charging) holding the override for a while, then -1, and hub4 leaving.
Between them the weather moves (PV, SOC) so that venus-prio keeps writing.

After the round everything is healed, venus-prio is given time to see the GX again and is stopped
with SIGTERM. Then the invariants, from the GX's own records of what it received
(``ReceivedWrite``), venus-prio's logs, its journal (polled throughout) and the baseline it
publishes to Home Assistant:

1. the GX ends with the user's latest own value, and venus-prio exits 0 (restore confirmed);
2. venus-prio wrote nothing outside ``[0, max_inverter_power_w]`` other than a user's value;
3. no value of venus-prio's was ever taken for the baseline (journal, Home Assistant, logs);
4. the journal always parses, is clean at the end with the user's value, and a clean journal
   never stands beside one of venus-prio's values on the GX;
5. every write venus-prio logged reached the GX exactly once, through whichever door was
   active (lost only with a broker killed under it), and the GX received no write venus-prio
   did not log (except the restore's read-back retries and the one write a SIGKILL cut off
   before its log line);
6. the override (``check_override``): with ``actuator.kind: setting`` never written; otherwise
   released (-1) after the final stop, every write -1 or in ``[0, max_inverter_power_w]``, none
   while another tool's value holds it (bar one that crossed it on the wire, ``CROSSING_S``),
   and never two caps of venus-prio's at once: no setting write but a user's value while its
   override is in force, no override taken while its value holds the setting. After every stop
   an override of venus-prio's still in force is in the journal, and a SIGTERM released it.

The user's values are never multiples of 50 W (venus-prio's step): the GX signals nothing when a
value is set to what it already holds, so a user choosing venus-prio's current value could not be
seen by anyone. The user does not touch the GUI while venus-prio hands back (between SIGTERM and
its exit): a write crossing the hand-back's own write on the wire cannot be told apart by any
client, as the GX has no compare-and-set.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import math
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Counter,
    Dict,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiomqtt

from tests.integration.conftest import Broker, mosquitto_binary, running
from tests.integration.harness import (
    BASELINE,
    PID,
    DbusGx,
    GxHarness,
    Mirror,
    MqttGx,
    config_data,
    dbus_gx,
    mqtt_gx,
    plant,
    start_run,
    venus_config,
    write_yaml,
)
from venus_prio.config import HomeAssistantConfig
from venus_prio.fakes.mqtt_gx import OVERRIDE_SUFFIX
from venus_prio.fakes.writelog import ReceivedWrite
from venus_prio.homeassistant import state_prefix, state_topics
from venus_prio.journal import journal_path, load_journal
from venus_prio.sim.plant import OverrideRegister
from venus_prio.venus import paths

if TYPE_CHECKING:  # pytest loads the fixtures module as a plugin: importing it first breaks that
    from tests.integration.dbus_fixtures import DbusDaemon

MAX_W = 3000.0  # control.max_inverter_power_w in the harness's config
STEP_W = 50  # writes.step_w: venus-prio's values are multiples of it
EXIT_TIMEOUT_S = 30.0
SEE_GX_TIMEOUT_S = 25.0
SETTLE_S = 1.5  # after healing: time to reconnect and re-evaluate before the final stop
HEARTBEAT_TIMEOUT_S = 2.0  # venus-prio's heartbeat timeout: a stopped heartbeat has effects
JOURNAL_POLL_S = 0.05

FAULTS = (
    "broker_down",
    "service_leaves",
    "frozen",
    "heartbeat_stop",
    "garbage",
    "sigkill",
    "sigterm",
    "user_write",
    "ha_command",
    "foreign_override",
)
# Faults that only mean something when venus-prio may use the override (and the GX has it).
OVERRIDE_FAULTS = ("foreign_override",)
WEATHER = ("pv", "soc")
MODES = ("off", "auto", "dry-run")
GARBAGE_ITEMS = (paths.SOC, paths.PV_DC, paths.ACTIVE_SOC_LIMIT, paths.MAX_DISCHARGE_POWER)

SETTING = paths.MAX_DISCHARGE_POWER
OVERRIDE = paths.OVERRIDE_MAX_DISCHARGE
HUB4 = paths.HUB4
# The fakes' hub4 variant, drawn per round when venus-prio may use the override: mostly a GX
# that honours it (v3.60 on), sometimes one that resets it every 5 s (before v3.60) or has none.
# ("ignored" needs a plant whose battery answers the cap: these fakes' battery power is fixed.)
VARIANTS = ("honoured",) * 6 + ("reset_every_5s", "absent")
OVERRIDE_EXPIRY_S = 6.0  # the fakes' expiry: a broker kept down long enough lets ours lapse
# actuator.override for the campaign: the real timings scaled to rounds of ~10 s.
OVERRIDE_CONFIG = {"refresh_s": 1, "verify_s": 3, "retry_after_s": 5, "foreign_clear_s": 3}
FOREIGN_VALUES = (1.0, 1.0, 333.0, 1777.0)  # Dynamic ESS's idle max(1, PV) and others' values
FOREIGN_REFRESH_S = 0.2  # another tool rewrites its override (Victron's code every 5 s)
# A write of venus-prio's may cross another tool's override on the wire (the GX has no
# compare-and-set); one sent this long after the other tool's value appeared saw it.
CROSSING_S = 2.0
Toggle = Callable[[bool], Awaitable[None]]  # a fault: True starts it, False heals it
# Writes venus-prio logs: steering and hand-back writes, and restore attempts not confirmed.
WROTE = re.compile(
    r"Wrote MaxDischargePower (\S+) W|Write attempt \d+: wrote (\S+) W to MaxDischargePower"
)
# The restore's value (its confirmed write has no line of its own).
RESTORED = re.compile(
    r"(?:Restored the baseline MaxDischargePower|could not confirm MaxDischargePower =) (\S+) W"
)
LEARNT = re.compile(r"Baseline MaxDischargePower (\S+) W \(from (.*)\)$", re.MULTILINE)
ADOPTED = re.compile(r"changed to (\S+) W by someone else \(GUI or another tool\): adopted")
SWITCHED = re.compile(r"switching (mqtt|dbus) -> (mqtt|dbus)")


# -- the schedule (pure: a function of the seed and the round) ----------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing that happens in a round, ``gap_s`` after the previous one."""

    gap_s: float
    kind: str  # one of FAULTS or WEATHER
    duration_s: float = 0.0  # episodes: how long the fault lasts; restarts: the pause before
    value: Any = None  # user value, mode, PV, SOC, service name or garbage item index


def round_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"{seed}/{index}")


def user_value(rng: random.Random, taken: List[float]) -> float:
    """Draw a value the user might set: no limit (-1), above the inverter's power, or below;
    sometimes one they had before (``taken``: theirs so far, the latest last)."""
    earlier = taken[:-1]
    if earlier and rng.random() < 0.2:
        return rng.choice(earlier)  # back to an old value (the latest would change nothing)
    while True:
        roll = rng.random()
        if roll < 0.1:
            value = -1
        elif roll < 0.25:
            value = rng.randint(int(MAX_W) + 1, 5000)
        else:
            value = rng.randint(1, int(MAX_W) - 1)
        if value % STEP_W == 0:
            value += 7  # never one of venus-prio's steps: the GX would not signal the change
        if float(value) not in taken:
            return float(value)


def plan_round(rng: random.Random, options: Options) -> Tuple[str, List[Step]]:
    """Return a round's hub4 variant and its steps (``options``: transport, actuator, faults)."""
    # With the setting the GX keeps its usual override: venus-prio must never touch it.
    variant = "honoured" if options.actuator == "setting" else rng.choice(VARIANTS)
    hub4 = options.actuator != "setting" and variant != "absent"
    return variant, schedule(rng, transport=options.transport, faults=options.faults, hub4=hub4)


def schedule(
    rng: random.Random, *, transport: str, faults: Tuple[int, int], hub4: bool = False
) -> List[Step]:
    """Return a round's steps: between ``faults`` faults, some weather in between.

    ``hub4``: venus-prio may use the override and the GX has it: another tool takes it at
    times, and hub4 is one of the services that may leave."""
    kinds = [
        k
        for k in FAULTS
        if (transport == "auto" or k != "service_leaves") and (hub4 or k not in OVERRIDE_FAULTS)
    ]
    steps: List[Step] = []
    taken: List[float] = [BASELINE]
    for _ in range(rng.randint(*faults)):
        if rng.random() < 0.4:
            steps.append(weather_step(rng))
        steps.append(fault_step(rng, rng.choice(kinds), taken, hub4=hub4))
    return steps


def weather_step(rng: random.Random) -> Step:
    """A cloud or sunshine (PV), or the battery somewhere else (SOC): venus-prio has to write."""
    kind = rng.choice(WEATHER)
    if kind == "soc":
        value = rng.choice((8.0, 11.0, 14.0, 17.0, 21.0, 30.0))
    else:
        value = rng.choice((0.0, 80.0, 150.0, 400.0, 900.0, 1600.0, 2400.0))
    return Step(rng.uniform(0.05, 0.6), kind, value=value)


def fault_step(rng: random.Random, kind: str, taken: List[float], *, hub4: bool = False) -> Step:
    """A fault of ``kind`` with its drawn duration and value (``taken``: the user's values;
    ``hub4``: as in ``schedule``)."""
    duration = 0.0
    value: Any = None
    if kind in ("broker_down", "service_leaves", "heartbeat_stop", "foreign_override"):
        duration = rng.uniform(0.2, 6.0)  # beyond 3 s `auto` switches to D-Bus
    elif kind == "frozen":
        duration = rng.uniform(0.5, 7.0)  # beyond stale_after_s (5 s) venus-prio stands aside
    elif kind in ("sigkill", "sigterm"):
        duration = rng.uniform(0.0, 1.5)  # the pause before the restart
    if kind == "service_leaves":
        value = rng.choice((paths.SYSTEM, paths.SETTINGS) + ((paths.HUB4,) if hub4 else ()))
    elif kind == "garbage":
        value = rng.randrange(len(GARBAGE_ITEMS))
    elif kind == "user_write":
        value = user_value(rng, taken)
        taken.append(value)
    elif kind == "foreign_override":
        value = rng.choice(FOREIGN_VALUES)
    elif kind == "ha_command":
        value = rng.choice(MODES)
    return Step(rng.uniform(0.05, 1.0), kind, duration, value)


# -- running a round -----------------------------------------------------------------------------


class OverrideMirror(Mirror):
    """The harness's ``Mirror`` for the hub4 override too: venus-prio's override written
    through either door is the one GX's (each fake then expires it on its own clock, in step).
    Nothing is copied while hub4 is away (``hub4_gone``): its override went with it."""

    def __init__(self, mqtt: MqttGx, dbus: DbusGx, *, hub4_gone: Callable[[], bool]) -> None:
        super().__init__(mqtt, dbus)
        self.hub4_gone = hub4_gone
        self._seen_mqtt_override = 0
        self._seen_dbus_override = 0

    async def sync(self) -> bool:
        copied = await super().sync()  # returns False only without yielding
        from_mqtt = [w.value for w in self.mqtt.gx.writes if w.suffix == OVERRIDE_SUFFIX]
        from_dbus = [w.value for w in self.dbus.fake.write_log.to(OVERRIDE, accepted_only=True)]
        new_mqtt = from_mqtt[self._seen_mqtt_override :]
        new_dbus = from_dbus[self._seen_dbus_override :]
        self._seen_mqtt_override, self._seen_dbus_override = len(from_mqtt), len(from_dbus)
        if self.hub4_gone():
            return copied
        # One GX has one register: copy what the written door holds now, not the write itself.
        # A copy made after that door's 5 s reset would otherwise start afresh on the other
        # door and stand there alone (seed 1 round 4 of the short form: venus-prio's 140 W,
        # reset on the MQTT door, stood on the D-Bus door after the final stop).
        if new_mqtt:
            shown = self.mqtt.gx.override_w
            self.dbus.fake.set_value(OVERRIDE, -1.0 if shown is None else shown)  # no yield
            copied = True
        if new_dbus:
            shown = self.dbus.fake.override_w
            await self.mqtt.gx.set_value(OVERRIDE, -1.0 if shown is None else shown)
            copied = True
        return copied


def override_value(raw: Any) -> float:
    """Return an override write as a number (null releases: -1)."""
    return -1.0 if raw is None else float(raw)


@dataclasses.dataclass
class Incarnation:
    """One ``venus-prio run`` process of a round."""

    process: asyncio.subprocess.Process
    log: Path
    started: float
    ended: Optional[float] = None
    how: str = ""  # how it ended: sigkill | sigterm | final
    code: Optional[int] = None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@dataclasses.dataclass
class RoundResult:
    index: int
    faults: Counter[str]
    violations: List[str]
    writes: int = 0
    variant: str = "honoured"
    switches: int = 0
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Options:
    transport: str = "auto"  # auto: MQTT and D-Bus doors; mqtt: the broker only
    actuator: str = "setting"
    backend: str = "dbus_fast"
    faults: Tuple[int, int] = (3, 8)


@dataclasses.dataclass(frozen=True)
class Lab:
    """The real components a campaign runs on: a Mosquitto, a dbus-daemon (auto), a directory."""

    broker: Broker
    daemon: Optional[DbusDaemon]
    workdir: Path


class Round:
    """One round: the GX, venus-prio, the faults of ``steps``, then the invariants."""

    def __init__(
        self,
        index: int,
        steps: Sequence[Step],
        *,
        options: Options,
        lab: Lab,
        variant: str = "honoured",
    ) -> None:
        self.index = index
        self.steps = steps
        self.variant = variant  # the fakes' hub4 override
        self.options = options
        self.broker = lab.broker
        self.daemon = lab.daemon
        self.workdir = lab.workdir
        self.state_dir = lab.workdir / "state"
        self.config_file = lab.workdir / "config.yaml"
        self.faults: Counter[str] = collections.Counter()
        self.violations: List[str] = []
        self.incarnations: List[Incarnation] = []
        self.user_values: List[float] = [BASELINE]  # the initial value is the user's too
        self.broker_stops: List[float] = []
        self.absent: Set[str] = set()  # services gone from the GX
        self.busy: Set[str] = set()  # resources an episode holds
        self.episodes: List[asyncio.Future[None]] = []
        self.baselines_seen: List[Tuple[str, float]] = []  # (where, value)
        self.user_events: List[Tuple[float, float]] = []  # (when, value) the user set
        # (when, value, who) the override changed other than by venus-prio's writes: another
        # tool ("foreign") or hub4 leaving ("gone", -1).
        self.override_events: List[Tuple[float, float, str]] = []
        self.foreign: Optional[asyncio.Future[None]] = None  # another tool holding the override
        self.mq: Optional[MqttGx] = None
        self.db: Optional[DbusGx] = None
        self.mirror: Optional[Mirror] = None

    # -- helpers -----------------------------------------------------------------------

    def violation(self, text: str) -> None:
        if text not in self.violations:  # one line per distinct finding
            self.violations.append(text)

    @property
    def doors(self) -> List[GxHarness]:
        doors: List[GxHarness] = [] if self.db is None else [self.db]
        return doors + ([] if self.mq is None else [self.mq])

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    @property
    def current(self) -> Optional[Incarnation]:
        return self.incarnations[-1] if self.incarnations else None

    def running_process(self) -> Optional[Incarnation]:
        inc = self.current
        return inc if inc is not None and inc.ended is None else None

    def write_config(self) -> None:
        venus = venus_config(
            self.options.transport,
            broker=self.broker,
            dbus_address=None if self.daemon is None else self.daemon.address,
            dbus_backend=self.options.backend.replace("_", "-"),
        )
        venus = dataclasses.replace(venus, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
        data = config_data(venus, self.state_dir)
        data["homeassistant"] = {"enabled": True}
        data["actuator"] = {"kind": self.options.actuator, "override": OVERRIDE_CONFIG}
        write_yaml(self.config_file, data)

    # -- venus-prio --------------------------------------------------------------------

    async def start(self) -> None:
        log = self.workdir / f"run-{len(self.incarnations) + 1}.log"
        door = self.db if self.db is not None else self.mq
        env = None if door is None else door.env()
        process = await start_run(self.config_file, log, env)
        self.incarnations.append(Incarnation(process, log, started=self.now))

    async def stop(self, how: str) -> None:
        inc = self.running_process()
        if inc is None:
            return
        if how == "sigkill":
            inc.process.kill()
        else:
            inc.process.send_signal(signal.SIGTERM)
        try:
            inc.code = await asyncio.wait_for(inc.process.wait(), EXIT_TIMEOUT_S)
        except asyncio.TimeoutError:
            self.violation(f"venus-prio did not exit within {EXIT_TIMEOUT_S:g}s of {how}")
            inc.process.kill()
            inc.code = await inc.process.wait()
        inc.ended, inc.how = self.now, how

    async def wait_seen_gx(self) -> bool:
        """Wait until the running venus-prio has learnt the baseline (it sees the GX)."""
        inc = self.running_process()
        deadline = self.now + SEE_GX_TIMEOUT_S
        while inc is not None and self.now < deadline:
            if LEARNT.search(inc.text()):
                return True
            if inc.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        return False

    # -- the GX ------------------------------------------------------------------------

    async def on_gx(self, item: paths.VenusItem, value: Any) -> Optional[float]:
        """Change an item on every door (the plant moves, the user sets a value, another tool
        its override); return when it took effect (None: the service is not on the GX)."""
        if item.service in self.absent:
            return None  # nobody can change what is not on the bus
        if self.mirror is not None:
            while await self.mirror.sync():
                pass  # returned False without yielding: no write can slip in below
        at = self.now
        for door in self.doors:  # D-Bus first: its change takes effect without yielding
            await door.set_value(item, value)
        return at

    def gx_values(self) -> List[float]:
        return [door.setting for door in self.doors]

    def received(self, item: paths.VenusItem = SETTING) -> List[Tuple[str, ReceivedWrite]]:
        """Every write to ``item`` either door received, in time order."""
        records: List[Tuple[str, ReceivedWrite]] = []
        if self.mq is not None:
            records += [("mqtt", r) for r in self.mq.gx.write_log.to(item)]
        if self.db is not None:
            records += [("dbus", r) for r in self.db.fake.write_log.to(item)]
        return sorted(records, key=lambda pair: pair[1].at)

    # -- observers ---------------------------------------------------------------------

    async def poll_journal(self) -> None:
        path = journal_path(self.state_dir)
        last: Optional[float] = None
        while True:
            if path.exists():
                journal = load_journal(path)
                if journal is None:
                    self.violation(f"the journal {path} does not parse: {path.read_text()!r}")
                elif journal.baseline_w is not None and journal.baseline_w != last:
                    last = journal.baseline_w
                    self.baselines_seen.append(("journal", journal.baseline_w))
            await asyncio.sleep(JOURNAL_POLL_S)

    async def observe_home_assistant(self) -> None:
        """Record every baseline venus-prio publishes to Home Assistant (across broker kills)."""
        topic = state_topics(state_prefix(HomeAssistantConfig(), portal_id=PID)).state
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
                    await client.subscribe(topic)
                    async for message in client.messages:
                        document = json.loads(bytes(message.payload) or b"{}")
                        baseline = document.get("baseline_w")
                        if baseline is not None:
                            self.baselines_seen.append(("home assistant", float(baseline)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    # -- faults ------------------------------------------------------------------------

    def episode(self, resource: str, duration_s: float, fault: Toggle) -> bool:
        """Start a fault that lasts ``duration_s``: ``fault(True)``, then ``fault(False)``."""
        if resource in self.busy:
            return False
        self.busy.add(resource)

        async def run() -> None:
            try:
                await fault(True)
                await asyncio.sleep(duration_s)
            finally:
                await fault(False)
                self.busy.discard(resource)

        self.episodes.append(asyncio.ensure_future(run()))
        return True

    async def broker_down(self, down: bool) -> None:
        if down:
            self.broker.stop()
            self.broker_stops.append(self.now)
        else:
            self.broker.start()

    async def set_present(self, service: str, present: bool) -> None:
        if present:
            self.absent.discard(service)
        else:
            self.absent.add(service)
            if service == HUB4:  # hub4control stopping: the override in its RAM is gone
                self.override_events.append((self.now, -1.0, "gone"))
        for door in self.doors:
            await door.set_present(service, present)

    async def set_silent(self, silent: bool) -> None:
        for door in self.doors:
            await door.set_silent(silent)

    async def heartbeat_stopped(self, stopped: bool) -> None:
        assert self.mq is not None
        self.mq.gx.heartbeat_enabled = not stopped

    def episodes_of(self, step: Step) -> Dict[str, Tuple[str, Toggle]]:
        """Return the faults that last a while: kind -> (the resource they hold, the toggle)."""
        service = str(step.value)

        async def service_gone(gone: bool) -> None:
            await self.set_present(service, not gone)

        async def foreign_override(held: bool) -> None:
            await self.foreign_override(float(step.value) if held else None)

        return {
            "broker_down": ("broker", self.broker_down),
            "service_leaves": (service, service_gone),
            "frozen": ("heartbeat", self.set_silent),
            "heartbeat_stop": ("heartbeat", self.heartbeat_stopped),
            # hub4 is the resource: another tool's override and hub4 leaving do not overlap.
            "foreign_override": (HUB4, foreign_override),
        }

    async def foreign_override(self, value: Optional[float]) -> None:
        """Another tool (Dynamic ESS, scheduled charging) takes the override with ``value``,
        rewriting it so it never expires, or (None) lets it go with -1."""
        if value is not None:
            self.foreign = asyncio.ensure_future(self.hold_foreign(value))
            return
        if self.foreign is not None:
            self.foreign.cancel()
            await asyncio.gather(self.foreign, return_exceptions=True)
            self.foreign = None
        await self.set_override(-1.0, "foreign")

    async def hold_foreign(self, value: float) -> None:
        while True:
            await self.set_override(value, "foreign")
            await asyncio.sleep(FOREIGN_REFRESH_S)

    async def set_override(self, value: float, who: str) -> None:
        at = await self.on_gx(OVERRIDE, value)
        if at is not None:
            self.override_events.append((at, value, who))

    async def garbage(self, item: paths.VenusItem) -> None:
        if item.service in self.absent:
            return
        if self.db is not None:
            # The fake D-Bus keeps the garbage as the item's value: put the good one back at
            # once (no yield in between, so no write of venus-prio's is overwritten).
            good = self.db.fake.value(item)
            await self.db.send_garbage(item)
            self.db.fake.set_value(item, good)
        if self.mq is not None:
            await self.mq.send_garbage(item)  # N/ only: the value the fake holds stays good

    async def ha_command(self, mode: str) -> bool:
        topic = state_topics(state_prefix(HomeAssistantConfig(), portal_id=PID)).set_mode
        try:
            async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
                await client.publish(topic, mode.encode())
        except aiomqtt.MqttError:
            return False
        return True

    async def apply(self, step: Step) -> None:
        """Carry out one step; count it when it could be applied."""
        kind = step.kind
        applied = True
        if kind == "pv":
            await self.on_gx(paths.PV_DC, step.value)
        elif kind == "soc":
            await self.on_gx(paths.SOC, step.value)
        elif kind in self.episodes_of(step):
            resource, fault = self.episodes_of(step)[kind]
            applied = self.episode(resource, step.duration_s, fault)
        elif kind == "garbage":
            await self.garbage(GARBAGE_ITEMS[int(step.value)])
        elif kind in ("sigkill", "sigterm"):
            applied = self.running_process() is not None
            await self.stop(kind)
            if applied:
                self.check_after_stop()
            await asyncio.sleep(step.duration_s)
            await self.start()
        elif kind == "user_write":
            value = float(step.value)
            # Setting the value the GX holds signals nothing: nobody could see it.
            applied = SETTING.service not in self.absent and value != self.user_values[-1]
            if applied:
                at = await self.on_gx(SETTING, value)
                assert at is not None
                self.user_values.append(value)
                self.user_events.append((at, value))
        elif kind == "ha_command":
            applied = self.broker.running and await self.ha_command(str(step.value))
        if applied and kind in FAULTS:
            self.faults[kind] += 1

    async def heal(self) -> None:
        """Let every fault still going run its drawn course (each ends by healing itself)."""
        if self.episodes:
            await asyncio.wait(self.episodes)
        self.episodes.clear()

    # -- the round ---------------------------------------------------------------------

    async def run(self) -> None:
        self.broker.stop()
        self.broker.start()  # fresh: nothing retained from an earlier round
        self.write_config()
        values = plant()
        async with contextlib.AsyncExitStack() as stack:
            variant, expiry = self.variant, OVERRIDE_EXPIRY_S
            mq = await stack.enter_async_context(
                mqtt_gx(self.broker, values, override=variant, override_expiry_s=expiry)
            )
            self.mq = mq
            if self.options.transport == "auto":
                assert self.daemon is not None
                db = await stack.enter_async_context(
                    dbus_gx(
                        self.daemon.address,
                        self.options.backend,
                        values,
                        override=variant,
                        override_expiry_s=expiry,
                    )
                )
                self.db = db
                self.mirror = OverrideMirror(mq, db, hub4_gone=lambda: HUB4 in self.absent)
                await stack.enter_async_context(running(self.mirror.run()))
            await stack.enter_async_context(running(self.poll_journal()))
            await stack.enter_async_context(running(self.observe_home_assistant()))
            await self.start()
            if not await self.wait_seen_gx():
                self.violation("venus-prio did not see the GX at the start")
            for step in self.steps:
                await asyncio.sleep(step.gap_s)
                await self.apply(step)
            await self.heal()
            await self.finish()
            if self.mirror is not None:
                await self.mirror.sync()
            self.check_end()

    async def finish(self) -> None:
        """Heal, let venus-prio see the GX again, stop it with SIGTERM."""
        if self.running_process() is None:
            await self.start()
        if not await self.wait_seen_gx():
            self.violation(f"venus-prio did not see the GX within {SEE_GX_TIMEOUT_S:g}s")
        await asyncio.sleep(SETTLE_S)
        await self.stop("final")

    # -- invariants ----------------------------------------------------------------------

    def is_users(self, value: float) -> bool:
        return any(math.isclose(value, user) for user in self.user_values)

    def check_after_stop(self) -> None:
        """Right after a kill or a stop: the journal parses and a clean one matches the GX; an
        override of venus-prio's still in force is in the journal, and a stop released it."""
        journal = load_journal(journal_path(self.state_dir))
        inc = self.incarnations[-1]
        shown = [d.override_w for d in self.doors]
        ours = [v for v in shown if v is not None and v >= 0 and self.foreign is None]
        if ours and (journal is None or not journal.override_held):
            self.violation(f"the override holds venus-prio's {ours[0]:g} W, the journal says not")
        if ours and inc.how == "sigterm" and inc.code == 0:
            self.violation(f"a SIGTERM left venus-prio's override {ours[0]:g} W in force")
        if journal is None or not journal.clean:
            return
        for value in self.gx_values():
            if not self.is_users(value):
                self.violation(
                    f"the journal is clean (baseline {journal.baseline_w:g} W) but the GX holds "
                    f"{value:g} W, a value of venus-prio's"
                )

    def check_end(self) -> None:
        latest = self.user_values[-1]
        final = self.incarnations[-1]
        if final.code != 0:
            self.violation(f"the final stop exited {final.code}:\n{tail(final.text())}")
        # 1. The user's latest value on the GX (one value, whichever door it is read through).
        values = self.gx_values()
        if len(set(values)) > 1:
            self.violation(f"the two doors of the GX disagree: {values}")
        if not math.isclose(values[0], latest):
            self.violation(f"the GX ends with {values[0]:g} W, the user's latest is {latest:g} W")
        # 2. Nothing outside [0, max] but a user's value.
        for door, record in self.received():
            value = record.value
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number:
                self.violation(f"a write of {value!r} over {door}")
            elif not 0 <= float(value) <= MAX_W and not self.is_users(float(value)):
                self.violation(f"a write of {value:g} W over {door}, outside [0, {MAX_W:g}]")
        # 3. No value of venus-prio's taken for the baseline.
        seen = list(self.baselines_seen)
        for inc in self.incarnations:
            text = inc.text()
            seen += [
                (f"{inc.log.name}: learnt from {m[1]}", float(m[0])) for m in LEARNT.findall(text)
            ]
            seen += [(f"{inc.log.name}: adopted", float(v)) for v in ADOPTED.findall(text)]
        for where, value in seen:
            if not self.is_users(value):
                self.violation(f"{value:g} W, never the user's, taken as the baseline ({where})")
        # 4. The journal: clean, the user's value, the GX's value.
        journal = load_journal(journal_path(self.state_dir))
        if journal is None:
            self.violation("no journal after the final stop")
        elif not (
            journal.clean
            and journal.portal_id == PID
            and journal.baseline_w is not None
            and math.isclose(journal.baseline_w, latest)
            and (  # None: venus-prio never wrote the setting (it steered the override)
                journal.last_written_w is None
                or all(math.isclose(journal.last_written_w, v) for v in self.gx_values())
            )
            and not journal.override_held
        ):
            self.violation(f"the journal after the final stop does not match the GX: {journal}")
        # 5. Every logged write received once, nothing received that was not logged.
        self.check_writes()
        # 6. The override: released, only sane values, never over another tool's, never two caps.
        self.check_override()

    def check_override(self) -> None:
        writes = self.received(OVERRIDE)
        if self.options.actuator == "setting":
            for door, record in writes:
                self.violation(
                    f"a write of {record.value!r} to the override over {door} with "
                    "actuator.kind setting"
                )
            return
        for gx in self.doors:
            shown = gx.override_w
            if self.variant != "absent" and shown != -1:
                self.violation(f"the override shows {shown} after the final stop ({gx.label})")
        for door, record in writes:
            value = record.value
            number = value is None or (
                isinstance(value, (int, float)) and not isinstance(value, bool)
            )
            if not number or not (override_value(value) == -1 or 0 <= value <= MAX_W):
                self.violation(
                    f"a write of {value!r} to the override over {door}, "
                    f"neither -1 nor in [0, {MAX_W:g}]"
                )
        spans = held_spans(self.override_timeline(), self.lapse)
        for door, record in writes:
            foreign = held_at(spans, "foreign", record.at)
            if foreign is not None and record.at - foreign[0] > CROSSING_S:
                self.violation(
                    f"venus-prio wrote {record.value!r} to the override over {door} while another "
                    f"tool's {foreign[1]:g} W held it (for {record.at - foreign[0]:.1f}s)"
                )
            setting = self.setting_at(record.at)
            if record.accepted and override_value(record.value) >= 0 and not self.is_users(setting):
                self.violation(
                    f"venus-prio wrote {record.value!r} to the override over {door} while its "
                    f"{setting:g} W held the setting: two caps in force"
                )
        for door, record in self.received(SETTING):
            ours = held_at(spans, "venus-prio", record.at)
            number = isinstance(record.value, (int, float)) and not isinstance(record.value, bool)
            if ours is not None and not (number and self.is_users(float(record.value))):
                self.violation(
                    f"venus-prio wrote {record.value!r} to the setting over {door} while its "
                    f"override {ours[1]:g} W was in force: two caps in force"
                )

    def override_timeline(self) -> List[Tuple[float, float, str]]:
        """Every change of the override, in time order: (when, value, who)."""
        events = [
            (record.at, override_value(record.value), "venus-prio")
            for _, record in self.received(OVERRIDE)
            if record.accepted
        ]
        return sorted(events + self.override_events)

    def lapse(self, at: float, value: float) -> float:
        """Return when ``value`` written to the override at ``at`` falls back to -1 by itself."""
        register = OverrideRegister(variant=self.variant, expiry_s=OVERRIDE_EXPIRY_S)
        register.write(value, at)
        change = register.next_change(at)
        return math.inf if change is None else change

    def setting_at(self, at: float) -> float:
        """Return the value the setting held just before ``at`` (the user's, or a write)."""
        events = [(r.at, r.value) for _, r in self.received(SETTING) if r.accepted]
        events += self.user_events
        before = [float(value) for t, value in sorted(events) if t < at]
        return before[-1] if before else BASELINE

    def check_writes(self) -> None:
        received = self.received()
        starts = [inc.started for inc in self.incarnations] + [math.inf]
        for number, inc in enumerate(self.incarnations):
            window = [
                (door, r) for door, r in received if starts[number] <= r.at < starts[number + 1]
            ]
            text = inc.text()
            logged = [float(a or b) for a, b in WROTE.findall(text)]
            restored = [float(v) for v in RESTORED.findall(text)]
            problems = align(
                logged,
                window,
                restore=restored[-1] if restored else None,
                killed=inc.how == "sigkill",
                broker_stops=self.broker_stops,
            )
            for problem in problems:
                self.violation(f"{inc.log.name}: {problem}")

    def result(self, seconds: float) -> RoundResult:
        switches = sum(len(SWITCHED.findall(inc.text())) for inc in self.incarnations)
        return RoundResult(
            index=self.index,
            faults=self.faults,
            violations=self.violations,
            writes=len(self.received(SETTING)) + len(self.received(OVERRIDE)),
            variant=self.variant,
            switches=switches,
            seconds=seconds,
        )


Span = Tuple[float, float, float, str]  # (from, until, value, who) an override was in force


def held_spans(
    events: Sequence[Tuple[float, float, str]], lapse: Callable[[float, float], float]
) -> List[Span]:
    """Return when whose override was in force, from its changes (when, value, who) in time
    order; ``lapse(at, value)``: when a value written at ``at`` falls back to -1 by itself.
    One holder's rewrites make one span (its first value and start)."""
    spans: List[Span] = []
    for index, (at, value, who) in enumerate(events):
        if value < 0:
            continue
        until = events[index + 1][0] if index + 1 < len(events) else math.inf
        until = min(until, lapse(at, value))
        if spans and spans[-1][3] == who and spans[-1][1] >= at:
            spans[-1] = (spans[-1][0], until, spans[-1][2], who)
        else:
            spans.append((at, until, value, who))
    return spans


def held_at(spans: Sequence[Span], who: str, at: float) -> Optional[Tuple[float, float]]:
    """Return (since, value) when ``who``'s override was in force just before ``at``."""
    for start, until, value, holder in spans:
        if holder == who and start < at <= until:
            return start, value
    return None


def align(
    logged: Sequence[float],
    received: Sequence[Tuple[str, ReceivedWrite]],
    *,
    restore: Optional[float],
    killed: bool,
    broker_stops: Sequence[float],
) -> List[str]:
    """Match the writes one venus-prio process logged with those the GX received, in order.

    A logged write may be missing only when the broker was killed between the neighbouring
    received writes (QoS 0: a publish in the dying broker's buffers is gone). A received write
    that matches no logged one is allowed only as the restore's value (``write_confirmed`` logs
    the attempts it could not confirm, not the one it could) or as the last one of a SIGKILLed
    process (killed between the write and its log line).
    """
    problems: List[str] = []
    at = 0
    previous_t = -math.inf
    for index, (door, record) in enumerate(received):
        value = record.value
        match = next((j for j in range(at, len(logged)) if _same(logged[j], value)), None)
        if match is not None:
            lost = logged[at:match]
            if lost and not any(previous_t <= t <= record.at for t in broker_stops):
                problems.append(f"logged writes {lost} never reached the GX")
            at = match + 1
        elif (restore is not None and _same(restore, value)) or (
            killed and index == len(received) - 1
        ):
            pass
        else:
            problems.append(f"the GX received {value!r} W over {door} that venus-prio never logged")
        previous_t = record.at
    lost = logged[at:]
    if lost and not any(previous_t <= t for t in broker_stops):
        problems.append(f"logged writes {lost} never reached the GX")
    return problems


def _same(a: float, b: Any) -> bool:
    return isinstance(b, (int, float)) and not isinstance(b, bool) and math.isclose(a, float(b))


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


# -- the campaign --------------------------------------------------------------------------------


@dataclasses.dataclass
class CampaignResult:
    seed: int
    rounds: List[RoundResult]
    seconds: float

    @property
    def faults(self) -> int:
        return sum(sum(r.faults.values()) for r in self.rounds)

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.rounds)

    def summary(self) -> str:
        return (
            f"{len(self.rounds)} rounds, {self.faults:,} faults, "
            f"{self.violations} invariant violations (seed {self.seed})"
        )


async def run_round(seed: int, index: int, options: Options, lab: Lab) -> RoundResult:
    rng = round_rng(seed, index)
    variant, steps = plan_round(rng, options)
    round_dir = lab.workdir / f"round-{index}"
    round_dir.mkdir(parents=True, exist_ok=True)
    one = Round(
        index,
        steps,
        options=options,
        lab=dataclasses.replace(lab, workdir=round_dir),
        variant=variant,
    )
    started = time.monotonic()
    try:
        await one.run()
    except Exception as exc:  # the campaign goes on; the round is reported with its replay line
        one.violation(f"the round itself failed: {exc!r}")
    finally:
        for inc in one.incarnations:  # never leave a venus-prio behind
            if inc.process.returncode is None:
                inc.process.kill()
                await inc.process.wait()
    return one.result(time.monotonic() - started)


def run_campaign(
    seed: int,
    rounds: Sequence[int],
    options: Options,
    lab: Lab,
    report: Callable[[str], None],
    *,
    verbose: bool = False,
) -> CampaignResult:
    """Run ``rounds`` of the campaign ``seed``; report each violation with its replay line."""
    started = time.monotonic()
    results: List[RoundResult] = []
    for index in rounds:
        result = asyncio.run(run_round(seed, index, options, lab))
        results.append(result)
        if verbose:
            report(
                f"round {index}: {sum(result.faults.values())} faults {dict(result.faults)}, "
                f"{result.writes} writes, {result.switches} switches, hub4 override "
                f"{result.variant}, {result.seconds:.1f}s"
            )
        for violation in result.violations:
            report(f"VIOLATION seed {seed} round {index}: {violation}")
        if result.violations:
            report(f"  replay: {replay_line(seed, index, options)}")
    return CampaignResult(seed=seed, rounds=results, seconds=time.monotonic() - started)


def replay_line(seed: int, index: int, options: Options) -> str:
    """Return the command that replays round ``index`` of campaign ``seed`` with ``options``."""
    line = f"python tests/faults/campaign.py --seed {seed} --round {index}"
    default = Options()
    for name in ("transport", "actuator", "backend"):
        if getattr(options, name) != getattr(default, name):
            line += f" --{name} {getattr(options, name)}"
    if options.faults != default.faults:
        line += " --faults {} {}".format(*options.faults)
    return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/faults/campaign.py", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--round", type=int, default=None, help="replay this round only")
    parser.add_argument("--transport", choices=("auto", "mqtt"), default="auto")
    parser.add_argument("--actuator", choices=("setting", "override", "auto"), default="setting")
    parser.add_argument("--backend", choices=("dbus_fast", "dbus_next"), default="dbus_fast")
    parser.add_argument(
        "--faults",
        type=int,
        nargs=2,
        default=Options.faults,
        metavar=("MIN", "MAX"),
        help="faults per round",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and journals here")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per round")
    args = parser.parse_args(argv)
    from tests.integration.dbus_fixtures import DbusDaemon, dbus_daemon_binary  # noqa: PLC0415

    options = Options(
        transport=args.transport,
        actuator=args.actuator,
        backend=args.backend,
        faults=(args.faults[0], args.faults[1]),
    )
    binary = mosquitto_binary()
    if binary is None:
        print("mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 2
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="vp-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(binary, workdir)
    daemon: Optional[DbusDaemon] = None
    rounds = [args.round] if args.round is not None else list(range(args.rounds))
    try:
        if args.transport == "auto":
            dbus_binary = dbus_daemon_binary()
            if dbus_binary is None:
                print("dbus-daemon is not installed (apt-get install dbus)", file=sys.stderr)
                return 2
            daemon = DbusDaemon(dbus_binary)
            daemon.start()
        broker.start()
        lab = Lab(broker, daemon, workdir)
        result = run_campaign(
            args.seed,
            rounds,
            options,
            lab,
            functools.partial(print, flush=True),
            verbose=args.verbose,
        )
    finally:
        broker.close()
        if daemon is not None:
            daemon.cleanup()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{result.summary()} in {result.seconds:.0f}s")
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
