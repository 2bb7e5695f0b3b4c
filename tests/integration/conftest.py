"""Fixtures for integration tests: a real Mosquitto broker on a free loopback port, a fake GX.

Tests are plain functions that call ``asyncio.run`` (no async pytest plugin): the ``fake_gx``
fixture therefore hands out an async context manager that runs a ``FakeGx`` task inside the
test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import (
    AsyncContextManager,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Optional,
    TypeVar,
)

import pytest

from venus_prio.sim.fakegx import DEFAULT_PORTAL_ID, FakeGx

MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def mosquitto_binary() -> Optional[str]:
    if os.access(MOSQUITTO, os.X_OK):
        return MOSQUITTO
    return shutil.which("mosquitto")


class Broker:
    """A Mosquitto process on a fixed loopback port that can be stopped and started again."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.host = HOST
        self.port = _free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n",
            encoding="utf-8",
        )
        self._process: Optional[subprocess.Popen[bytes]] = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
                raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the broker (every client loses its connection at once)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    async def restart(self, down_s: float) -> None:
        """Stop the broker, keep it down for ``down_s`` and start it on the same port."""
        self.stop()
        await asyncio.sleep(down_s)
        self.start()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """Yield a running Mosquitto broker on a free loopback port; kill it at teardown."""
    binary = mosquitto_binary()
    if binary is None:
        message = (
            "mosquitto is not installed: the MQTT integration tests need the `mosquitto` "
            "package (apt-get install mosquitto)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        # Loud on purpose, past pytest's capture: a silently skipped suite looks like a pass.
        print(f"\nWARNING: SKIPPING MQTT INTEGRATION TESTS: {message}", file=sys.__stderr__)
        pytest.skip(f"!!! SKIPPED: {message} !!!")
    broker = Broker(binary, tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


FakeGxFactory = Callable[..., AsyncContextManager[FakeGx]]


@pytest.fixture
def fake_gx(mosquitto: Broker) -> FakeGxFactory:
    """Return ``running_fake_gx(**overrides)``: runs a FakeGx task on the broker while entered.

    Timeouts are short for tests (alive 5 s, heartbeat every 0.2 s) unless overridden.
    """

    @contextlib.asynccontextmanager
    async def running_fake_gx(
        *,
        portal_id: str = DEFAULT_PORTAL_ID,
        alive_timeout_s: float = 5.0,
        heartbeat_interval_s: float = 0.2,
    ) -> AsyncIterator[FakeGx]:
        gx = FakeGx(
            host=mosquitto.host,
            port=mosquitto.port,
            portal_id=portal_id,
            alive_timeout_s=alive_timeout_s,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        async with running(gx.run()):
            await gx.wait_connected()
            yield gx

    return running_fake_gx


@contextlib.asynccontextmanager
async def running(coro: Awaitable[None]) -> AsyncIterator[asyncio.Future[None]]:
    """Run ``coro`` as a task while the block runs; cancel and await it afterwards.

    An exception the task raised on its own is re-raised at exit.
    """
    task: asyncio.Future[None] = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        # asyncio.wait, not ``await task``: a cancellation of the test itself must propagate.
        task.cancel()
        await asyncio.wait({task})
        failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure


def run_async(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run a test coroutine in a fresh event loop with an overall timeout."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
