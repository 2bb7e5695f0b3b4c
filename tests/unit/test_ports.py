"""The test brokers' ports: outside the ephemeral range, and kept from a parallel test run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def locked_by_this_process(port: int) -> bool:
    """Return whether this process holds ``port``'s lock (``/proc/locks``: type, pid, inode)."""
    inode = (LOCKS / str(port)).stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" lines are waiters, not holders
            continue
        if int(fields[4]) == os.getpid() and int(fields[5].rsplit(":", 1)[1]) == inode:
            return True
    return False


def test_a_reserved_port_is_outside_the_ephemeral_range_and_held_until_released() -> None:
    low, high = ephemeral_range()
    reservations = [reserve_port() for _ in range(20)]
    ports = [r.port for r in reservations]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
    assert not any(lockable_elsewhere(port) for port in ports)
    assert all(locked_by_this_process(port) for port in ports)
    for reservation in reservations:
        reservation.release()
    # Released: this process holds none of them. (Whether another process can take each one
    # at once is up to the other test runs: under xdist and a second make test, one took a
    # just-released port before this test could look.)
    assert not any(locked_by_this_process(port) for port in ports)
