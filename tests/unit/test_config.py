"""config.yaml parsing: the shipped file, every kind of mistake, secrets, check-config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from venus_prio import config as module
from venus_prio.cli import main
from venus_prio.config import load_config, parse_config
from venus_prio.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL: Dict[str, Any] = {"control": {"max_inverter_power_w": 3000}}


def with_(section: str, **values: Any) -> Dict[str, Any]:
    raw: Dict[str, Any] = {"control": dict(MINIMAL["control"])}
    raw.setdefault(section, {}).update(values)
    return raw


def test_shipped_config_is_valid_and_complete() -> None:
    config = load_config(ROOT / "config.yaml", env={})
    assert config.control.max_inverter_power_w == 3000.0
    assert config.control.min_soc is None  # auto
    assert (config.control.prio_band, config.control.recover_band) == (5.0, 10.0)
    assert config.writes.max_writes_per_hour == 30
    assert config.venus.transport == "auto"
    assert config.venus.broker.host == "127.0.0.1"
    assert (config.record.enabled, config.record.interval_s, config.record.keep_days) == (
        True,
        10.0,
        14,
    )
    # Every key the parser knows appears in the shipped file (commented or not).
    text = (ROOT / "config.yaml").read_text()
    for key in ("baseline_w", "password_file", "ca_file", "state_dir", "address", "broker"):
        assert f"{key}:" in text


def test_minimal_config_gets_the_spec_defaults() -> None:
    config = parse_config(MINIMAL, env={})
    c = config.control
    # Tuned with the simulator (README, "Why these defaults"), the rest as in control.md.
    assert (c.pv_factor, c.pv_offset_w, c.half_power_fraction) == (0.95, 0.0, 0.2)
    assert (c.pv_min_w, c.hold_w, c.step_w, c.ramp_w_per_min) == (100.0, 0.0, 50.0, 200.0)
    assert (config.writes.deadband_w, config.writes.min_increase_interval_s) == (250.0, 240.0)
    assert config.writes.max_writes_per_hour == 30
    o = config.actuator.override  # also tuned with the simulator ("Why these override defaults")
    assert (o.pv_factor, o.pv_offset_w, o.step_w, o.deadband_w) == (1.05, 0.0, 10.0, 10.0)
    assert load_config(ROOT / "config.yaml").actuator.override == o  # the file says the same


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "control.max_inverter_power_w: is required"),
        (with_("control", prio_bnad=5), "control.prio_bnad: unknown key (did you mean prio_band?)"),
        ({**MINIMAL, "writes ": {}}, "writes : unknown key"),
        (with_("control", prio_band="five"), "control.prio_band: must be a number, got 'five'"),
        (with_("control", prio_band=-5), "control.prio_band: must be > 0, got -5"),
        (with_("control", prio_band=12), "control.prio_band: must be below recover_band (10)"),
        (
            {"control": {"max_inverter_power_w": 0}},
            "control.max_inverter_power_w: must be > 0, got 0",
        ),
        (with_("control", enabled="yes"), "control.enabled: must be true or false, got 'yes'"),
        (with_("control", min_soc="low"), "control.min_soc: must be 'auto' or a number"),
        (with_("control", trim={"min_factor": 0.9, "max_factor": 0.7}), "control.trim.min_factor"),
        (with_("control", trim=[1, 2]), "control.trim: must be a mapping"),
        (with_("writes", max_writes_per_hour=2.5), "writes.max_writes_per_hour: must be a whole"),
        (with_("writes", baseline_w=-2), "writes.baseline_w: must be >= -1, got -2"),
        (with_("venus", transport="serial"), "venus.transport: must be one of auto, mqtt, dbus"),
        (with_("venus", port=70000), "venus.port: must be between 1 and 65535"),
        (with_("venus", vrm=True), "venus.portal_id: the VRM broker needs the portal id"),
        (
            with_("venus", password="a", password_file="/x"),
            "venus.password_file: give either password or password_file",
        ),
        (
            with_("venus", tls={"enabled": True, "ca_file": "/nonexistent/ca.crt"}),
            "venus.tls.ca_file: no such file",
        ),
        (
            with_("venus", tls={"enabled": True, "ca_file": __file__}),
            "venus.tls.ca_file: not a PEM certificate file",
        ),
        (
            with_("venus", tls={"ca_file": __file__}),
            "venus.tls.enabled: ca_file given but TLS is not enabled",
        ),
        (
            with_(
                "homeassistant",
                broker={"tls": {"enabled": True, "insecure": True, "ca_file": __file__}},
            ),
            "homeassistant.broker.tls.insecure: insecure skips the certificate check",
        ),
        (with_("homeassistant", node_id="a b"), "homeassistant.node_id: must be a plain MQTT"),
        (with_("homeassistant", broker={"hots": "x"}), "homeassistant.broker.hots: unknown key"),
        (with_("sim", battery_kwh=-1), "sim.battery_kwh: must be > 0"),
        (with_("record", interval_s=0.5), "record.interval_s: must be >= 1, got 0.5"),
        (with_("record", interval_s=7200), "record.interval_s: must be <= 3600, got 7200"),
        (with_("record", keep_days=0), "record.keep_days: must be between 1 and 366, got 0"),
        (with_("record", enabled="no"), "record.enabled: must be true or false, got 'no'"),
        (with_("record", keepdays=3), "record.keepdays: unknown key (did you mean keep_days?)"),
        ({**MINIMAL, "log_level": "LOUD"}, "log_level: must be one of DEBUG"),
        ([1, 2], "<top level>: must be a mapping"),
        (with_("control", pv_window_s=float("nan")), "control.pv_window_s: must be a finite"),
    ],
)
def test_errors_name_the_key_path(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={})
    assert str(info.value).startswith(message)


def test_password_sources_and_environment_override(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    config = parse_config(with_("venus", password_file=str(secret)), env={})
    assert config.venus.broker.password == "from-file"
    config = parse_config(
        with_("venus", password="in-yaml"), env={"VENUS_PRIO_MQTT_PASSWORD": "from-env"}
    )
    assert config.venus.broker.password == "from-env"
    raw = with_("homeassistant", broker={"host": "ha.local", "password": "x"})
    config = parse_config(raw, env={"VENUS_PRIO_HA_PASSWORD": "ha-env"})
    assert config.homeassistant.broker is not None
    assert config.homeassistant.broker.password == "ha-env"


def test_tls_defaults_port_8883() -> None:
    config = parse_config(with_("venus", tls={"enabled": True, "insecure": True}), env={})
    assert config.venus.broker.port == 8883


def test_check_config_prints_effective_config_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(with_("venus", password="hunter2", username="me")))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    shown = yaml.safe_load(out)
    assert shown["venus"]["password"] == "***"
    assert shown["venus"]["username"] == "me"
    assert shown["control"]["min_soc"] == "auto"
    # What check-config prints is itself a valid configuration, apart from the masked secret.
    shown["venus"]["password"] = None
    shown["venus"].pop("broker", None)
    assert parse_config(shown, env={}).control == parse_config(MINIMAL, env={}).control


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("control:\n  max_inverter_power_w: 3000\n  prio_bnad: 5\n", "control.prio_bnad"),
        ("control:\n  max_inverter_power_w: lots\n", "control.max_inverter_power_w"),
        ("control:\n  max_inverter_power_w: 3000\n  prio_band: -5\n", "control.prio_band"),
        ("control: [\n", "not valid YAML"),
    ],
)
def test_check_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    assert needle in capsys.readouterr().err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "/nonexistent/config.yaml"]) == 2
    assert "cannot read" in capsys.readouterr().err


# Where each config dataclass sits in config.yaml (the GX broker's keys stand under venus:).
SECTIONS = {
    "": "Config",
    "control": "ControlConfig",
    "control.trim": "TrimConfig",
    "writes": "WritesConfig",
    "actuator": "ActuatorConfig",
    "actuator.override": "OverrideConfig",
    "venus": "VenusConfig",
    "venus.tls": "TlsConfig",
    "venus.dbus": "DbusConfig",
    "homeassistant": "HomeAssistantConfig",
    "sim": "SimConfig",
    "record": "RecordConfig",
}


def declared_keys() -> Any:
    for path, name in SECTIONS.items():
        for key in dataclasses.fields(getattr(module, name)):
            if module._READ in key.metadata:
                yield path, key.name, key.default


@pytest.mark.parametrize(("path", "key", "default"), list(declared_keys()))
def test_every_declared_key_is_read_with_its_default_and_checked(
    path: str, key: str, default: Any
) -> None:
    raw: Dict[str, Any] = {"control": dict(MINIMAL["control"])}
    section = raw
    for level in filter(None, path.split(".")):
        section = section.setdefault(level, {})
    section[key] = ["not", "a", "value"]  # no reader takes a list
    with pytest.raises(ConfigError, match=rf"^{'.'.join(filter(None, (path, key)))}: must be"):
        parse_config(raw, env={})
    config: Any = parse_config(MINIMAL, env={})
    for level in filter(None, path.replace("venus.tls", "venus.broker.tls").split(".")):
        config = getattr(config, level)
    assert getattr(config, key) == default


def test_every_key_is_declared_once_or_read_by_hand() -> None:
    by_hand = {"max_inverter_power_w", "min_soc", "trim", "override", "broker", "portal_id"}
    by_hand |= {"dbus", "control", "writes", "actuator", "venus", "homeassistant", "sim", "record"}
    for name in SECTIONS.values():
        for key in dataclasses.fields(getattr(module, name)):
            assert module._READ in key.metadata or key.name in by_hand, f"{name}.{key.name}"
