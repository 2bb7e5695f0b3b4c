"""The commands' entry points: build the source for the config, run the service, restore, probe.

``cli.py`` parses arguments and calls ``run``, ``restore`` or ``probe``; each builds the source
the config asks for (only the transport in use is imported), runs it under ``tasks.supervise``
and returns an exit code. The steering itself is ``service.Service``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import List, Optional, TextIO, Tuple

from venus_prio.actuator import RELEASE_W
from venus_prio.config import Config
from venus_prio.journal import Journal, journal_path, load_journal, save_journal
from venus_prio.model import Decision, Snapshot
from venus_prio.service import EXIT_FAILURE, EXIT_OK, Service
from venus_prio.status import ServiceStatus
from venus_prio.tasks import cancel_and_wait
from venus_prio.venus.source import (
    Readiness,
    SettingsCheck,
    Source,
    with_source,
    write_confirmed,
)
from venus_prio.writes import baseline_to_write

log = logging.getLogger(__name__)

# The probe's exit code when the broker refused a setting (as for a bad config: the user must
# change it); the line printed names it.
EXIT_BAD_SETTING = 2


async def wait_ready(source: Source, timeout: float) -> bool:
    """Wait until the source is connected, alive and shows MaxDischargePower; False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if isinstance(source, Readiness) and not await source.wait_ready(timeout):
        return False
    while True:
        snap = source.snapshot()
        if snap.connected and snap.alive_at is not None and snap.max_discharge_w is not None:
            return True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await source.wait_changed(remaining)


async def ready_or_problem(source: Source, timeout: float) -> Tuple[bool, Optional[str]]:
    """Wait like ``wait_ready``, but return at once when the source reports a setting that no
    retry mends (``SettingsCheck``): (ready, None), (False, the problem) or (False, None)."""
    if not isinstance(source, SettingsCheck):
        return await wait_ready(source, timeout), None
    ready = asyncio.ensure_future(wait_ready(source, timeout))
    problem = asyncio.ensure_future(source.wait_settings_problem(timeout))
    try:
        await asyncio.wait([ready, problem], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([ready, problem])
    if problem.done() and not problem.cancelled() and problem.result() is not None:
        return False, problem.result()
    return ready.done() and not ready.cancelled() and ready.result(), None


def build_source(config: Config, *, probing: bool = False) -> Source:
    """Return the real source for the config (construct inside the running loop).

    ``probing``: the caller reports a settings problem itself (MQTT: ``SettingsCheck``)."""
    # Imported here: only the transport in use is loaded (aiomqtt or a D-Bus library).
    if config.venus.transport == "dbus":
        from venus_prio.venus.dbus import DbusSource  # noqa: PLC0415

        return DbusSource(venus=config.venus, control=config.control)
    if config.venus.transport == "auto" and not config.venus.vrm:
        # MQTT preferred, D-Bus while the broker is down on the GX (the VRM broker is remote).
        from venus_prio.venus.fallback import build_auto_source  # noqa: PLC0415

        return build_auto_source(venus=config.venus, control=config.control)
    from venus_prio.venus.mqtt import MqttSource  # noqa: PLC0415

    return MqttSource(venus=config.venus, control=config.control, report_problems=not probing)


def ready_timeout(config: Config) -> float:
    venus = config.venus
    discovery = venus.portal_id_timeout_s if venus.portal_id is None else 0.0
    return discovery + 2 * venus.full_publish_timeout_s + 5.0


def run(config: Config, *, dry_run: bool = False) -> int:
    """Run the service until SIGTERM/SIGINT; return the exit code (1: restore not confirmed)."""
    return asyncio.run(_run(config, dry_run=dry_run))


async def _run(config: Config, *, dry_run: bool) -> int:
    source = build_source(config)
    service = Service(config=config, source=source, dry_run=dry_run)
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("Received %s: handing back the baseline and stopping", sig.name)
        service.request_stop()

    handled: List[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
        handled.append(sig)
    try:
        log.info(
            "venus-prio running%s; journal %s",
            " in dry-run (nothing is written)" if service.dry_run else "",
            journal_path(config.resolved_state_dir()),
        )
        return await serve(service, config)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def serve(service: Service, config: Config) -> int:
    """Run the service and, with ``homeassistant.enabled``, the Home Assistant publisher beside it.

    The publisher never decides anything: its failures are logged and never end the service; it
    is cancelled (and marks the device offline) once the service has handed back the baseline.
    """
    if not config.homeassistant.enabled:
        return await service.run()
    main: asyncio.Future[int] = asyncio.ensure_future(service.run())
    companion = asyncio.ensure_future(_home_assistant(service, config))
    try:
        await asyncio.wait([main])
    finally:
        await cancel_and_wait([main, companion])
    return main.result()


async def _home_assistant(service: Service, config: Config) -> None:
    """Publish to Home Assistant once the portal id is known; log a failure, never raise it."""
    from venus_prio.ha_publisher import HomeAssistantPublisher, command_handler  # noqa: PLC0415

    changed = service.watch()
    try:
        while service.portal_id is None:
            changed.clear()
            await changed.wait()
        publisher = HomeAssistantPublisher(
            homeassistant=config.homeassistant,
            venus=config.venus,
            portal_id=service.portal_id,
            status=lambda: service.status,
            changed=changed,
            on_command=command_handler(service),
        )
        await publisher.run()
    except Exception:
        log.exception("Home Assistant publisher failed; steering goes on without it")


def restore(config: Config) -> int:
    """Release venus-prio's override and write the journal's baseline to the setting (each when
    the journal says venus-prio may hold it), confirm both and mark the journal clean."""
    return asyncio.run(_restore(config))


async def _restore(config: Config) -> int:
    path = journal_path(config.resolved_state_dir())
    journal = load_journal(path)
    if journal is None or journal.baseline_w is None:
        log.info(
            "No baseline journal at %s: venus-prio never took control; nothing to restore", path
        )
        return EXIT_OK
    source = build_source(config)

    async def main() -> int:
        # A refused setting is logged by the source; waiting longer would not mend it.
        ready, _ = await ready_or_problem(source, ready_timeout(config))
        if not ready:
            log.error("Cannot reach the GX: the baseline %g W was NOT restored", journal.baseline_w)
            return EXIT_FAILURE
        if journal.portal_id is not None and journal.portal_id != source.portal_id:
            log.error(
                "The journal %s belongs to GX %s, this is %s: not restoring",
                path,
                journal.portal_id,
                source.portal_id,
            )
            return EXIT_FAILURE
        assert journal.baseline_w is not None  # checked above
        if journal.override_held and not await _release_override(source):
            return EXIT_FAILURE
        value = journal.baseline_w
        if not journal.clean:
            # The setting may hold a value of venus-prio's: put the user's back.
            value = baseline_to_write(journal.baseline_w, source.snapshot())
            if await write_confirmed(source, value) is None:
                log.error(
                    "RESTORE NOT CONFIRMED: MaxDischargePower %g W did not show on the GX", value
                )
                return EXIT_FAILURE
            log.info("Restored the baseline MaxDischargePower %g W (confirmed by read-back)", value)
        else:
            log.info("The setting holds the user's own value: nothing to restore there")
        save_journal(
            path,
            Journal(
                portal_id=journal.portal_id or source.portal_id,
                baseline_w=journal.baseline_w,
                last_written_w=value if not journal.clean else journal.last_written_w,
                clean=True,
                mode=journal.mode,
                updated=time.time(),
                override_held=False,
            ),
        )
        return EXIT_OK

    return await with_source(source, main())


async def _release_override(source: Source) -> bool:
    """Release venus-prio's hub4 override (-1, confirmed by read-back); False when unconfirmed."""
    if source.snapshot().override_present is False:
        log.info("The GX shows no hub4 override: nothing to release")
        return True
    # A run that died may have left a write on its way: a -1 shown now proves nothing.
    if await write_confirmed(source, RELEASE_W, override=True, in_flight=lambda: True) is None:
        log.error(
            "RELEASE NOT CONFIRMED: the hub4 override did not show -1 "
            "(it expires by itself within minutes)"
        )
        return False
    log.info("Released the hub4 override (-1 confirmed by read-back)")
    return True


def probe(config: Config, out: Optional[TextIO] = None) -> int:
    """Connect, show the live values, the decision and the write it would make; write nothing."""
    return asyncio.run(_probe(config, sys.stdout if out is None else out))


async def _probe(config: Config, out: TextIO) -> int:
    source = build_source(config, probing=True)

    async def main() -> int:
        ready, problem = await ready_or_problem(source, ready_timeout(config))
        if problem is not None:
            # A certificate, login or port the broker refused: no retry mends it, say so now.
            out.write(f"Cannot connect to the GX broker: {problem}\n")
            return EXIT_BAD_SETTING
        if not ready:
            snap = source.snapshot()
            what = "the broker answered but the GX did not" if snap.connected else "no connection"
            out.write(f"Cannot reach the GX ({what})\n")
            return EXIT_FAILURE
        service = Service(config=config, source=source, dry_run=True, persist=False)
        decision = await service.evaluate()
        snap = source.snapshot()
        out.write(format_probe(source, snap, service.status, decision))
        return EXIT_OK

    return await with_source(source, main())


def format_probe(
    source: Source, snap: Snapshot, status: ServiceStatus, decision: Optional[Decision]
) -> str:
    """Return the human-readable probe report."""

    def show(value: Optional[float], unit: str = "") -> str:
        return "-" if value is None else f"{value:.10g}{unit}"

    lines = [
        f"GX {source.portal_id or '?'} via {source.name}: "
        f"{'connected' if snap.connected else 'not connected'}",
        f"  SOC                 {show(snap.soc, ' %')}",
        f"  ActiveSocLimit      {show(snap.active_soc_limit, ' %')}",
        f"  MinimumSocLimit     {show(snap.min_soc_setting, ' %')}",
        f"  DC PV               {show(snap.pv_dc_w, ' W')}",
        f"  DC system           {show(snap.dc_system_w, ' W')}",
        f"  Battery power       {show(snap.battery_power_w, ' W')}",
        f"  AC input source     {show(snap.ac_input_source)}",
        f"  Hub4Mode            {show(snap.hub4_mode)}",
        f"  BatteryLife state   {show(snap.battery_life_state)}",
        f"  Dynamic ESS mode    {show(snap.dynamic_ess_mode)}",
        f"  MaxDischargePower   {show(snap.max_discharge_w, ' W')} "
        f"(min {show(snap.max_discharge_min)}, max {show(snap.max_discharge_max)})",
        f"  Override (hub4)     {show(snap.override_w, ' W')}"
        + ("" if snap.override_present is not False else " (absent on this GX)"),
        f"Baseline              {show(status.baseline_w, ' W')}",
        f"Actuator              {status.actuator}"
        + (f" ({status.actuator_why})" if status.actuator_why else ""),
    ]
    if decision is None:
        lines.append("Decision              none (MaxDischargePower unknown: no baseline)")
    else:
        lines += [
            f"Decision              {decision.reason.value}: target {decision.target_w:g} W",
            f"  {decision.text}",
            f"  band {decision.band.value}, phase "
            f"{'-' if decision.phase is None else decision.phase.value}, d {show(decision.d)}, "
            f"floor {show(decision.floor, ' %')}, PV filtered {decision.pv_f:g} W",
        ]
    write = status.last_write
    if write is None:
        lines.append("Would write           nothing (no write needed)")
    else:
        lines.append(f"Would write           {write.value_w:g} W ({write.why})")
    return "\n".join(lines) + "\n"
