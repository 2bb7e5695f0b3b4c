"""A "GX harness": one small interface over the two fake GXs, for tests that run on every transport.

``MqttGx`` drives a ``FakeGx`` on a real Mosquitto broker, ``DbusGx`` a ``FakeVenus`` on a real
dbus-daemon (with dbus-fast or dbus-next). Both start from the same plant (``PLANT``: an ESS
just above its 10 % floor with 1000 W of PV and the user's 2500 W), so the same test expects the
same writes on either. Both serve the hub4 override (``override`` variant and expiry, as in
``sim.override``) and log every write they receive. Also here: running the service in-process
or as ``python -m venus_prio``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import (
    Any,
    AsyncContextManager,
    AsyncIterator,
    Callable,
    Dict,
    List,
    Optional,
    Protocol,
    Type,
)

import aiomqtt
import pytest
import yaml

from tests.integration.conftest import Broker, connected, eventually, fake_gx_on
from venus_prio.app import serve
from venus_prio.config import (
    ActuatorConfig,
    BrokerConfig,
    Config,
    ControlConfig,
    DbusConfig,
    HomeAssistantConfig,
    VenusConfig,
    WritesConfig,
)
from venus_prio.fakes.dbus_gx import FakeHub4, FakeVenus
from venus_prio.fakes.mqtt_gx import DEFAULT_PORTAL_ID, FakeGx
from venus_prio.fakes.writelog import ReceivedWrite, WriteLog, writes_to
from venus_prio.journal import Journal, journal_path, load_journal
from venus_prio.model import Reason
from venus_prio.service import Service
from venus_prio.sim.plant import GX_RESET_PERIOD_S
from venus_prio.venus import flashmq, paths
from venus_prio.venus.dbus import DbusSource
from venus_prio.venus.mqtt import MqttSource
from venus_prio.venus.paths import VenusItem
from venus_prio.venus.source import GxSource, Source

PID = DEFAULT_PORTAL_ID
BASELINE = 2500.0
ROOT = Path(__file__).resolve().parents[2]

# The plant both fakes start from (values as each item's own type on the GX).
PLANT: Dict[VenusItem, Any] = {
    paths.SOC: 12.0,
    paths.ACTIVE_SOC_LIMIT: 10.0,
    paths.PV_DC: 1000.0,
    paths.DC_SYSTEM: None,
    paths.BATTERY_POWER: 0.0,
    paths.AC_INPUT_SOURCE: 1,
    paths.MIN_SOC_SETTING: 10.0,
    paths.BATTERY_LIFE_STATE: 1,
    paths.HUB4_MODE: 1,
    paths.DYNAMIC_ESS_MODE: 0,
    paths.MAX_DISCHARGE_POWER: BASELINE,
}


# control.md's worked example (the defaults are tuned elsewhere and may move).
CONTROL_MD: Dict[str, float] = {"pv_factor": 0.8, "pv_offset_w": 20.0, "half_power_fraction": 0.5}
DEADBAND_W = 100.0


def plant(**overrides: Any) -> Dict[VenusItem, Any]:
    """Return ``PLANT`` with some items changed by field name (``soc=25.0``)."""
    values = dict(PLANT)
    by_field = {item.field: item for item in PLANT}
    for name, value in overrides.items():
        values[by_field[name]] = value
    return values


def control_config(
    *,
    stale_after_s: float = 5.0,
    refresh_s: float = 1.0,
    ramp_w_per_min: float = 200.0,
) -> ControlConfig:
    return ControlConfig(
        max_inverter_power_w=3000.0,
        tick_s=0.1,
        stale_after_s=stale_after_s,
        refresh_s=refresh_s,
        ramp_w_per_min=ramp_w_per_min,
        # control.md's numbers rather than the tuned defaults: share = 0.8 * PV - 20.
        pv_factor=CONTROL_MD["pv_factor"],
        pv_offset_w=CONTROL_MD["pv_offset_w"],
        half_power_fraction=CONTROL_MD["half_power_fraction"],
    )


def venus_config(
    transport: str,
    *,
    broker: Optional[Broker] = None,
    dbus_address: Optional[str] = None,
    dbus_backend: str = "auto",
) -> VenusConfig:
    """Return test timings for ``transport``; the broker and the bus as far as given.

    ``dbus_backend`` is ``venus.dbus.backend``: ``dbus-fast``, ``dbus-next`` or ``auto``.
    """
    return VenusConfig(
        transport=transport,
        broker=BrokerConfig()
        if broker is None
        else BrokerConfig(host=broker.host, port=broker.port),
        portal_id=PID,
        keepalive_interval_s=1.0,
        full_publish_timeout_s=2.0,
        # Long: a lost heartbeat must not trigger full republishes during these tests.
        heartbeat_timeout_s=30.0,
        reconnect_max_s=1.0,
        dbus=DbusConfig(address=dbus_address, backend=dbus_backend),
    )


def write_yaml(path: Path, data: Dict[str, Any]) -> Path:
    """Write ``data`` as a YAML config file to ``path`` and return the path."""
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def config_data(
    venus: VenusConfig,
    state_dir: Path,
    *,
    homeassistant: Optional[Dict[str, Any]] = None,
    actuator: Optional[ActuatorConfig] = None,
) -> Dict[str, Any]:
    """Return a config file's content for ``venus`` (what ``venus_config`` makes).

    ``homeassistant``: the file's ``homeassistant:`` section (none: disabled); ``actuator``: the
    ``actuator:`` section (None: left out, the default ``auto``).
    """
    venus_data: Dict[str, Any] = {
        "transport": venus.transport,
        "host": venus.broker.host,
        "port": venus.broker.port,
        "portal_id": venus.portal_id,
        "keepalive_interval_s": venus.keepalive_interval_s,
        "full_publish_timeout_s": venus.full_publish_timeout_s,
        "heartbeat_timeout_s": venus.heartbeat_timeout_s,
        "reconnect_max_s": venus.reconnect_max_s,
    }
    if venus.dbus.address is not None:
        venus_data["dbus"] = {"address": venus.dbus.address, "backend": venus.dbus.backend}
    data: Dict[str, Any] = {
        "control": {
            "max_inverter_power_w": 3000,
            "tick_s": 0.1,
            "stale_after_s": 5,
            "refresh_s": 1,
            **CONTROL_MD,
        },
        "writes": {"deadband_w": DEADBAND_W, "min_increase_interval_s": 60},
        "venus": venus_data,
        "homeassistant": {"enabled": False} if homeassistant is None else homeassistant,
        "state_dir": str(state_dir),
        "log_level": "INFO",
    }
    if actuator is not None:
        data["actuator"] = dataclasses.asdict(actuator)
    return data


# What a test about the setting's write policy, journal or restore steers through.
SETTING = ActuatorConfig(kind="setting")


def mqtt_config_file(
    broker: Broker,
    state_dir: Path,
    path: Path,
    *,
    homeassistant: Optional[Dict[str, Any]] = None,
    actuator: Optional[ActuatorConfig] = None,
) -> Path:
    """Write a config file for ``python -m venus_prio`` on ``broker`` to ``path``."""
    venus = venus_config("mqtt", broker=broker)
    data = config_data(venus, state_dir, homeassistant=homeassistant, actuator=actuator)
    return write_yaml(path, data)


class FakeDevice(Protocol):
    """What both fakes (``FakeGx``, ``FakeVenus``) show of the hub4 override and their writes."""

    @property
    def override_w(self) -> Optional[float]: ...

    @property
    def write_log(self) -> WriteLog: ...

    def override_in_force(self) -> float: ...


class GxHarness(abc.ABC):
    """A fake GX over one transport: set values, read the setting, silence it, write to it."""

    transport: str  # venus.transport for the service: "mqtt" or "dbus"
    label: str  # the test id: "mqtt", "dbus-fast", "dbus-next"
    source_class: Type[GxSource]  # the transport's source

    def __init__(self, device: FakeDevice) -> None:
        self.device = device

    @abc.abstractmethod
    async def set_value(self, item: VenusItem, value: Any) -> None:
        """Change an item on the GX the way the plant would (the GX announces the change)."""

    @property
    @abc.abstractmethod
    def setting(self) -> float:
        """Return MaxDischargePower as the GX holds it now."""

    @abc.abstractmethod
    def written(self) -> List[float]:
        """Return every MaxDischargePower write the GX accepted, in order."""

    @abc.abstractmethod
    async def set_silent(self, silent: bool) -> None:
        """Make the GX stop (or resume) proving it is alive; writes are still accepted."""

    @abc.abstractmethod
    async def set_present(self, service: str, present: bool) -> None:
        """Make ``system`` or ``settings`` leave the GX (its items absent) or come back."""

    @abc.abstractmethod
    async def external_write(self, value_w: float) -> None:
        """Change MaxDischargePower as another tool (the GUI) would."""

    @property
    def override_w(self) -> Optional[float]:
        """Return the hub4 override the GX shows now (-1 none; None: no such path)."""
        return self.device.override_w

    def override_in_force(self) -> float:
        """Return the override cap the inverter obeys now (-1 none; ``ignored``: always -1)."""
        return self.device.override_in_force()

    @abc.abstractmethod
    def hold_override_writes(self) -> None:
        """Keep the override writes the GX receives on their way: not applied until
        ``land_override_writes`` (a reset or another writer can overtake them)."""

    @abc.abstractmethod
    def held_override_writes(self) -> List[Optional[float]]:
        """Return the override writes held on their way, in order (None: null)."""

    @abc.abstractmethod
    async def land_override_writes(self) -> None:
        """Apply the held override writes in order; hold no more."""

    def received(self) -> List[ReceivedWrite]:
        """Return every write the GX received (any path, accepted or dropped), in order."""
        return self.device.write_log.entries

    def written_to(self, item: VenusItem, *, accepted_only: bool = False) -> List[Any]:
        """Return the values written to ``item`` as the GX received them, in order."""
        return [w.value for w in writes_to(self.received(), item, accepted_only=accepted_only)]

    @abc.abstractmethod
    async def send_garbage(self, item: VenusItem) -> None:
        """Announce malformed values of ``item``; venus-prio must keep its last good value."""

    @abc.abstractmethod
    def venus(self) -> VenusConfig:
        """Return the ``venus:`` config that reaches this GX."""

    def make_source(self, config: Config) -> Source:
        """Return the transport's source for ``config`` (inside the running loop)."""
        return self.source_class(venus=config.venus, control=config.control)

    def env(self) -> Dict[str, str]:
        """Return the environment for ``python -m venus_prio`` talking to this GX."""
        return subprocess_env()

    def config(
        self,
        state_dir: Path,
        *,
        stale_after_s: float = 5.0,
        refresh_s: float = 1.0,
        ramp_w_per_min: float = 200.0,
        min_increase_interval_s: float = 60.0,
        homeassistant: Optional[HomeAssistantConfig] = None,
        actuator: Optional[ActuatorConfig] = None,
    ) -> Config:
        """Return a service config for this GX with test timings (no ``homeassistant``: off;
        ``actuator``: None is the default ``auto``)."""
        return Config(
            control=control_config(
                stale_after_s=stale_after_s, refresh_s=refresh_s, ramp_w_per_min=ramp_w_per_min
            ),
            writes=WritesConfig(
                deadband_w=DEADBAND_W, min_increase_interval_s=min_increase_interval_s
            ),
            venus=self.venus(),
            homeassistant=homeassistant or HomeAssistantConfig(enabled=False),
            state_dir=str(state_dir),
            actuator=ActuatorConfig() if actuator is None else actuator,
        )

    def config_file(
        self, state_dir: Path, path: Path, *, actuator: Optional[ActuatorConfig] = None
    ) -> Path:
        """Write a config file for ``python -m venus_prio`` to ``path``."""
        return write_yaml(path, config_data(self.venus(), state_dir, actuator=actuator))

    async def run_until(
        self,
        config_file: Path,
        log_file: Path,
        *,
        stop: signal.Signals,
        done: Optional[Callable[[], bool]] = None,
        what: str = "steering",
    ) -> int:
        """Run ``python -m venus_prio run`` on this GX until ``done()`` holds (``what``; by
        default: the GX holds 750 W, ``PLANT``'s PV share), then send it ``stop``; return its
        exit code."""
        process = await start_run(config_file, log_file, self.env())
        try:
            await eventually(done or (lambda: self.setting == 750.0), timeout=20.0, what=what)
        finally:
            if process.returncode is None:
                process.send_signal(stop)
        return await wait_exit(process, log_file)


class MqttGx(GxHarness):
    """A ``FakeGx`` (dbus-flashmq) on a real broker."""

    transport = "mqtt"
    label = "mqtt"
    source_class = MqttSource

    def __init__(self, gx: FakeGx, broker: Broker) -> None:
        super().__init__(gx)
        self.gx = gx
        self.broker = broker

    async def set_value(self, item: VenusItem, value: Any) -> None:
        await self.gx.set_value(item, value)

    @property
    def setting(self) -> float:
        return self.gx.setting

    def written(self) -> List[float]:
        suffix = paths.MAX_DISCHARGE_POWER.topic_suffix()
        return [w.value for w in self.gx.writes if w.suffix == suffix]

    async def set_silent(self, silent: bool) -> None:
        self.gx.heartbeat_enabled = not silent
        self.gx.answer_reads = not silent

    async def set_present(self, service: str, present: bool) -> None:
        if not present:
            await self.gx.remove_service(service)
            return
        for suffix, entry in list(self.gx.items.items()):
            if suffix.startswith(f"{service}/") and not entry.present:
                await self.gx.set_value(suffix, entry.value)

    async def external_write(self, value_w: float) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as gui:
            await gui.publish(
                flashmq.w_topic(PID, paths.MAX_DISCHARGE_POWER.topic_suffix()),
                json.dumps({"value": value_w}).encode(),
            )

    async def send_garbage(self, item: VenusItem) -> None:
        for payload in (b'{"value": "abc"}', b"not json", b'{"value": [1, 2]}'):
            await self.gx.publish_raw(item.topic_suffix(), payload)

    def hold_override_writes(self) -> None:
        self.gx.hold_override_writes = True

    def held_override_writes(self) -> List[Optional[float]]:
        return list(self.gx.held_override_writes)

    async def land_override_writes(self) -> None:
        await self.gx.land_held_override_writes()

    def venus(self) -> VenusConfig:
        return venus_config("mqtt", broker=self.broker)


class DbusGx(GxHarness):
    """A ``FakeVenus`` (system + localsettings) on a real dbus-daemon."""

    transport = "dbus"
    source_class = DbusSource

    def __init__(self, fake: FakeVenus, *, address: str, backend: str) -> None:
        super().__init__(fake)
        self.fake = fake
        self.address = address
        self.backend = backend
        self.label = backend.replace("_", "-")  # also venus.dbus.backend: the run uses it

    async def set_value(self, item: VenusItem, value: Any) -> None:
        self.fake.set_value(item, value)

    @property
    def setting(self) -> float:
        return float(self.fake.value(paths.MAX_DISCHARGE_POWER))

    def written(self) -> List[float]:
        settings = self.fake.service(paths.SETTINGS)
        return [
            float(value)
            for path, value, code in settings.set_calls
            if path == paths.MAX_DISCHARGE_POWER.path and code == 0
        ]

    async def set_silent(self, silent: bool) -> None:
        # A hung systemcalc: takes the liveness GetValue and never answers.
        self.fake.service(paths.SYSTEM).frozen = silent

    async def set_present(self, service: str, present: bool) -> None:
        if present:
            await self.fake.acquire(service)
        else:
            await self.fake.release(service)

    async def external_write(self, value_w: float) -> None:
        # Another process's SetValue ends up here too: localsettings stores and signals it.
        self.fake.set_value(paths.MAX_DISCHARGE_POWER, float(value_w))

    async def send_garbage(self, item: VenusItem) -> None:
        for garbage in ("abc", [1, 2], float("nan")):
            self.fake.set_value(item, garbage)

    def _hub4(self) -> FakeHub4:
        hub4 = self.fake.service(paths.HUB4)
        assert isinstance(hub4, FakeHub4)
        return hub4

    def hold_override_writes(self) -> None:
        self._hub4().hold_writes = True

    def held_override_writes(self) -> List[Optional[float]]:
        return list(self._hub4().held_writes)

    async def land_override_writes(self) -> None:
        self._hub4().land_held_writes()

    def venus(self) -> VenusConfig:
        return venus_config("dbus", dbus_address=self.address, dbus_backend=self.label)


@contextlib.asynccontextmanager
async def mqtt_gx(
    broker: Broker,
    values: Dict[VenusItem, Any],
    *,
    override: str = "honoured",
    override_expiry_s: float = 60.0,
) -> AsyncIterator[MqttGx]:
    """Run a ``FakeGx`` on ``broker`` holding ``values`` while entered."""
    gx = fake_gx_on(broker, override=override, override_expiry_s=override_expiry_s)
    for item, value in values.items():
        gx.items[item.topic_suffix()].value = value
    async with connected(gx):
        yield MqttGx(gx, broker)


@contextlib.asynccontextmanager
async def dbus_gx(
    address: str,
    backend: str,
    values: Dict[VenusItem, Any],
    *,
    override: str = "honoured",
    override_expiry_s: float = 60.0,
) -> AsyncIterator[DbusGx]:
    """Run a ``FakeVenus`` on the bus at ``address`` holding ``values`` while entered."""
    by_service: Dict[str, Dict[str, Any]] = {paths.SYSTEM: {}, paths.SETTINGS: {}}
    for item, value in values.items():
        by_service[item.service][item.path] = value
    fake = FakeVenus(
        address=address,
        backend=backend,
        system=by_service[paths.SYSTEM],
        settings=by_service[paths.SETTINGS],
        override=override,
        override_expiry_s=override_expiry_s,
    )
    async with fake:
        yield DbusGx(fake, address=address, backend=backend)


async def after_a_gx_reset() -> None:
    """Return just after a 5 s boundary of the fakes' ``reset_every_5s`` (they count on the
    monotonic clock, shared by every process here), so an override written now holds ~4 s."""
    now = asyncio.get_running_loop().time()
    phase = now % GX_RESET_PERIOD_S
    if phase > 0.5:
        await asyncio.sleep(GX_RESET_PERIOD_S - phase + 0.1)


class Mirror:
    """Both fakes stand for one GX (one GX seen through two doors): copy each accepted write.

    ``sync`` copies what either fake accepted since the last call to the other and returns
    whether it copied anything; when it returns False it did not yield to the event loop, so a
    caller may then change both fakes before any new write can slip in between.
    """

    def __init__(self, mqtt: MqttGx, dbus: DbusGx) -> None:
        self.mqtt = mqtt
        self.dbus = dbus
        self._seen_mqtt = 0
        self._seen_dbus = 0

    async def sync(self) -> bool:
        copied = False
        for value in self.mqtt.written()[self._seen_mqtt :]:
            self._seen_mqtt += 1
            await self.dbus.set_value(paths.MAX_DISCHARGE_POWER, float(value))
            copied = True
        for value in self.dbus.written()[self._seen_dbus :]:
            self._seen_dbus += 1
            await self.mqtt.set_value(paths.MAX_DISCHARGE_POWER, float(value))
            copied = True
        return copied

    async def run(self) -> None:
        """Keep both fakes in step until cancelled."""
        while True:
            await self.sync()
            await asyncio.sleep(0.01)


async def set_both(mqtt: MqttGx, dbus: DbusGx, item: VenusItem, value: Any) -> None:
    """Change an item on the GX seen through both doors."""
    await mqtt.set_value(item, value)
    await dbus.set_value(item, value)


# -- the service, in-process and as a command ------------------------------------------------


@contextlib.asynccontextmanager
async def steering(
    config: Config, source: Source, *, publish: bool = False
) -> AsyncIterator[Service]:
    """Run a Service over ``source``; stop it (restoring the baseline) at the end.

    ``publish``: with its Home Assistant publisher too (when enabled), as ``venus-prio run``.
    """
    service = Service(config=config, source=source)
    task = asyncio.ensure_future(serve(service, config) if publish else service.run())
    try:
        yield service
    finally:
        service.request_stop()
        code = await asyncio.wait_for(task, 15.0)
        assert code == 0


@contextlib.asynccontextmanager
async def steered(
    fake: GxHarness, config: Config, *, publish: bool = False
) -> AsyncIterator[Service]:
    """Run a Service over ``fake``'s own source (``publish`` as in ``steering``); enter once the
    GX holds 750 W, ``PLANT``'s PV share: control.md's 0.8 * 1000 - 20, down to the 50 W step."""
    async with steering(config, fake.make_source(config), publish=publish) as service:
        await eventually(lambda: fake.setting == 750.0, what="the PV share written")
        yield service


def serving(config: Config) -> AsyncContextManager[Service]:
    """Run the service over MQTT and its publisher as ``venus-prio run`` does; stop at the end."""
    return steering(config, MqttSource(venus=config.venus, control=config.control), publish=True)


def assert_handed_back(fake: GxHarness, state_dir: Path, baseline: float = BASELINE) -> None:
    """Assert what a clean stop leaves: ``baseline`` on the GX, written back last, and a journal
    that says so and is clean."""
    assert fake.setting == baseline
    assert fake.written()[-1] == baseline
    journal = journal_at(state_dir)
    assert (journal.baseline_w, journal.last_written_w, journal.clean) == (baseline, baseline, True)


def reason_of(service: Service) -> Optional[Reason]:
    decision = service.status.decision
    return None if decision is None else decision.reason


def journal_at(state_dir: Path) -> Journal:
    journal = load_journal(journal_path(state_dir))
    assert journal is not None
    return journal


def subprocess_env() -> Dict[str, str]:
    """Return the environment for ``python -m venus_prio`` run from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def start_command(
    log_file: Path, *args: str, env: Optional[Dict[str, str]] = None
) -> asyncio.subprocess.Process:
    """Start ``python -m venus_prio <args>``; its output goes to ``log_file``."""
    with log_file.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "venus_prio",
            *args,
            stdout=log,
            stderr=log,
            env=subprocess_env() if env is None else env,
            cwd=str(ROOT),
        )


async def start_run(
    config_file: Path, log_file: Path, env: Optional[Dict[str, str]] = None
) -> asyncio.subprocess.Process:
    """Start ``python -m venus_prio run --config <file>``; its output goes to ``log_file``."""
    return await start_command(log_file, "run", "--config", str(config_file), env=env)


async def run_command(log_file: Path, *args: str) -> int:
    """Run ``python -m venus_prio <args>`` to the end; return its exit code."""
    process = await start_command(log_file, *args)
    return await wait_exit(process, log_file)


async def wait_exit(process: asyncio.subprocess.Process, log_file: Path) -> int:
    """Return the exit code; kill the process and fail when it does not exit in time."""
    try:
        return await asyncio.wait_for(process.wait(), 20.0)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"venus-prio did not exit:\n{log_file.read_text(encoding='utf-8')}")
