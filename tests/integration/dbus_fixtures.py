"""Fixtures that start a private, real dbus-daemon for the D-Bus transport tests.

conftest.py makes them available to every integration test; ``backend`` runs a test once per
D-Bus library.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Iterator, Optional

import pytest

from tests.tools import missing

STARTUP_TIMEOUT_S = 10.0

# A session-like bus for this test run only: the current user may own any name, send anything
# and receive every signal. (The system bus policy of a GX is stricter; not what is tested here.)
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


def dbus_daemon_binary() -> Optional[str]:
    return shutil.which("dbus-daemon") or next(
        (p for p in ("/usr/bin/dbus-daemon", "/bin/dbus-daemon") if os.access(p, os.X_OK)), None
    )


class DbusDaemon:
    """A dbus-daemon on a unix socket in a temporary directory; can be stopped and restarted."""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        # tempfile under /tmp, not pytest's tmp_path: a unix socket path must stay under 108 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="vp-dbus-"))
        self.socket = self._dir / "bus"
        self.config = self._dir / "bus.conf"
        self.config.write_text(_CONFIG.format(socket=self.socket), encoding="utf-8")
        self.address = ""
        self._process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> str:
        """Start the daemon; return the address it listens on."""
        if self.socket.exists():
            self.socket.unlink()  # left behind by a killed daemon
        process = subprocess.Popen(
            [self._binary, f"--config-file={self.config}", "--print-address", "--nofork"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self._process = process
        assert process.stdout is not None
        line = _read_line(process.stdout, STARTUP_TIMEOUT_S)
        if not line:
            self.stop()
            raise RuntimeError("dbus-daemon did not print its address")
        self.address = line
        return line

    def stop(self) -> None:
        """Kill the daemon (every client loses its connection at once)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=STARTUP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def _read_line(stream: IO[bytes], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        return ""
    return stream.readline().decode().strip()


def _require_binary() -> str:
    binary = dbus_daemon_binary()
    if binary is not None:
        return binary
    message = "dbus-daemon not found: install the `dbus` apt package (apt-get install dbus)"
    missing(message, skipping="D-BUS INTEGRATION TESTS")


@pytest.fixture
def dbus_daemon_process() -> Iterator[DbusDaemon]:
    """Yield a started ``DbusDaemon`` (for tests that stop and restart the bus)."""
    daemon = DbusDaemon(_require_binary())
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def dbus_daemon(dbus_daemon_process: DbusDaemon) -> str:
    """Yield the address of a private dbus-daemon, killed at teardown."""
    return dbus_daemon_process.address


@pytest.fixture(params=["dbus_fast", "dbus_next"])
def backend(request: pytest.FixtureRequest) -> str:
    """Return each D-Bus library in turn, by its ``DbusSource.backend`` name."""
    name: str = request.param
    return name
