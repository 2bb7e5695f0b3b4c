"""Benchmark script (not a test): `venus-prio run` vs a bare subscriber on a GX-like stream.

Run from the repository root::

    .venv-3.12/bin/python tests/bench/bench_mqtt.py [--duration 60] [--rate 200]

It starts its own Mosquitto on a free loopback port and, in this process, a replayer: a
``FakeGx`` holding a realistic N/ tree (``--topics`` items, default 1,500: mostly items
venus-prio does not subscribe to, as on a real GX, plus the ones it does). The first full
keepalive makes the replayer dump them all; after that it publishes ``--rate`` changes per
second for ``--duration`` seconds, ``--subscribed-share`` of them on subscribed topics, and
every ``--event-period`` a PV rise and a PV drop that make the controller write. The replayer
answers R/ and applies W/ like the fake GX always does.

Two processes run side by side on the same broker: ``python -m venus_prio run`` (dry_run
false) and a bare aiomqtt subscriber (this script with ``--bare-subscriber``) subscribed to the
same topics that only json-decodes each payload. For both it reports CPU seconds (utime +
stime from /proc/<pid>/stat, over the stream phase) per 100k messages delivered, peak RSS
(VmHWM), and the ratios; for the service the N/-to-W/ latency: from the replayer publishing a
PV drop to the W/ with the lower limit arriving at the replayer, p50/p99 over all drops.

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
import socket
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

from venus_prio.sim.fakegx import DEFAULT_PORTAL_ID, FakeGx  # noqa: E402
from venus_prio.venus import flashmq, paths  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
PID = DEFAULT_PORTAL_ID
MAX_W = 3000.0
SOC = 12.0  # floor 10 %: PV_PRIORITY, the limit follows the PV
PV_HIGH = 2000.0  # 0.8 * 2000 - 20 -> 1550 W
PV_LOW = 400.0  # 0.8 * 400 - 20 -> 300 W
LOW_TARGET = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_mosquitto(workdir: Path) -> Tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {HOST}\nallow_anonymous true\npersistence false\nlog_dest stderr\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10.0
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("mosquitto did not start") from None
            time.sleep(0.02)


def service_config(port: int, workdir: Path) -> Path:
    data = {
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
        "venus": {"transport": "mqtt", "host": HOST, "port": port, "portal_id": PID},
        "homeassistant": {"enabled": False},  # same subscriptions as the bare subscriber
        "state_dir": str(workdir / "state"),
        "log_level": "INFO",
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


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


async def replay(
    gx: FakeGx, *, rate: float, duration: float, share: float, event_period: float, seed: int
) -> Stream:
    """Publish ``rate`` changes per second for ``duration`` seconds; return what went out."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    other = [s for s in gx.items if s not in {i.topic_suffix() for i in paths.INPUTS}]
    noisy = [paths.BATTERY_POWER, paths.SOC]  # not DC loads: they would move the PV share
    stream = Stream(drops=[])
    assert stream.drops is not None
    start = loop.time()
    next_event = start + event_period / 2
    pv_low = False
    n = 0
    while True:
        now = loop.time()
        if now - start >= duration:
            return stream
        if now >= next_event:
            pv_low = not pv_low
            next_event += event_period / 2
            if pv_low:
                stream.all_drops += 1
                if gx.setting is not None and gx.setting > LOW_TARGET:
                    stream.drops.append(loop.time())
            await gx.set_value(paths.PV_DC, PV_LOW if pv_low else PV_HIGH)
            stream.published += 1
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


def latencies(drops: Sequence[float], gx: FakeGx) -> List[float]:
    """Return, for each PV drop, the delay until the fake GX received the lower limit."""
    suffix = paths.MAX_DISCHARGE_POWER.topic_suffix()
    writes = [w for w in gx.writes if w.suffix == suffix and w.value == LOW_TARGET]
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


async def bench(args: argparse.Namespace, workdir: Path, port: int) -> Dict[str, object]:
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
    config = service_config(port, workdir)
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
    assert stream.drops is not None
    return {
        "before": before,
        "after": after,
        "stream": stream,
        "bare_messages": counts["messages"],
        "delivered": delivered,
        "latencies": latencies(stream.drops, gx),
        "drops": stream.all_drops,
        "writes": len(gx.writes),
        "service_cmd": service_cmd,
        "bare_cmd": bare_cmd,
    }


def report(args: argparse.Namespace, result: Dict[str, object], argv: Sequence[str]) -> None:
    before = result["before"]
    after = result["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    stream = result["stream"]
    assert isinstance(stream, Stream)
    delivered = result["delivered"]
    assert isinstance(delivered, int)
    bare_total = result["bare_messages"]
    lat = result["latencies"]
    assert isinstance(lat, list)
    # Both subscribe to the same topics on the same loopback broker at QoS 0: they receive the
    # same messages; the bare subscriber counts them (the stream phase plus the dump before).
    rows: Dict[str, Tuple[float, float, int]] = {}
    for name in ("service", "bare"):
        cpu = after[name].cpu_s - before[name].cpu_s
        per_100k = cpu / max(delivered, 1) * 100_000
        rows[name] = (cpu, per_100k, after[name].hwm_kb)
    out = sys.stdout
    out.write(f"command: {' '.join(shlex.quote(a) for a in argv)}\n")
    out.write(
        f"stream: {args.topics}-topic dump, then {args.rate:g} msg/s for {args.duration:g} s "
        f"({stream.published} changes, {delivered} messages delivered on the subscribed "
        f"topics in the stream phase; the bare subscriber got {bare_total} in all, dump "
        "included)\n"
    )
    out.write(f"{'':28}{'venus-prio run':>16}{'bare aiomqtt':>16}{'ratio':>8}\n")
    s_cpu, s_100k, s_hwm = rows["service"]
    b_cpu, b_100k, b_hwm = rows["bare"]
    out.write(f"{'CPU s (stream phase)':28}{s_cpu:16.2f}{b_cpu:16.2f}{s_cpu / b_cpu:8.2f}\n")
    out.write(f"{'CPU s per 100k messages':28}{s_100k:16.2f}{b_100k:16.2f}{s_100k / b_100k:8.2f}\n")
    out.write(
        f"{'peak RSS (VmHWM) MB':28}{s_hwm / 1024:16.1f}{b_hwm / 1024:16.1f}{s_hwm / b_hwm:8.2f}\n"
    )
    if lat:
        out.write(
            f"N/-to-W/ latency over the {len(lat)} of {result['drops']} PV drops that needed a "
            "write: "
            f"p50 {percentile(lat, 50) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms, "
            f"max {max(lat) * 1000:.1f} ms\n"
        )
    else:
        out.write("N/-to-W/ latency: no PV drop produced a write\n")
    out.write(f"writes applied by the replayer: {result['writes']}\n")
    if args.cprofile:
        out.write(f"\ncProfile of the service ({args.cprofile}), top 25 by own time:\n")
        pstats.Stats(str(args.cprofile), stream=out).sort_stats("tottime").print_stats(25)


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
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        workdir = Path(tmp)
        broker, port = start_mosquitto(workdir)
        try:
            result = asyncio.run(bench(args, workdir, port))
        finally:
            broker.kill()
            broker.wait()
        report(args, result, [sys.executable, "tests/bench/bench_mqtt.py", *raw])
    return 0


if __name__ == "__main__":
    sys.exit(main())
