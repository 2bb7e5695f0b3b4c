"""``venus.dbus.backend``: which D-Bus library the D-Bus transport uses, and a clear error."""

from __future__ import annotations

import sys
from typing import Optional

import pytest

from venus_prio.config import DbusConfig, VenusConfig
from venus_prio.errors import ConfigError, SourceUnavailable
from venus_prio.venus.dbus import configured_backend


def venus(backend: str) -> VenusConfig:
    return VenusConfig(transport="dbus", dbus=DbusConfig(backend=backend))


@pytest.mark.parametrize(
    ("choice", "hidden", "expected"),
    [
        ("auto", None, "dbus_fast"),  # preinstalled on Venus OS: preferred
        ("auto", "dbus_fast", "dbus_next"),  # the other one when it is missing
        ("dbus-fast", None, "dbus_fast"),
        ("dbus-next", None, "dbus_next"),
    ],
)
def test_backend_choice(
    monkeypatch: pytest.MonkeyPatch, choice: str, hidden: Optional[str], expected: str
) -> None:
    if hidden is not None:
        monkeypatch.setitem(sys.modules, hidden, None)  # import fails: not installed
    assert configured_backend(venus(choice)).name == expected


def test_explicit_backend_not_installed_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dbus_next", None)
    with pytest.raises(ConfigError, match=r"^venus\.dbus\.backend: dbus-next is not installed"):
        configured_backend(venus("dbus-next"))


def test_auto_without_any_library_is_no_dbus(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a GX: transport auto then runs on MQTT alone (build_auto_source catches this).
    for name in ("dbus_fast", "dbus_next"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SourceUnavailable, match="not installed"):
        configured_backend(venus("auto"))
