"""TLS and a password against a real broker: a GX in Venus OS's "Secured" profile.

The GX broker (``secure_mosquitto``) serves the GX's self-signed certificate (``CN=venus.local``,
no subjectAltName) on its TLS port and takes only the GX password there; the fake GX sits on
the plain loopback listener, as dbus-flashmq does inside the real broker. venus-prio dials
127.0.0.1 - an address the certificate does not name, like a GX reached by its IP.

Home Assistant's own broker (``homeassistant.broker``) is a regular one: a throwaway CA issued
its certificate for localhost/127.0.0.1, and it has its own password.

Every case runs for both (``side``). Logs are captured at DEBUG: no line may hold a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional

import aiomqtt
import pytest

from tests.integration.conftest import (
    GX_PASSWORD,
    GX_USER,
    Broker,
    Certificates,
    Pki,
    eventually,
    run_async,
    running,
    secure_broker,
    started,
)
from tests.integration.harness import (
    PID,
    PLANT,
    config_data,
    control_config,
    mqtt_gx,
    serving,
    start_command,
    subprocess_env,
    venus_config,
    wait_exit,
    write_yaml,
)
from venus_prio.config import BrokerConfig, Config, HomeAssistantConfig, TlsConfig
from venus_prio.homeassistant import state_prefix, state_topics

pytestmark = pytest.mark.integration

HA_USER = "homeassistant-user"
HA_PASSWORD = "ha-Pa55word-4-tests"
TOPICS = state_topics(state_prefix(HomeAssistantConfig(), portal_id=PID))
# Retry cap for these tests and the window connection attempts are counted in.
CAP_S = 2.0
WINDOW_S = 5.0


@dataclass(frozen=True)
class Side:
    """One broker venus-prio logs in to over TLS, and how to tell it got through."""

    key: str  # where its settings live in the config file
    gx_broker: Broker  # the fake GX's broker (plain port)
    secure: Broker  # the broker with the TLS listener venus-prio must log in to
    pki: Pki  # what that listener serves
    wrong_ca: Path  # a CA file that did not sign it
    user: Optional[str]  # None: venus-prio's default user name
    password: str

    def config(self, state_dir: Path, tls: TlsConfig, password: Optional[str] = None) -> Config:
        """Return a service config that reaches ``secure`` with ``tls`` and the password."""
        login = BrokerConfig(
            host=self.secure.host,
            port=self.port,
            username=self.user,
            password=self.password if password is None else password,
            tls=tls,
        )
        venus = dataclasses.replace(
            venus_config("mqtt", broker=self.gx_broker), reconnect_max_s=CAP_S
        )
        ha = HomeAssistantConfig(enabled=False)
        if self.key == "venus":
            venus = dataclasses.replace(venus, broker=login)
        else:
            ha = HomeAssistantConfig(broker=login)
        return Config(
            control=control_config(), venus=venus, homeassistant=ha, state_dir=str(state_dir)
        )

    @property
    def port(self) -> int:
        assert self.secure.tls_port is not None
        return self.secure.tls_port


@pytest.fixture(params=["venus", "homeassistant.broker"])
def side(
    request: pytest.FixtureRequest, tmp_path: Path, certificates: Certificates
) -> Iterator[Side]:
    with contextlib.ExitStack() as stack:
        gx_broker = stack.enter_context(
            started(secure_broker(tmp_path / "gx-broker", certificates.gx, {GX_USER: GX_PASSWORD}))
        )
        if request.param == "venus":
            yield Side("venus", gx_broker, gx_broker, certificates.gx,
                       certificates.other_gx.ca_file, None, GX_PASSWORD)  # fmt: skip
            return
        ha_broker = stack.enter_context(
            started(secure_broker(tmp_path / "ha-broker", certificates.ha, {HA_USER: HA_PASSWORD}))
        )
        # The GX's own certificate is no CA of the Home Assistant broker's.
        yield Side("homeassistant.broker", gx_broker, ha_broker, certificates.ha,
                   certificates.gx.ca_file, HA_USER, HA_PASSWORD)  # fmt: skip


@contextlib.asynccontextmanager
async def running_service(side: Side, config: Config) -> AsyncIterator[Callable[[], bool]]:
    """Run the fake GX and venus-prio; yield "has venus-prio got through to ``side``?".

    Through to the GX: the GX accepted a write of venus-prio's (the hub4 override under the
    default ``actuator: auto``, the setting elsewhere). Through to Home Assistant's broker:
    the device is ``online`` there (seen by a client on its plain port).
    """
    async with mqtt_gx(side.gx_broker, PLANT) as gx, aiomqtt.Client(
        side.secure.host, side.secure.port
    ) as ha:
        seen: List[bytes] = []

        async def collect() -> None:
            async for message in ha.messages:
                seen.append(bytes(message.payload))

        await ha.subscribe(TOPICS.availability)
        async with running(collect()), serving(config):
            if side.key == "venus":
                yield lambda: any(w.accepted for w in gx.received())
            else:
                yield lambda: b"online" in seen


def assert_no_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """Fail when any captured log line (message or traceback) holds one of ``secrets``."""
    assert caplog.records, "nothing was logged: the capture is not working"
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text, f"a password in the log: {record.name}: {text}"


def errors_naming(caplog: pytest.LogCaptureFixture, setting: str) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and setting in r.getMessage()
    ]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


# -- getting through -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ca_file", "insecure"])
def test_tls_and_the_password_get_through(
    side: Side, how: str, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    """The CA file verifies the broker (the GX's by the name venus.local); insecure skips it."""
    if how == "ca_file":
        tls = TlsConfig(enabled=True, ca_file=str(side.pki.ca_file))
    else:
        tls = TlsConfig(enabled=True, insecure=True)

    async def scenario() -> None:
        async with running_service(side, side.config(tmp_path, tls)) as through:
            await eventually(through, timeout=20.0, what=f"venus-prio through to {side.key}")

    run_async(scenario())
    assert not [r for r in debug_logs.records if r.levelno >= logging.ERROR]
    assert_no_secret(debug_logs, side.password)


# -- refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrong", "setting"),
    [
        ("ca_file", "tls.ca_file"),
        ("no ca_file", "tls.ca_file"),
        ("server_name", "tls.server_name"),
        ("password", "password"),
        ("no password", "password"),
    ],
)
def test_a_refusal_is_one_clear_error_and_a_capped_retry(
    side: Side, wrong: str, setting: str, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    """A refused certificate or login: one ERROR naming the setting, one attempt per cap."""
    tls = TlsConfig(enabled=True, ca_file=str(side.pki.ca_file))
    password = side.password
    if wrong == "ca_file":
        tls = dataclasses.replace(tls, ca_file=str(side.wrong_ca))
    elif wrong == "no ca_file":
        tls = dataclasses.replace(tls, ca_file=None)  # the system's CAs know no test CA
    elif wrong == "server_name":
        tls = dataclasses.replace(tls, server_name="gx.example.org")
    elif wrong == "password":
        password = "not-" + side.password
    config = side.config(tmp_path, tls, password=password)
    if wrong == "no password":
        login = dataclasses.replace(side_broker(config, side), password=None)
        config = with_broker(config, side, login)
    full_key = f"{side.key}.{setting}"

    async def scenario() -> None:
        async with running_service(side, config) as through:
            await eventually(
                lambda: bool(errors_naming(debug_logs, full_key)),
                timeout=10.0,
                what=f"an error naming {full_key}",
            )
            first = side.secure.connections(side.port)
            await asyncio.sleep(WINDOW_S)
            attempts = side.secure.connections(side.port) - first
            assert not through()
        # One attempt per cap: at most WINDOW_S / CAP_S, one more for a window's edges.
        assert 1 <= attempts <= WINDOW_S / CAP_S + 1, attempts

    run_async(scenario())
    errors = errors_naming(debug_logs, full_key)
    assert len(errors) == 1, errors
    assert f"{side.secure.host}:{side.port}" in errors[0]
    assert_no_secret(debug_logs, side.password, password)


def side_broker(config: Config, side: Side) -> BrokerConfig:
    if side.key == "venus":
        return config.venus.broker
    assert config.homeassistant.broker is not None
    return config.homeassistant.broker


def with_broker(config: Config, side: Side, broker: BrokerConfig) -> Config:
    if side.key == "venus":
        return dataclasses.replace(config, venus=dataclasses.replace(config.venus, broker=broker))
    ha = dataclasses.replace(config.homeassistant, broker=broker)
    return dataclasses.replace(config, homeassistant=ha)


# -- the command line ------------------------------------------------------------------------


def test_check_config_and_its_probe_never_show_the_password(side: Side, tmp_path: Path) -> None:
    """``check-config`` masks the password; ``--probe`` logs in over TLS without showing it."""
    config = side.config(tmp_path, TlsConfig(enabled=True, ca_file=str(side.pki.ca_file)))
    data = config_data(config.venus, tmp_path / "state")
    login = side_broker(config, side)
    section = {
        "host": login.host,
        "port": login.port,
        "username": login.username,
        "password": login.password,
        "tls": {"enabled": True, "ca_file": login.tls.ca_file},
    }
    if side.key == "venus":
        data["venus"].update(section)
    else:
        data["homeassistant"] = {"enabled": True, "broker": section}
    config_file = write_yaml(tmp_path / "config.yaml", {**data, "log_level": "DEBUG"})
    output = tmp_path / "check-config.log"

    async def scenario() -> List[int]:
        codes = []
        async with mqtt_gx(side.gx_broker, PLANT):
            for args in (["check-config", str(config_file)],
                         ["check-config", "--probe", str(config_file)]):  # fmt: skip
                process = await start_command(output, *args)
                codes.append(await wait_exit(process, output))
        return codes

    codes = run_async(scenario())
    text = output.read_text(encoding="utf-8")
    assert codes == [0, 0], text
    assert "password: '***'" in text  # the effective config shows that one is set
    assert side.password not in text


def test_a_plain_client_on_the_tls_port_is_told_so_once(
    tmp_path: Path, certificates: Certificates, debug_logs: pytest.LogCaptureFixture
) -> None:
    """The broker just drops it (no CONNACK): the port is asked whether it speaks TLS."""
    with started(
        secure_broker(tmp_path / "gx-broker", certificates.gx, {GX_USER: GX_PASSWORD})
    ) as broker:
        side = Side("venus", broker, broker, certificates.gx, certificates.other_gx.ca_file,
                    None, GX_PASSWORD)  # fmt: skip
        config = side.config(tmp_path, TlsConfig(enabled=False))

        async def scenario() -> None:
            async with running_service(side, config) as through:
                # aiomqtt gives up on a CONNECT without an answer after 10 s.
                await eventually(
                    lambda: bool(errors_naming(debug_logs, "venus.tls.enabled")),
                    timeout=20.0,
                    what="an error naming venus.tls.enabled",
                )
                await asyncio.sleep(CAP_S + 1)  # a retry that would log it again
                assert not through()

        run_async(scenario())
    errors = errors_naming(debug_logs, "venus.tls.enabled")
    assert len(errors) == 1, errors
    assert f"{broker.host}:{side.port} speaks TLS" in errors[0]


# -- the probe answers at once -----------------------------------------------------------------

# What ``--probe`` must answer within (issue 16); the retry cap is the default 30 s, so an answer
# in time cannot come from waiting out a retry.
PROBE_ANSWER_S = 10.0


@pytest.mark.parametrize(
    ("wrong", "setting"),
    [
        ("ca_file", "venus.tls.ca_file"),
        ("server_name", "venus.tls.server_name"),
        ("password", "venus.password"),
        ("tls on the plain port", "venus.tls:"),
        ("plain on the TLS port", "venus.tls.enabled"),
    ],
)
def test_the_probe_names_a_refused_setting_at_once(
    wrong: str, setting: str, tmp_path: Path, certificates: Certificates
) -> None:
    """One line naming the setting, exit 2, well before a retry (30 s) could have helped."""
    with started(
        secure_broker(tmp_path / "gx-broker", certificates.gx, {GX_USER: GX_PASSWORD})
    ) as broker:
        assert broker.tls_port is not None
        tls: Dict[str, Any] = {"enabled": True, "ca_file": str(certificates.gx.ca_file)}
        port, password = broker.tls_port, GX_PASSWORD
        if wrong == "ca_file":
            tls["ca_file"] = str(certificates.other_gx.ca_file)
        elif wrong == "server_name":
            tls["server_name"] = "gx.example.org"
        elif wrong == "password":
            password = "not-" + GX_PASSWORD
        elif wrong == "tls on the plain port":
            port = broker.port
        else:
            tls = {"enabled": False}
        data = config_data(venus_config("mqtt", broker=broker), tmp_path / "state")
        data["venus"].update(port=port, password=password, tls=tls, reconnect_max_s=30)
        config_file = write_yaml(tmp_path / "config.yaml", data)
        started_at = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "venus_prio", "check-config", "--probe", str(config_file)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        elapsed = time.monotonic() - started_at
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("Cannot connect to the GX broker: " + setting), lines[0]
    assert f"127.0.0.1:{port}" in lines[0]
    assert GX_PASSWORD not in result.stdout + result.stderr
    # The same cause is not logged a second time beside the answer.
    assert setting not in result.stderr, result.stderr
    assert elapsed < PROBE_ANSWER_S, elapsed
