"""Fixtures for integration tests: a real Mosquitto broker on a free loopback port, a fake GX.

``secure_mosquitto`` adds what a GX in the "Secured" profile serves: a TLS listener with the
GX's self-signed certificate (``CN=venus.local``) that takes only the GX password; the plain
listener stays open on loopback, where the GX's own dbus-flashmq plugin (here ``FakeGx``) sits.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Any,
    AsyncContextManager,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterator,
    Optional,
    Tuple,
    TypeVar,
)

import pytest

from tests.integration.dbus_fixtures import (  # noqa: F401  (fixtures: found here by pytest)
    backend,
    dbus_daemon,
    dbus_daemon_process,
)
from tests.ports import reserve_port
from tests.tools import require_tool
from venus_prio.fakes.mqtt_gx import DEFAULT_PORTAL_ID, FakeGx
from venus_prio.tasks import cancel_and_wait
from venus_prio.venus.source import Source

MOSQUITTO = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
T = TypeVar("T")


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


@dataclass(frozen=True)
class SecureListener:
    """A TLS listener that takes only the users in ``passwords`` (name -> password)."""

    cert: Path
    key: Path
    passwords: Dict[str, str]


class Broker:
    """A Mosquitto process on a fixed loopback port that can be stopped and started again.

    With ``secure``, a second listener on ``tls_port`` speaks TLS and wants a password; the
    plain one on ``port`` stays anonymous (settings are per listener).
    """

    def __init__(
        self, binary: str, workdir: Path, *, secure: Optional[SecureListener] = None
    ) -> None:
        self.binary = binary
        self.host = HOST
        # Reserved while this object lives: a stopped broker must find its port free again.
        self._ports = [reserve_port(HOST)]
        self.port = self._ports[0].port
        self.tls_port: Optional[int] = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [
            "per_listener_settings true",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user, which cannot read pytest's
            # private temporary directories (the log, the keys, the password file).
            lines.insert(0, "user root")
        if secure is not None:
            self._ports.append(reserve_port(HOST))
            self.tls_port = self._ports[-1].port
            lines += [
                f"listener {self.tls_port} {HOST}",
                f"certfile {secure.cert}",
                f"keyfile {secure.key}",
                "allow_anonymous false",
                f"password_file {_password_file(workdir / 'passwd', secure.passwords)}",
            ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process: Optional[subprocess.Popen[bytes]] = None

    def connections(self, port: int) -> int:
        """Return how many TCP connections the broker accepted on ``port`` so far.

        A connection whose TLS handshake fails while being accepted is logged without its port
        ("Client connection from <ip> failed: <ssl error>"): that can only be ``tls_port``.
        """
        if not self.log.exists():
            return 0
        lines = self.log.read_text(encoding="utf-8").splitlines()
        accepted = sum(
            1 for line in lines if "New connection from" in line and f" on port {port}." in line
        )
        if port != self.tls_port:
            return accepted
        return accepted + sum(
            1 for line in lines if "Client connection from" in line and " failed: " in line
        )

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

    def close(self) -> None:
        """Kill the broker and give its ports up (to other test runs too)."""
        self.stop()
        for reservation in self._ports:
            reservation.release()

    async def restart(self, down_s: float) -> None:
        """Stop the broker, keep it down for ``down_s`` and start it on the same port."""
        self.stop()
        await asyncio.sleep(down_s)
        self.start()


def _tool(name: str, package: str) -> str:
    """Return the path of ``name``; skip (fail on CI) the test when it is not installed."""
    hint = f"the MQTT integration tests need the `{package}` package (apt-get install {package})"
    return require_tool(name, hint=hint, skipping="MQTT INTEGRATION TESTS")


def _password_file(path: Path, passwords: Dict[str, str]) -> Path:
    """Write a Mosquitto password file (hashed by mosquitto_passwd) and return its path."""
    tool = _tool("mosquitto_passwd", "mosquitto")
    path.write_text("", encoding="utf-8")
    for user, password in passwords.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    return path


def _openssl(*args: str) -> None:
    subprocess.run([_tool("openssl", "openssl"), *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """A certificate a broker serves and the file a client must trust to accept it."""

    ca_file: Path
    listener: SecureListener


def self_signed_gx_certificate(directory: Path, name: str) -> SecureListener:
    """Make a GX's own certificate the way Venus OS does: self-signed, ``CN=venus.local``.

    No subjectAltName, like the GX's: the name is only in the subject. The returned listener
    has no passwords yet.
    """
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=venus.local", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return SecureListener(cert=cert, key=key, passwords={})


def ca_issued_certificate(directory: Path, name: str) -> Pki:
    """Make a throwaway CA and a server certificate it issued for ``localhost``/127.0.0.1.

    That is a regular broker (Home Assistant's own Mosquitto): the client checks the host name
    it connects to against the subjectAltName, as any TLS client does.
    """
    ca_cert, ca_key = directory / f"{name}-ca.crt", directory / f"{name}-ca.key"
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name} test CA", "-keyout", str(ca_key), "-out", str(ca_cert),
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n", encoding="utf-8")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return Pki(ca_file=ca_cert, listener=SecureListener(cert=cert, key=key, passwords={}))


@dataclass(frozen=True)
class Certificates:
    """Throwaway certificates, made once per test session."""

    gx: Pki  # the GX's self-signed certificate: it is its own CA file
    other_gx: Pki  # another GX's certificate: the wrong CA file for ``gx``
    ha: Pki  # a CA and the certificate it issued to Home Assistant's broker


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("pki")
    gx, other = (self_signed_gx_certificate(directory, name) for name in ("gx", "other-gx"))
    return Certificates(
        gx=Pki(ca_file=gx.cert, listener=gx),
        other_gx=Pki(ca_file=other.cert, listener=other),
        ha=ca_issued_certificate(directory, "ha"),
    )


def _mosquitto_or_skip() -> str:
    return mosquitto_binary() or _tool("mosquitto", "mosquitto")


@contextlib.contextmanager
def started(broker: Broker) -> Iterator[Broker]:
    """Start ``broker`` for the block; kill it and give its ports up at the end."""
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """Yield a running Mosquitto broker on a free loopback port; kill it at teardown."""
    with started(Broker(_mosquitto_or_skip(), tmp_path)) as broker:
        yield broker


def secure_broker(workdir: Path, pki: Pki, passwords: Dict[str, str]) -> Broker:
    """Return a (not yet started) broker serving ``pki`` on its TLS port to ``passwords``."""
    workdir.mkdir(parents=True, exist_ok=True)
    listener = SecureListener(cert=pki.listener.cert, key=pki.listener.key, passwords=passwords)
    return Broker(_mosquitto_or_skip(), workdir, secure=listener)


GX_USER = "venus-prio"  # what venus-prio sends when no username is configured
GX_PASSWORD = "gx-Pa55word-4-tests"


@pytest.fixture
def secure_mosquitto(tmp_path: Path, certificates: Certificates) -> Iterator[Broker]:
    """Yield a broker like a GX in the "Secured" profile (``tls_port``: TLS and the password)."""
    broker = secure_broker(tmp_path / "gx-broker", certificates.gx, {GX_USER: GX_PASSWORD})
    with started(broker):
        yield broker


FakeGxFactory = Callable[..., AsyncContextManager[FakeGx]]


def fake_gx_on(
    broker: Broker,
    *,
    portal_id: str = DEFAULT_PORTAL_ID,
    alive_timeout_s: float = 5.0,
    override: str = "honoured",
    override_expiry_s: float = 60.0,
) -> FakeGx:
    """Return a FakeGx for ``broker`` with test timings (alive 5 s, heartbeat every 0.2 s)."""
    return FakeGx(
        host=broker.host,
        port=broker.port,
        portal_id=portal_id,
        alive_timeout_s=alive_timeout_s,
        heartbeat_interval_s=0.2,
        override=override,
        override_expiry_s=override_expiry_s,
    )


@contextlib.asynccontextmanager
async def connected(gx: FakeGx) -> AsyncIterator[FakeGx]:
    """Run ``gx`` as a task while entered, from the moment it is connected to its broker."""
    async with running(gx.run()):
        await gx.wait_connected()
        yield gx


@pytest.fixture
def fake_gx(mosquitto: Broker) -> FakeGxFactory:
    """Return ``factory(**fake_gx_on options)``: runs a FakeGx on the broker while entered."""

    def running_fake_gx(**options: Any) -> AsyncContextManager[FakeGx]:
        return connected(fake_gx_on(mosquitto, **options))

    return running_fake_gx


@contextlib.asynccontextmanager
async def running(coro: Awaitable[None]) -> AsyncIterator[asyncio.Future[None]]:
    """Run ``coro`` as a task while the block runs; cancel and await it afterwards.

    Stopped like the service stops its tasks (``cancel_and_wait``): before Python 3.12 a task
    can survive one cancel (aiomqtt awaits every publish with ``asyncio.wait_for``, bpo-42130),
    and a single cancel then waits for it forever. An exception the task raised on its own is
    re-raised at exit.
    """
    task: asyncio.Future[None] = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        # It waits with asyncio.wait, not ``await task``: a cancellation of the test itself
        # must propagate.
        await cancel_and_wait([task])
        failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure


def run_async(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run a test coroutine in a fresh event loop with an overall timeout."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def ac_values_are(source: Source, expected: Tuple[Optional[float], ...]) -> Callable[[], bool]:
    """Return a check (to poll) that the snapshot shows ``expected`` AC loads, grid, AC PV."""

    def check() -> bool:
        snap = source.snapshot()
        return (snap.ac_load_w, snap.grid_w, snap.pv_ac_w) == expected

    return check


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)
