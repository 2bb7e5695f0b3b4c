"""Benchmark script (not a test): `venus-prio run` vs a bare subscriber on a GX-like stream.

Run from the repository root::

    .venv-3.12/bin/python tests/bench/bench_mqtt.py [--duration 60] [--rate 200]
        [--actuator setting|override] [--event-period 1] [--repeat 3]

It starts its own Mosquitto on a free loopback port and, in this process, a replayer: a
``FakeGx`` holding a realistic N/ tree (``--topics`` items, default 1,500: mostly items
venus-prio does not subscribe to, as on a real GX, plus the ones it does). The first full
keepalive makes the replayer dump them all; after that it publishes ``--rate`` changes per
second for ``--duration`` seconds, ``--subscribed-share`` of them on subscribed topics, and
every ``--event-period`` a PV rise and a PV drop that make the controller write. Once a second,
on top of that, it publishes new AC loads and grid power (``/Ac/Consumption/L1/Power``,
``/Ac/Grid/L1/Power``), as systemcalc does: they wake nothing, but they feed the day recording
and the stock-ESS shadow. The replayer answers R/ and applies W/ like the fake GX always does,
and honours the hub4 override.

The service runs as shipped: recording on (``record:`` at its defaults, into the run's temporary
state dir; the run checks that rows were written) and so the stock-ESS shadow stepping on every
evaluation.

``--actuator`` pins venus-prio's ``actuator.kind``: ``setting`` (the default: the persisted
setting, under a write budget lifted to 3,600 an hour so every PV event is written) or
``override`` (the hub4 override with its shipped keys: 10 W deadband, refresh every 5 s, no
budget). ``--actuator override --event-period 2`` moves the PV share by ~1,700 W every second,
far beyond the override's deadband: a write every second, twice the busiest hour of the
simulated cloudy-floor day (1,819 override writes, refreshes included).

Two processes run side by side on the same broker: ``python -m venus_prio run`` (dry_run
false) and a bare aiomqtt subscriber (this script with ``--bare-subscriber``) subscribed to the
same topics that only json-decodes each payload. For both it reports CPU seconds (utime +
stime from /proc/<pid>/stat, over the stream phase) per 100k messages delivered, peak RSS
(VmHWM), and the ratios; for the service the N/-to-W/ latency: from the replayer publishing a
PV drop to the W/ with the lower limit (setting or override) arriving at the replayer, p50/p99
over all drops. ``--repeat N`` runs the whole benchmark N times (a fresh broker each) and ends
with the median of each figure; the load average is printed with every run (the CPU ratio
suffers on a busy machine).

``--cprofile FILE`` runs the service under cProfile (its CPU figures then include the
profiler's overhead) and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.conftest import Broker, mosquitto_binary, started  # noqa: E402
from venus_prio.actuator import control_for  # noqa: E402
from venus_prio.config import parse_config  # noqa: E402
from venus_prio.controller import floor_to_step  # noqa: E402
from venus_prio.fakes.mqtt_gx import DEFAULT_PORTAL_ID, FakeGx  # noqa: E402
from venus_prio.model import Actuator  # noqa: E402
from venus_prio.venus import flashmq, paths  # noqa: E402

HOST = "127.0.0.1"
PID = DEFAULT_PORTAL_ID
MAX_W = 3000.0
SOC = 12.0  # floor 10 %: PV_PRIORITY, the limit follows the PV
PV_HIGH = 2000.0  # setting: 0.8 * 2000 - 20 -> 1550 W; override: 1.05 * 2000 -> 2100 W
PV_LOW = 400.0  # setting: 0.8 * 400 - 20 -> 300 W; override: 1.05 * 400 -> 420 W
CLK_TCK = os.sysconf("SC_CLK_TCK")
AC_PERIOD_S = 1.0  # AC loads and grid power: systemcalc publishes them about once a second

# Services and paths of a GX with a Multi, a BMS, two MPPTs, a grid meter and a tank: the
# shape of the N/ tree, not its exact content.
_SERVICES: Tuple[Tuple[str, int], ...] = (
    ("vebus", 276),
    ("battery", 512),
    ("solarcharger", 278),
    ("solarcharger", 279),
    ("grid", 30),
    ("tank", 20),
    ("temperature", 24),
    ("settings", 0),
    ("platform", 0),
    ("hub4", 0),
)


def n_tree_suffixes(count: int) -> List[str]:
    """Return ``count`` plausible item suffixes venus-prio does not subscribe to."""
    subscribed = {item.topic_suffix() for item in paths.INPUTS}
    out: List[str] = []
    i = 0
    while len(out) < count:
        service, instance = _SERVICES[i % len(_SERVICES)]
        group = ("Ac/Out/L1", "Dc/0", "Alarms", "History/Daily/0", "Devices/0", "Info")[i // 97 % 6]
        suffix = f"{service}/{instance}/{group}/Item{i}"
        if suffix not in subscribed:
            out.append(suffix)
        i += 1
    return out


# -- processes ---------------------------------------------------------------------------


def service_config(port: int, workdir: Path, kind: str) -> Dict[str, object]:
    """Return the service's configuration: the write-heavy settings, the actuator pinned."""
    return {
        "control": {
            "max_inverter_power_w": MAX_W,
            "min_soc": "auto",
            "pv_factor": 0.8,
            "pv_offset_w": 20,
            "pv_window_s": 0.1,  # rises followed quickly: one write per PV event
        },
        "writes": {
            "deadband_w": 100,
            "min_increase_interval_s": 0.1,
            "max_writes_per_hour": 3600,
            "dry_run": False,
        },
        "actuator": {"kind": kind},  # the override's own keys stay the shipped defaults
        "venus": {"transport": "mqtt", "host": HOST, "port": port, "portal_id": PID},
        "homeassistant": {"enabled": False},  # same subscriptions as the bare subscriber
        # As shipped: the day recording (and with it the stock-ESS shadow) on, at the defaults.
        "record": {"enabled": True},
        "state_dir": str(workdir / "state"),
        "log_level": "INFO",
    }


@dataclass(frozen=True)
class Target:
    """Where the service's limit lands and the value a PV drop must bring there."""

    actuator: Actuator
    suffix: str
    low_w: float

    @staticmethod
    def of(config: Dict[str, object]) -> Target:
        parsed = parse_config(config)
        kind = Actuator(parsed.actuator.kind)
        control = control_for(parsed, kind)
        override = kind is Actuator.OVERRIDE
        item = paths.OVERRIDE_MAX_DISCHARGE if override else paths.MAX_DISCHARGE_POWER
        low = floor_to_step(control.pv_factor * PV_LOW - control.pv_offset_w, control.step_w)
        return Target(kind, item.topic_suffix(), low)

    def held(self, gx: FakeGx) -> Optional[float]:
        """Return the limit the GX holds now (the override: -1 when none)."""
        return gx.setting if self.actuator is Actuator.SETTING else gx.override_w


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    hwm_kb: int


def usage(pid: int) -> Usage:
    """Return CPU seconds (user + system) and peak RSS of a running process from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return Usage(cpu, hwm)


# -- the bare subscriber -----------------------------------------------------------------


async def bare_subscriber(port: int, count_file: Path) -> None:
    """Subscribe to venus-prio's topics, json-decode every payload, count; stop on SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    count = 0
    decoded = 0
    async with aiomqtt.Client(HOST, port, identifier="bare-subscriber") as client:
        await client.subscribe([(topic, 0) for topic in flashmq.subscriptions(PID)])

        async def consume() -> None:
            nonlocal count, decoded
            async for message in client.messages:
                count += 1
                try:
                    json.loads(bytes(message.payload))
                    decoded += 1
                except ValueError:
                    pass

        task = asyncio.ensure_future(consume())
        await stop.wait()
        task.cancel()
        await asyncio.wait({task})
    count_file.write_text(json.dumps({"messages": count, "decoded": decoded}), encoding="utf-8")


class Spy:
    """Count the messages on venus-prio's topics: what both processes are delivered."""

    def __init__(self) -> None:
        self.count = 0
        self.subscribed = asyncio.Event()

    async def run(self, port: int) -> None:
        async with aiomqtt.Client(HOST, port, identifier="bench-spy") as client:
            await client.subscribe([(topic, 0) for topic in flashmq.subscriptions(PID)])
            self.subscribed.set()
            async for _ in client.messages:
                self.count += 1


# -- the replayer ------------------------------------------------------------------------


@dataclass
class Stream:
    published: int = 0
    # Loop times of the PV drops that needed a write: the GX held a higher limit then. (The
    # rise before a drop is smoothed by the PV filter, so it is not always written in time.)
    drops: Optional[List[float]] = None
    all_drops: int = 0
    start: float = 0.0  # loop time of the stream phase
    end: float = 0.0


async def replay(
    gx: FakeGx,
    target: Target,
    *,
    rate: float,
    duration: float,
    share: float,
    event_period: float,
    seed: int,
) -> Stream:
    """Publish ``rate`` changes per second for ``duration`` seconds; return what went out."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    # The rest of the tree: nothing venus-prio subscribes to (a random value on the hub4
    # override would be someone else's override and make it stand aside), and not the serial.
    subscribed = set(flashmq.subscriptions(PID))
    fixed = {paths.SERIAL.topic_suffix()}
    other = [s for s in gx.items if f"N/{PID}/{s}" not in subscribed and s not in fixed]
    noisy = [paths.BATTERY_POWER, paths.SOC]  # not DC loads: they would move the PV share
    # Reported once a second by systemcalc on a real GX, for the recording and the shadow.
    ac_load, grid = paths.AC_LOAD.items[0], paths.GRID.items[0]
    stream = Stream(drops=[])
    assert stream.drops is not None
    start = stream.start = loop.time()
    next_event = start + event_period / 2
    next_ac = start + AC_PERIOD_S / 4
    pv_low = False
    n = 0
    while True:
        now = loop.time()
        if now - start >= duration:
            stream.end = now
            return stream
        if now >= next_event:
            pv_low = not pv_low
            next_event += event_period / 2
            if pv_low:
                stream.all_drops += 1
                held = target.held(gx)
                if held is not None and held > target.low_w:
                    stream.drops.append(loop.time())
            await gx.set_value(paths.PV_DC, PV_LOW if pv_low else PV_HIGH)
            stream.published += 1
        if now >= next_ac:
            next_ac += AC_PERIOD_S
            load = float(rng.randint(200, 900))
            await gx.set_value(ac_load, load)
            await gx.set_value(grid, load - float(rng.randint(0, 600)))
            stream.published += 2
        if rng.random() < share:
            item = rng.choice(noisy)
            if item is paths.SOC:
                value = SOC + rng.choice((0.0, 0.1))
            else:
                value = float(rng.randint(-300, 300))
            await gx.set_value(item, value)
        else:
            await gx.set_value(rng.choice(other), round(rng.uniform(0, 1000), 1))
        stream.published += 1
        n += 1
        # Pace on the schedule, not per message: publishing takes time too.
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def latencies(drops: Sequence[float], gx: FakeGx, target: Target) -> List[float]:
    """Return, for each PV drop, the delay until the fake GX received the lower limit."""
    writes = [w for w in gx.writes if w.suffix == target.suffix and w.value == target.low_w]
    out: List[float] = []
    for t in drops:
        after = [w.at for w in writes if w.at >= t]
        if after:
            out.append(min(after) - t)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What one run measured."""

    changes: int  # published by the replayer in the stream phase
    delivered: int  # messages on venus-prio's topics in the stream phase (the spy's count)
    bare_total: int  # messages the bare subscriber got in all, dump included
    cpu: Dict[str, float]  # "service", "bare": CPU seconds in the stream phase
    hwm_kb: Dict[str, int]  # peak RSS
    latencies: List[float]
    drops: int
    stream_writes: Dict[str, int]  # suffix -> writes applied in the stream phase
    load: Tuple[float, float]  # 1-minute load average before and after
    recorded_rows: int  # rows the service's day recording holds after the run

    def ratio(self) -> float:
        return self.cpu["service"] / max(self.cpu["bare"], 1e-9)

    def per_100k(self, name: str) -> float:
        return self.cpu[name] / max(self.delivered, 1) * 100_000

    def rss_ratio(self) -> float:
        return self.hwm_kb["service"] / max(self.hwm_kb["bare"], 1)


async def bench(args: argparse.Namespace, workdir: Path, port: int) -> Figures:
    gx = FakeGx(host=HOST, port=port, portal_id=PID, alive_timeout_s=60.0)
    gx.items[paths.SOC.topic_suffix()].value = SOC
    gx.items[paths.PV_DC.topic_suffix()].value = PV_HIGH
    gx.items[paths.MAX_DISCHARGE_POWER.topic_suffix()].value = -1.0
    extra = args.topics - len(gx.items)
    for suffix in n_tree_suffixes(extra):
        await gx.set_value(suffix, round(random.Random(suffix).uniform(0, 1000), 1))
    task = asyncio.ensure_future(gx.run())
    await gx.wait_connected()
    spy = Spy()
    spy_task = asyncio.ensure_future(spy.run(port))
    await asyncio.wait_for(spy.subscribed.wait(), 10.0)

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    data = service_config(port, workdir, args.actuator)
    target = Target.of(data)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    prefix = [sys.executable]
    if args.cprofile:
        prefix += ["-m", "cProfile", "-o", str(args.cprofile)]
    service_cmd = [*prefix, "-m", "venus_prio", "run", "--config", str(config)]
    count_file = workdir / "bare.json"
    bare_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--bare-subscriber",
        "--port",
        str(port),
        "--count-file",
        str(count_file),
    ]
    load_before = os.getloadavg()[0]
    with (workdir / "run.log").open("wb") as log:
        bare = subprocess.Popen(bare_cmd, env=env, cwd=str(ROOT))
        service = subprocess.Popen(service_cmd, stdout=log, stderr=log, env=env, cwd=str(ROOT))
    try:
        # The service's full keepalive makes the replayer dump its tree; both receive it.
        deadline = time.monotonic() + 30.0
        while not gx.writes:
            if time.monotonic() > deadline or service.poll() is not None:
                raise RuntimeError((workdir / "run.log").read_text(encoding="utf-8")[-3000:])
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        spy.count = 0
        before = {"service": usage(service.pid), "bare": usage(bare.pid)}
        stream = await replay(
            gx,
            target,
            rate=args.rate,
            duration=args.duration,
            share=args.subscribed_share,
            event_period=args.event_period,
            seed=args.seed,
        )
        await asyncio.sleep(1.0)  # the last messages drain
        after = {"service": usage(service.pid), "bare": usage(bare.pid)}
        delivered = spy.count
    finally:
        bare.send_signal(signal.SIGTERM)
        service.send_signal(signal.SIGTERM)
        # Wait without blocking the loop: the replayer must answer the service's restore.
        deadline = time.monotonic() + 30.0
        while (bare.poll() is None or service.poll() is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for process in (bare, service):
            if process.poll() is None:
                process.kill()
                process.wait()
        for t in (task, spy_task):
            t.cancel()
        await asyncio.wait({task, spy_task})
    counts = json.loads(count_file.read_text(encoding="utf-8"))
    rows = recorded_rows(workdir / "state" / "recordings")
    if not rows:
        raise RuntimeError("the service recorded nothing: the benchmark must run as shipped")
    assert stream.drops is not None
    stream_writes: Dict[str, int] = {}
    for w in gx.writes:
        if stream.start <= w.at <= stream.end:
            stream_writes[w.suffix] = stream_writes.get(w.suffix, 0) + 1
    return Figures(
        changes=stream.published,
        delivered=delivered,
        bare_total=counts["messages"],
        cpu={name: after[name].cpu_s - before[name].cpu_s for name in before},
        hwm_kb={name: after[name].hwm_kb for name in after},
        latencies=latencies(stream.drops, gx, target),
        drops=stream.all_drops,
        stream_writes=stream_writes,
        load=(load_before, os.getloadavg()[0]),
        recorded_rows=rows,
    )


def recorded_rows(directory: Path) -> int:
    """Return the rows in the day recordings under ``directory`` (headers not counted)."""
    lines = 0
    for path in directory.glob("*.csv"):
        lines += len(path.read_text(encoding="utf-8").splitlines()) - 1
    return lines


def report(args: argparse.Namespace, run: Figures) -> None:
    """Print one run's figures."""
    # Both subscribe to the same topics on the same loopback broker at QoS 0: they receive the
    # same messages; the bare subscriber counts them (the stream phase plus the dump before).
    out = sys.stdout
    out.write(
        f"stream: {args.topics}-topic dump, then {args.rate:g} msg/s for {args.duration:g} s "
        f"({run.changes} changes, {run.delivered} messages delivered on the subscribed "
        f"topics in the stream phase; the bare subscriber got {run.bare_total} in all, dump "
        f"included); load average {run.load[0]:.2f} before, {run.load[1]:.2f} after\n"
    )
    out.write(f"{'':28}{'venus-prio run':>16}{'bare aiomqtt':>16}{'ratio':>8}\n")
    s_cpu, b_cpu = run.cpu["service"], run.cpu["bare"]
    out.write(f"{'CPU s (stream phase)':28}{s_cpu:16.2f}{b_cpu:16.2f}{run.ratio():8.2f}\n")
    s_100k, b_100k = run.per_100k("service"), run.per_100k("bare")
    out.write(f"{'CPU s per 100k messages':28}{s_100k:16.2f}{b_100k:16.2f}{run.ratio():8.2f}\n")
    s_hwm, b_hwm = run.hwm_kb["service"] / 1024, run.hwm_kb["bare"] / 1024
    out.write(f"{'peak RSS (VmHWM) MB':28}{s_hwm:16.1f}{b_hwm:16.1f}{run.rss_ratio():8.2f}\n")
    lat = run.latencies
    if lat:
        out.write(
            f"N/-to-W/ latency over the {len(lat)} of {run.drops} PV drops that needed a write "
            f"({args.actuator}): p50 {percentile(lat, 50) * 1000:.1f} ms, "
            f"p99 {percentile(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms\n"
        )
    else:
        out.write("N/-to-W/ latency: no PV drop produced a write\n")
    setting = run.stream_writes.get(paths.MAX_DISCHARGE_POWER.topic_suffix(), 0)
    override = run.stream_writes.get(paths.OVERRIDE_MAX_DISCHARGE.topic_suffix(), 0)
    out.write(
        f"writes applied by the replayer in the stream phase: {setting} to the setting, "
        f"{override} to the override ({(setting + override) / args.duration:.2f} per s); "
        f"{run.recorded_rows} rows recorded\n"
    )


def report_median(runs: Sequence[Figures]) -> None:
    """Print the median of each figure over the runs."""

    def median(values: Sequence[float]) -> float:
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    with_lat = [r for r in runs if r.latencies]
    p50 = median([percentile(r.latencies, 50) * 1000 for r in with_lat]) if with_lat else None
    p99 = median([percentile(r.latencies, 99) * 1000 for r in with_lat]) if with_lat else None
    writes = median([sum(r.stream_writes.values()) for r in runs])
    latency = "-" if p50 is None or p99 is None else f"{p50:.1f} / {p99:.1f} ms"
    sys.stdout.write(
        f"median of {len(runs)} runs: CPU ratio {median([r.ratio() for r in runs]):.2f} "
        f"(runs: {', '.join(f'{r.ratio():.2f}' for r in runs)}), "
        f"RSS ratio {median([r.rss_ratio() for r in runs]):.2f}, "
        f"N/-to-W/ p50 / p99 {latency}, writes in the stream phase {writes:g}, "
        f"load average {median([r.load[0] for r in runs]):.2f}\n"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=60.0, help="stream phase, s")
    parser.add_argument("--rate", type=float, default=200.0, help="N/ messages per second")
    parser.add_argument("--topics", type=int, default=1500, help="items in the full dump")
    parser.add_argument(
        "--subscribed-share",
        type=float,
        default=0.1,
        help="share of the stream on topics venus-prio subscribes to",
    )
    parser.add_argument("--event-period", type=float, default=1.0, help="PV rise+drop, s")
    parser.add_argument(
        "--actuator",
        choices=("setting", "override"),
        default="setting",
        help="venus-prio's actuator.kind",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median ends the report")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cprofile", type=Path, help="profile the service into this file")
    parser.add_argument("--bare-subscriber", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.bare_subscriber:
        asyncio.run(bare_subscriber(args.port, args.count_file))
        return 0
    binary = mosquitto_binary()
    if binary is None:
        sys.stderr.write("mosquitto is not installed (apt-get install mosquitto)\n")
        return 2
    command = [sys.executable, "tests/bench/bench_mqtt.py", *raw]
    sys.stdout.write(f"command: {' '.join(shlex.quote(a) for a in command)}\n")
    runs: List[Figures] = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
            workdir = Path(tmp)
            with started(Broker(binary, workdir)) as broker:
                runs.append(asyncio.run(bench(args, workdir, broker.port)))
        report(args, runs[-1])
        sys.stdout.flush()
    if len(runs) > 1:
        report_median(runs)
    if args.cprofile:
        sys.stdout.write(f"\ncProfile of the service ({args.cprofile}), top 25 by own time:\n")
        pstats.Stats(str(args.cprofile), stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
