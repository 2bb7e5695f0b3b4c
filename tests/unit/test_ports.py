"""The test brokers' ports: outside the ephemeral range, and kept from a parallel test run."""

from __future__ import annotations

import subprocess
import sys

from tests.ports import LOCKS, ephemeral_range, reserve_port

TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "w") as lock:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(1)
"""


def lockable_elsewhere(port: int) -> bool:
    """Return whether another process (a second test run) could take ``port``'s lock."""
    probe = subprocess.run([sys.executable, "-c", TRY_LOCK, str(LOCKS / str(port))], check=False)
    return probe.returncode == 0


def test_a_reserved_port_is_outside_the_ephemeral_range_and_held_until_released() -> None:
    low, high = ephemeral_range()
    reservations = [reserve_port() for _ in range(20)]
    ports = [r.port for r in reservations]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
    assert not any(lockable_elsewhere(port) for port in ports)
    for reservation in reservations:
        reservation.release()
    assert all(lockable_elsewhere(port) for port in ports)
