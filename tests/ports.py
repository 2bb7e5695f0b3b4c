"""Loopback ports for the test brokers: outside the ephemeral range, and one test run's alone.

Outside the ephemeral range: a client that keeps reconnecting to a stopped broker's port may be
given that very port as its own source port by the kernel if it lies in the ephemeral range, and
then connects to itself (TCP simultaneous open). The port is then taken, and the broker cannot
start again ("Address already in use"; paho reads its own CONNECT as "Unrecognised command 16").
Seen once in a full run beside a second one. On a GX or a Pi the brokers listen on 1883 and
8883, below the range, so this is the tests' own hazard, not the product's.

One run's alone: while a broker is stopped its port looks free, and a second test run on the
same machine must not start its broker there. A lock file per port, held for as long as the
reservation lives, keeps the parallel runs apart.
"""

from __future__ import annotations

import fcntl
import random
import socket
import tempfile
from pathlib import Path
from typing import IO, List, Tuple

LOCKS = Path(tempfile.gettempdir()) / "venus-prio-test-ports"
LOWEST = 10000  # well above the ports system services are given


def ephemeral_range() -> Tuple[int, int]:
    """Return the kernel's range of source ports for outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


class PortReservation:
    """A free loopback port, kept from other test runs until released or garbage-collected."""

    def __init__(self, port: int, lock: IO[str]) -> None:
        self.port = port
        self._lock = lock

    def release(self) -> None:
        self._lock.close()  # closing the file drops its lock


def reserve_port(host: str = "127.0.0.1") -> PortReservation:
    """Return a reservation of a port on ``host`` that nothing listens on."""
    low, high = ephemeral_range()
    candidates: List[range] = [r for r in (range(LOWEST, low), range(high + 1, 65536)) if r]
    if not candidates:
        raise RuntimeError(f"no port outside the ephemeral range {low}-{high}")
    LOCKS.mkdir(exist_ok=True)
    chooser = random.Random()  # its own: a test that seeds ``random`` must not steer this
    for _ in range(2000):
        port = chooser.choice(chooser.choice(candidates))
        lock = (LOCKS / str(port)).open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, port))
        except OSError:
            lock.close()
            continue
        return PortReservation(port, lock)
    raise RuntimeError("no free loopback port found outside the ephemeral range")
