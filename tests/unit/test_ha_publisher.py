"""The pure parts of the Home Assistant publisher: command mapping and broker selection."""

from __future__ import annotations

import asyncio
from typing import List, Optional, Tuple

import pytest

from venus_prio.config import BrokerConfig, HomeAssistantConfig, TlsConfig, VenusConfig
from venus_prio.ha_publisher import command_handler, command_mode, ha_endpoint
from venus_prio.homeassistant import Command, CommandKind


@pytest.mark.parametrize(
    ("command", "mode"),
    [
        (Command(kind=CommandKind.SET_MODE, mode="dry-run"), "dry-run"),
        (Command(kind=CommandKind.SET_MODE, mode="off"), "off"),
        (Command(kind=CommandKind.SET_ENABLED, enabled=True), "auto"),
        (Command(kind=CommandKind.SET_ENABLED, enabled=False), "off"),
        (Command(kind=CommandKind.RESTORE), None),
    ],
)
def test_command_mode(command: Command, mode: Optional[str]) -> None:
    assert command_mode(command) == mode


class Recorder:
    """Stands in for the service: records what the commands asked for."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str]] = []

    async def set_mode(self, mode: str) -> None:
        self.calls.append(("mode", mode))

    async def restore_baseline(self) -> bool:
        self.calls.append(("restore", ""))
        return True


def test_command_handler_calls_the_service() -> None:
    recorder = Recorder()
    handle = command_handler(recorder)

    async def scenario() -> None:
        await handle(Command(kind=CommandKind.SET_ENABLED, enabled=False))
        await handle(Command(kind=CommandKind.RESTORE))
        await handle(Command(kind=CommandKind.SET_MODE, mode="auto"))

    asyncio.run(scenario())
    assert recorder.calls == [("mode", "off"), ("restore", ""), ("mode", "auto")]


def test_the_gx_broker_is_the_default() -> None:
    venus = VenusConfig(
        broker=BrokerConfig(host="venus.local", port=8883, password="pw", tls=TlsConfig(True))
    )
    endpoint = ha_endpoint(HomeAssistantConfig(), venus)
    assert (endpoint.host, endpoint.port, endpoint.tls.enabled) == ("venus.local", 8883, True)
    # The GX checks only the password; MQTT needs a user name to carry one.
    assert (endpoint.username, endpoint.password) == ("venus-prio", "pw")


def test_a_separate_broker_has_its_own_credentials() -> None:
    own = BrokerConfig(host="ha.local", port=1884, username="ha", password="secret")
    venus = VenusConfig(broker=BrokerConfig(host="venus.local", password="gx"))
    endpoint = ha_endpoint(HomeAssistantConfig(broker=own), venus)
    assert (endpoint.host, endpoint.port, endpoint.username, endpoint.password) == (
        "ha.local",
        1884,
        "ha",
        "secret",
    )
    assert not endpoint.tls.enabled
