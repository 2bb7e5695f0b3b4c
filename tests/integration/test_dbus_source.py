"""DbusSource against a real dbus-daemon and the fake Venus services, with both D-Bus libraries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Callable, List, Tuple

import pytest

from tests.integration.conftest import ac_values_are, eventually, run_async
from tests.integration.dbus_fixtures import DbusDaemon
from venus_prio.config import ControlConfig, DbusConfig, SimConfig, VenusConfig
from venus_prio.errors import SourceUnavailable
from venus_prio.fakes.dbus_gx import FakeVenus
from venus_prio.fakes.mqtt_gx import plant_values
from venus_prio.fakes.writelog import read_write_log
from venus_prio.sim.plant import Plant, PlantParams
from venus_prio.tasks import cancel_and_wait
from venus_prio.venus import paths
from venus_prio.venus.dbus import BUS_ITEM, DbusSource, close_bus, load_backend, open_bus
from venus_prio.venus.source import write_confirmed

pytestmark = pytest.mark.integration  # and each test once per D-Bus library (``backend``)

REFRESH_S = 0.1
WAIT_S = 10.0  # a guard against hanging, not a performance limit
LOGGER = "venus_prio.venus.dbus"


def make_source(address: str, backend: str) -> DbusSource:
    dbus = DbusConfig(address=address, backend=backend.replace("_", "-"))  # venus.dbus.backend
    source = DbusSource(
        venus=VenusConfig(transport="dbus", dbus=dbus, reconnect_max_s=0.2),
        control=ControlConfig(max_inverter_power_w=3000.0, refresh_s=REFRESH_S),
    )
    assert source.backend == backend
    return source


@contextlib.asynccontextmanager
async def running(source: DbusSource) -> AsyncIterator[DbusSource]:
    """Run the source for the duration of the block, then cancel and await it."""
    task = asyncio.ensure_future(source.run())
    try:
        yield source
    finally:
        await cancel_and_wait([task])  # a single cancel can be lost (bpo-42130)
        assert task.cancelled(), "run() ended on its own instead of reconnecting"


async def connected_and_alive(source: DbusSource) -> None:
    await eventually(
        lambda: source.snapshot().connected and source.snapshot().alive_at is not None,
        what="source connected and alive",
    )


OnBus = Callable[..., AsyncContextManager[Tuple[FakeVenus, DbusSource]]]


@pytest.fixture
def on_bus(dbus_daemon: str, backend: str) -> OnBus:
    """Return ``factory(**FakeVenus options)``: the fake services and a running source on the
    bus, entered once the source is connected and alive."""

    @contextlib.asynccontextmanager
    async def fake_and_source(**options: Any) -> AsyncIterator[Tuple[FakeVenus, DbusSource]]:
        async with FakeVenus(address=dbus_daemon, backend=backend, **options) as fake, running(
            make_source(dbus_daemon, backend)
        ) as source:
            await connected_and_alive(source)
            yield fake, source

    return fake_and_source


Logged = Callable[..., int]


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Logged:
    """Return ``count(text, at_least=level)``: the source's log records that name ``text``."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    def count(text: str, at_least: int = logging.DEBUG) -> int:
        return sum(
            1
            for r in caplog.records
            if r.name == LOGGER and r.levelno >= at_least and text in r.getMessage()
        )

    return count


def test_initial_values_are_read(on_bus: OnBus) -> None:
    async def scenario() -> None:
        async with on_bus(
            system={paths.SOC.path: 47.5, paths.AC_INPUT_SOURCE.path: 240, "/Serial": "abc123"},
            settings={paths.MAX_DISCHARGE_POWER.path: 1800.0, paths.HUB4_MODE.path: 3},
        ) as (_, source):
            assert await source.wait_ready(WAIT_S)
            assert source.ready
            snap = source.snapshot()
            assert snap.soc == 47.5
            assert snap.active_soc_limit == 10.0
            assert snap.pv_dc_w == 800.0
            assert snap.dc_system_w == 40.0
            assert snap.battery_power_w == 120.0
            assert snap.ac_input_source == 240
            assert snap.min_soc_setting == 10.0
            assert snap.battery_life_state == 1
            assert snap.hub4_mode == 3
            assert snap.dynamic_ess_mode == 0
            assert snap.max_discharge_w == 1800.0
            assert (snap.max_discharge_min, snap.max_discharge_max) == (-1.0, 1_000_000.0)
            # Single-phase, no PV inverter: L2, L3 and every AC PV phase are invalid.
            assert (snap.ac_load_w, snap.grid_w, snap.pv_ac_w) == (750.0, 150.0, None)
            assert source.portal_id == "abc123"

    run_async(scenario())


def test_values_read_item_by_item_without_getitems(dbus_daemon: str, backend: str) -> None:
    async def scenario() -> None:
        async with FakeVenus(
            address=dbus_daemon,
            backend=backend,
            system={paths.SOC.path: 61.0},
            get_items=False,
        ) as fake, running(make_source(dbus_daemon, backend)) as source:
            fake.service(paths.SYSTEM).remove(paths.DC_SYSTEM.path)  # no DC system measurement
            await connected_and_alive(source)
            snap = source.snapshot()
            assert snap.soc == 61.0
            assert snap.battery_power_w == 120.0
            assert snap.dc_system_w is None
            assert snap.max_discharge_w == -1.0

    run_async(scenario())


def test_changes_are_followed(on_bus: OnBus) -> None:
    async def scenario() -> None:
        async with on_bus() as (fake, source):
            fake.set_value(paths.PV_DC, 1234.0)
            fake.set_value(paths.DYNAMIC_ESS_MODE, 1)
            fake.set_value(paths.MAX_DISCHARGE_POWER, 700.0)
            await eventually(lambda: source.snapshot().pv_dc_w == 1234.0, what="PV followed")
            await eventually(lambda: source.snapshot().dynamic_ess_mode == 1, what="DESS followed")
            await eventually(
                lambda: source.snapshot().max_discharge_w == 700.0, what="setting followed"
            )

    run_async(scenario())


def test_invalid_value_is_none(on_bus: OnBus) -> None:
    async def scenario() -> None:
        async with on_bus(system={paths.ACTIVE_SOC_LIMIT.path: None}) as (fake, source):
            assert source.snapshot().active_soc_limit is None  # invalid from the start
            assert source.snapshot().soc == 55.0
            fake.set_value(paths.SOC, None)
            await eventually(lambda: source.snapshot().soc is None, what="invalid SOC is None")
            fake.set_value(paths.SOC, 20.0)
            await eventually(lambda: source.snapshot().soc == 20.0, what="SOC valid again")

    run_async(scenario())


def test_write_is_accepted_and_read_back(on_bus: OnBus) -> None:
    async def scenario() -> None:
        async with on_bus() as (fake, source):
            assert await source.set_max_discharge(2500.0) == 0
            assert fake.value(paths.MAX_DISCHARGE_POWER) == 2500.0
            assert await source.read_max_discharge(2.0) == 2500.0
            await source.write_max_discharge(1200.0)
            assert fake.value(paths.MAX_DISCHARGE_POWER) == 1200.0
            await eventually(lambda: source.snapshot().max_discharge_w == 1200.0, what="signalled")
            assert await write_confirmed(source, -1.0) is True
            assert fake.value(paths.MAX_DISCHARGE_POWER) == -1.0
            assert source.last_write_code == 0

    run_async(scenario())


def test_out_of_range_write_is_rejected(on_bus: OnBus) -> None:
    async def scenario() -> None:
        async with on_bus(settings={paths.MAX_DISCHARGE_POWER.path: 900.0}) as (fake, source):
            assert await source.set_max_discharge(2_000_000.0) == -1
            assert await write_confirmed(source, -5.0, attempts=1, timeout=0.5) is None
            await source.write_max_discharge(1_000_001.0)  # logged, never raised
            assert source.last_write_code == -1
            assert fake.value(paths.MAX_DISCHARGE_POWER) == 900.0
            assert await source.read_max_discharge(2.0) == 900.0
            assert source.snapshot().max_discharge_w == 900.0
            refused = [value for (_, value, code) in fake.service("settings").set_calls if code]
            assert refused == [2_000_000.0, -5.0, 1_000_001.0]

    run_async(scenario())


def test_service_leaving_and_returning(on_bus: OnBus) -> None:
    async def scenario() -> None:
        async with on_bus() as (fake, source):
            first = source.snapshot().alive_at
            await eventually(lambda: source.snapshot().alive_at != first, what="alive_at moves")

            await fake.release(paths.SYSTEM)
            await eventually(lambda: source.snapshot().soc is None, what="system items absent")
            snap = source.snapshot()
            assert snap.pv_dc_w is None and snap.ac_input_source is None
            assert snap.max_discharge_w == -1.0  # settings is still there
            frozen = snap.alive_at
            await asyncio.sleep(REFRESH_S * 5)
            assert source.snapshot().alive_at == frozen  # no proof of life while it is gone

            fake.set_value(paths.SOC, 33.0)  # changed while away: must be re-read, not signalled
            await fake.acquire(paths.SYSTEM)
            await eventually(lambda: source.snapshot().soc == 33.0, what="values re-read")
            assert source.snapshot().pv_dc_w == 800.0
            await eventually(lambda: source.snapshot().alive_at != frozen, what="alive again")

            await fake.release(paths.SETTINGS)
            await eventually(
                lambda: source.snapshot().max_discharge_w is None, what="settings items absent"
            )
            assert source.snapshot().max_discharge_max is None
            frozen = source.snapshot().alive_at
            await asyncio.sleep(REFRESH_S * 5)
            assert source.snapshot().alive_at == frozen
            await fake.acquire(paths.SETTINGS)
            await eventually(
                lambda: source.snapshot().max_discharge_w == -1.0, what="settings back"
            )
            assert source.snapshot().max_discharge_max == 1_000_000.0

    run_async(scenario())


def test_service_absent_at_start(dbus_daemon: str, backend: str) -> None:
    async def scenario() -> None:
        async with FakeVenus(address=dbus_daemon, backend=backend) as fake:
            await fake.release(paths.SETTINGS)
            async with running(make_source(dbus_daemon, backend)) as source:
                await eventually(lambda: source.snapshot().soc == 55.0, what="system read")
                assert source.snapshot().connected
                assert source.snapshot().alive_at is None
                assert source.snapshot().hub4_mode is None
                await fake.acquire(paths.SETTINGS)
                await eventually(lambda: source.snapshot().alive_at is not None, what="alive")
                assert source.snapshot().hub4_mode == 1

    run_async(scenario())


def test_ac_loads_grid_and_ac_pv_follow_the_plant(dbus_daemon: str, backend: str) -> None:
    the_plant = Plant(PlantParams.from_sim_config(SimConfig(), min_soc=10.0), start_soc=50.0)
    pv_on_output, pv_on_grid = paths.PV_AC.items[0], paths.PV_AC.items[3:]

    async def scenario() -> None:
        # A PV inverter on the output, and a systemcalc without the PvOnGrid paths at all.
        async with FakeVenus(
            address=dbus_daemon, backend=backend, system={pv_on_output.path: 900.0}
        ) as fake:
            for item in pv_on_grid:
                fake.service(paths.SYSTEM).remove(item.path)
            async with running(make_source(dbus_daemon, backend)) as source:
                assert await source.wait_ready(WAIT_S)
                # Read whole (GetItems): L1 plus null L2, L3; the absent paths count as 0.
                await eventually(ac_values_are(source, (750.0, 150.0, 900.0)), what="read")
                for load_w, pv_ac_w in ((1800.0, 650.0), (420.0, 0.0)):
                    step = the_plant.step(
                        1.0, pv_dc_w=300.0, load_w=load_w, pv_ac_w=pv_ac_w, max_discharge_w=-1.0
                    )
                    for item, value in plant_values(step, ac_pv=True).items():
                        fake.set_value(item, value)
                    shown = (load_w, float(round(step.grid_w)), pv_ac_w)
                    await eventually(ac_values_are(source, shown), what=f"signalled {shown}")
                # The system service leaves: its items are absent, not the last values.
                await fake.release(paths.SYSTEM)
                await eventually(ac_values_are(source, (None,) * 3), what="AC values absent")

    run_async(scenario())


def test_garbage_is_ignored_and_logged_once(on_bus: OnBus, logged: Logged) -> None:
    def warnings_about(path: str) -> int:
        return logged(path, at_least=logging.WARNING)

    async def scenario() -> None:
        async with on_bus(system={paths.BATTERY_POWER.path: "lots"}) as (fake, source):
            assert source.snapshot().battery_power_w is None  # garbage at start: never valid
            assert warnings_about(paths.BATTERY_POWER.path) == 1

            fake.set_value(paths.SOC, "fifty")
            fake.set_value(paths.SOC, [[1.0, 2.0], [3.0]])
            fake.set_value(paths.SOC, "sixty")
            fake.set_value(paths.AC_INPUT_SOURCE, 1.5)  # a code must be whole
            fake.set_value(paths.PV_DC, 321.0)  # a valid value after the garbage
            await eventually(lambda: source.snapshot().pv_dc_w == 321.0, what="PV followed")
            snap = source.snapshot()
            assert snap.soc == 55.0  # the garbage did not replace the last valid value
            assert snap.ac_input_source == 1
            assert warnings_about(paths.SOC.path) == 1
            assert warnings_about(paths.AC_INPUT_SOURCE.path) == 1

            fake.set_value(paths.SOC, 44.0)
            await eventually(lambda: source.snapshot().soc == 44.0, what="valid SOC followed")
            fake.set_value(paths.SOC, "again")
            fake.set_value(paths.PV_DC, 322.0)
            await eventually(lambda: source.snapshot().pv_dc_w == 322.0, what="PV followed")
            assert warnings_about(paths.SOC.path) == 2  # new garbage after a valid value

    run_async(scenario())


def test_bus_loss_and_reconnect(
    dbus_daemon_process: DbusDaemon, backend: str, logged: Logged
) -> None:
    async def scenario() -> None:
        address = dbus_daemon_process.address
        fake = FakeVenus(address=address, backend=backend)
        await fake.start()
        try:
            async with running(make_source(address, backend)) as source:
                await connected_and_alive(source)
                dbus_daemon_process.stop()
                await eventually(lambda: not source.snapshot().connected, what="loss noticed")
                assert source.snapshot().soc is None
                assert not source.ready
                assert not await source.wait_ready(0.05)
                with pytest.raises(SourceUnavailable):
                    await source.write_max_discharge(100.0)
                assert await write_confirmed(source, 100.0, attempts=1, timeout=0.2) is None
                assert await source.read_max_discharge(0.5) is None
                await fake.stop()
                await asyncio.sleep(0.6)  # several reconnect attempts fail meanwhile

                dbus_daemon_process.start()  # same socket path, a new bus
                fake = FakeVenus(
                    address=dbus_daemon_process.address,
                    backend=backend,
                    system={paths.SOC.path: 71.0},
                )
                await fake.start()
                await eventually(lambda: source.snapshot().soc == 71.0, what="reconnected, re-read")
                assert source.snapshot().connected
                assert await source.wait_ready(WAIT_S)
                assert logged("still unavailable") >= 1  # retried, quietly
                assert logged("D-Bus unavailable") == 1  # the loss, once for all attempts
                assert logged("D-Bus connection restored") == 1
        finally:
            await fake.stop()

    run_async(scenario())


def test_unreachable_bus_keeps_retrying(backend: str, tmp_path: Any) -> None:
    async def scenario() -> None:
        source = make_source(f"unix:path={tmp_path}/nothing-here", backend)
        async with running(source):
            await asyncio.sleep(0.5)  # several failed attempts: none may raise or leak
            assert not source.snapshot().connected
            with pytest.raises(SourceUnavailable):
                await source.write_max_discharge(100.0)

    run_async(scenario())


def test_fake_as_a_separate_process(dbus_daemon: str, backend: str, tmp_path: Path) -> None:
    write_log = tmp_path / "writes.jsonl"

    async def command(process: Any, line: str) -> None:
        process.stdin.write(line.encode() + b"\n")
        await process.stdin.drain()
        assert (await asyncio.wait_for(process.stdout.readline(), WAIT_S)).strip() == b"OK"

    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "venus_prio.fakes.dbus_gx",
            "--address",
            dbus_daemon,
            "--backend",
            backend,
            "--set",
            "system:/Dc/Battery/Soc=42.5",
            "--override-expiry-s",
            "1",
            "--write-log",
            str(write_log),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            ready = await asyncio.wait_for(process.stdout.readline(), WAIT_S)
            assert ready.strip() == b"READY"
            async with running(make_source(dbus_daemon, backend)) as source:
                await connected_and_alive(source)
                assert source.snapshot().soc == 42.5
                await command(process, "set system /Dc/Battery/Soc 12.5")
                await eventually(
                    lambda: source.snapshot().soc == 12.5, what="change from the process"
                )
                # hub4: our write is logged and expires after 1 s; another tool's value shows.
                await source.write_override(800.0)
                assert await source.read_override(WAIT_S) == 800.0
                logged = read_write_log(write_log)
                assert [(w.service, w.path, w.value, w.accepted) for w in logged] == [
                    ("hub4", paths.OVERRIDE_MAX_DISCHARGE.path, 800.0, True)
                ]
                await eventually(lambda: source.snapshot().override_w == -1.0, what="expired")
                await command(process, "set hub4 /Overrides/MaxDischargePower 1.0")
                await eventually(
                    lambda: source.snapshot().override_w == 1.0, what="foreign override"
                )
                await command(process, "release hub4")
                await eventually(
                    lambda: source.snapshot().override_present is False, what="no hub4"
                )
                assert source.snapshot().alive_at is not None and source.ready
                process.kill()  # the services vanish with their process
                await process.wait()
                await eventually(lambda: source.snapshot().soc is None, what="system gone")
                await eventually(lambda: source.snapshot().hub4_mode is None, what="settings gone")
                assert source.snapshot().connected  # the bus itself is still there
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    run_async(scenario())


def test_fake_signals_only_changes_and_converts_like_localsettings(
    dbus_daemon: str, backend: str
) -> None:
    """Check the fake itself from a plain bus client: what the source tests rely on."""
    lib = load_backend(backend)

    async def call(bus: Any, service: str, path: str, member: str, *args: Any) -> Any:
        reply = await bus.call(
            lib.message(
                destination=service,
                path=path,
                interface=BUS_ITEM,
                member=member,
                signature="v" * len(args),
                body=list(args),
            )
        )
        assert reply.message_type == lib.message_type.METHOD_RETURN, reply.body
        return reply.body[0]

    async def scenario() -> None:
        settings = "com.victronenergy.settings"
        async with FakeVenus(address=dbus_daemon, backend=backend) as fake:
            bus = await open_bus(lib, dbus_daemon)
            try:
                seen: List[Tuple[str, str, Any]] = []

                def on_signal(message: Any) -> None:
                    if message.interface == BUS_ITEM and message.member.endswith("Changed"):
                        seen.append((message.member, message.path, message.body[0]))

                bus.add_message_handler(on_signal)
                await bus.call(
                    lib.message(
                        destination="org.freedesktop.DBus",
                        path="/org/freedesktop/DBus",
                        interface="org.freedesktop.DBus",
                        member="AddMatch",
                        signature="s",
                        body=[f"type='signal',interface='{BUS_ITEM}'"],
                    )
                )
                soc = paths.SOC.path
                assert fake.set_value(paths.SOC, 55.0) is False  # the default: no change
                assert fake.set_value(paths.SOC, 56.0) is True
                assert fake.set_value(paths.SOC, 56.0) is False
                limit = paths.MAX_DISCHARGE_POWER.path
                assert await call(bus, settings, limit, "SetValue", lib.variant("i", 1500)) == 0
                assert await call(bus, settings, limit, "SetValue", lib.variant("d", 1500.0)) == 0
                assert await call(bus, settings, limit, "SetValue", lib.variant("s", "x")) == -1
                assert await call(bus, settings, limit, "SetValue", lib.variant("d", -2.0)) == -1
                hub4 = paths.HUB4_MODE.path
                assert await call(bus, settings, hub4, "SetValue", lib.variant("d", 2.0)) == 0
                fake.set_value(paths.SOC, 57.0)  # a last change: every earlier signal is in
                await eventually(lambda: len(seen) >= 8, what="signals of four changes")
                await asyncio.sleep(0.1)  # room for any signal that should not be there
                assert [(member, path) for member, path, _ in seen] == [
                    ("PropertiesChanged", soc),
                    ("ItemsChanged", "/"),
                    ("PropertiesChanged", limit),
                    ("ItemsChanged", "/"),
                    ("PropertiesChanged", hub4),
                    ("ItemsChanged", "/"),
                    ("PropertiesChanged", soc),
                    ("ItemsChanged", "/"),
                ]
                assert seen[0][2]["Value"].value == 56.0
                assert seen[1][2][soc]["Value"].value == 56.0
                stored = fake.value(paths.MAX_DISCHARGE_POWER)
                assert stored == 1500.0 and isinstance(stored, float)  # converted to float
                assert fake.value(paths.HUB4_MODE) == 2
                assert isinstance(fake.value(paths.HUB4_MODE), int)
                assert (await call(bus, settings, limit, "GetMin")).value == -1.0
                assert (await call(bus, settings, limit, "GetMax")).value == 1_000_000.0
                assert await call(bus, settings, limit, "GetText") == "1500.0"
                fake.set_value(paths.SOC, None)
                invalid = await call(bus, "com.victronenergy.system", soc, "GetValue")
                assert (invalid.signature, invalid.value) == ("ai", [])
                items = await call(bus, "com.victronenergy.system", "/", "GetItems")
                assert items[paths.PV_DC.path]["Value"].value == 800.0
                assert items[soc]["Text"].value == "---"
            finally:
                await close_bus(bus)

    run_async(scenario())


def test_hung_service_stops_liveness(on_bus: OnBus, logged: Logged) -> None:
    def logged_info(text: str) -> int:
        return logged(text, at_least=logging.INFO)

    async def scenario() -> None:
        async with on_bus() as (fake, source):
            fake.service(paths.SYSTEM).frozen = True  # GetValue now never answers
            await eventually(lambda: logged_info("failed: no answer") == 1, what="failure logged")
            frozen = source.snapshot().alive_at
            await asyncio.sleep(REFRESH_S * 6)
            assert source.snapshot().alive_at == frozen
            assert source.snapshot().soc == 55.0  # still current: only the proof is missing
            assert logged_info("failed: no answer") == 1  # once, not at every refresh
            fake.service(paths.SYSTEM).frozen = False
            await eventually(lambda: source.snapshot().alive_at != frozen, what="alive again")
            assert logged_info("answers again") == 1

    run_async(scenario())
