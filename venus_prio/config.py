"""Parse ``config.yaml`` into frozen, validated dataclasses; the only module that imports yaml.

How it works: each section is read by a ``_Section`` reader that takes keys one by one with their
type, default and range, remembers which keys it consumed, and at the end rejects any key it did
not (a typo must not pass silently). The first problem raises one ``ConfigError`` whose message
starts with the key path (``control.prio_band: must be > 0, got -5``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

import yaml

from venus_prio.errors import ConfigError

TRANSPORTS = ("auto", "mqtt", "dbus")
DBUS_BACKENDS = ("auto", "dbus-fast", "dbus-next")
ACTUATOR_KINDS = ("auto", "override", "setting")
# How the simulated (and the fake) GX treats the hub4 override (control.md section 8):
# honoured: a DC-side cap that expires; absent: no such path (older firmware, no ESS);
# reset_every_5s: systemcalc before v3.60 rewrites it to -1 every 5 s; ignored: the value is
# stored and shown but has no effect on the inverter.
OVERRIDE_VARIANTS = ("honoured", "absent", "reset_every_5s", "ignored")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SECRET_MASK = "***"
ENV_MQTT_PASSWORD = "VENUS_PRIO_MQTT_PASSWORD"
ENV_HA_PASSWORD = "VENUS_PRIO_HA_PASSWORD"
GX_STATE_DIR = Path("/data/venus-prio")


@dataclass(frozen=True)
class TrimConfig:
    """Optional closed-loop trim of the PV factor from the measured battery power."""

    enabled: bool = False
    target_charge_w: float = 30.0
    min_factor: float = 0.6
    max_factor: float = 0.95
    gain_per_w_s: float = 0.00002


@dataclass(frozen=True)
class ControlConfig:
    """Keys of ``control:``; the meaning of each is in control.md section 3 and config.yaml."""

    max_inverter_power_w: float
    min_soc: Optional[float] = None  # None = auto (ActiveSocLimit, else MinimumSocLimit)
    subtract_dc_loads: bool = True
    pv_window_s: float = 15.0
    prio_band: float = 5.0
    recover_band: float = 10.0
    pv_factor: float = 0.95
    pv_offset_w: float = 0.0
    pv_min_w: float = 100.0
    pv_min_hysteresis_w: float = 10.0
    hold_w: float = 0.0
    half_power_fraction: float = 0.2
    ramp_w_per_min: float = 200.0
    step_w: float = 50.0
    tick_s: float = 1.0
    stale_after_s: float = 30.0
    refresh_s: float = 20.0
    enabled: bool = True
    trim: TrimConfig = field(default_factory=TrimConfig)


@dataclass(frozen=True)
class WritesConfig:
    """Keys of ``writes:`` (control.md section 4)."""

    deadband_w: float = 250.0
    min_increase_interval_s: float = 240.0
    max_writes_per_hour: int = 30
    dry_run: bool = False
    baseline_w: Optional[float] = None  # None = the value found on the GX


@dataclass(frozen=True)
class OverrideConfig:
    """Keys of ``actuator.override:`` (control.md section 8): the volatile hub4 override."""

    # DC-side: the inverter's losses come out of the DC power. Tuned with the simulator
    # (README, "Why these override defaults"): 1.05 evens out the filter's lag and the rounding.
    pv_factor: float = 1.05
    pv_offset_w: float = 0.0
    step_w: float = 10.0
    deadband_w: float = 10.0
    refresh_s: float = 5.0  # rewrite at least this often while steering, so it never expires
    verify_s: float = 15.0  # a value we did not write this soon after ours: the GX resets it
    retry_after_s: float = 86400.0  # after a reset by the GX, try the override again after this
    effect_tolerance_w: float = 150.0
    effect_window_s: float = 60.0
    foreign_clear_s: float = 60.0  # someone else's override must be gone this long to resume


@dataclass(frozen=True)
class ActuatorConfig:
    """Keys of ``actuator:``: where the discharge cap goes (control.md section 8)."""

    kind: str = "auto"  # auto | override | setting
    override: OverrideConfig = field(default_factory=OverrideConfig)


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    ca_file: Optional[str] = None
    insecure: bool = False  # accept the GX's self-signed certificate without a CA file
    # The name the broker's certificate must carry. None: venus.local for the GX (every GX's
    # certificate carries it, whatever address it is reached at), the host for other brokers.
    server_name: Optional[str] = None


@dataclass(frozen=True)
class BrokerConfig:
    """Where an MQTT broker is and how to log in."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)  # never in a repr or a log
    tls: TlsConfig = field(default_factory=TlsConfig)


@dataclass(frozen=True)
class DbusConfig:
    address: Optional[str] = None  # None = the system bus (honours DBUS_SYSTEM_BUS_ADDRESS)
    backend: str = (
        "auto"  # auto (dbus-fast when importable, else dbus-next) | dbus-fast | dbus-next
    )


@dataclass(frozen=True)
class VenusConfig:
    """Keys of ``venus:``: how to reach the GX."""

    transport: str = "auto"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    portal_id: Optional[str] = None  # None = auto (N/+/system/0/Serial)
    vrm: bool = False
    portal_id_timeout_s: float = 30.0
    keepalive_interval_s: float = 30.0
    full_publish_timeout_s: float = 10.0
    heartbeat_timeout_s: float = 10.0
    reconnect_max_s: float = 60.0
    dbus: DbusConfig = field(default_factory=DbusConfig)


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    state_topic_prefix: Optional[str] = None  # None = venus_prio/<portal id>
    node_id: str = "venus_prio"
    controls: bool = True
    broker: Optional[BrokerConfig] = None  # None = the GX broker


@dataclass(frozen=True)
class SimConfig:
    """Plant parameters of the simulator (control.md section 7)."""

    battery_kwh: float = 10.0
    inverter_w: float = 3000.0
    reserve_soc: float = 15.0
    start_soc: Optional[float] = None  # None = reserve + 1
    charge_efficiency: float = 0.96
    discharge_efficiency: float = 0.96
    inverter_efficiency: float = 0.93
    idle_w: float = 20.0
    dt_s: float = 1.0
    seed: int = 1
    override: str = "honoured"  # how the simulated GX treats the hub4 override (OVERRIDE_VARIANTS)
    override_expiry_s: float = 60.0  # the override falls back to -1 this long after a write


@dataclass(frozen=True)
class Config:
    control: ControlConfig
    writes: WritesConfig = field(default_factory=WritesConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    venus: VenusConfig = field(default_factory=VenusConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    state_dir: Optional[str] = None  # None = /data/venus-prio on a GX, else the user state dir
    log_level: str = "INFO"

    def resolved_state_dir(self) -> Path:
        """Return where the journal lives: the configured dir, the GX's /data, or XDG state."""
        if self.state_dir is not None:
            return Path(self.state_dir).expanduser()
        if GX_STATE_DIR.parent.is_dir() and os.access(GX_STATE_DIR.parent, os.W_OK):
            return GX_STATE_DIR
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "venus-prio"


def default_config(max_inverter_power_w: float = 3000.0) -> Config:
    """Return the built-in configuration the simulator demo runs with."""
    return Config(control=ControlConfig(max_inverter_power_w=max_inverter_power_w))


_MISSING: Any = object()


class _Section:
    """Read one mapping of the YAML file key by key; see the module docstring."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path or '<top level>'}: must be a mapping, got {_show(raw)}")
        self._raw: Dict[Any, Any] = raw
        self._path = path
        self._seen: Set[Any] = set()

    def key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _take(self, key: str) -> Any:
        self._seen.add(key)
        return self._raw.get(key, _MISSING)

    def has(self, key: str) -> bool:
        return key in self._raw and self._raw[key] is not None

    def number(
        self,
        key: str,
        default: Any,
        *,
        minimum: Optional[float] = None,
        maximum: Optional[float] = None,
        exclusive_minimum: bool = False,
    ) -> Any:
        value = self._take(key)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise ConfigError(f"{self.key_path(key)}: is required")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.key_path(key)}: must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{self.key_path(key)}: must be a finite number, got {value}")
        if minimum is not None:
            if exclusive_minimum and value <= minimum:
                raise ConfigError(f"{self.key_path(key)}: must be > {minimum:g}, got {value:g}")
            if not exclusive_minimum and value < minimum:
                raise ConfigError(f"{self.key_path(key)}: must be >= {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{self.key_path(key)}: must be <= {maximum:g}, got {value:g}")
        return float(value)

    def positive(self, key: str, default: Any, *, maximum: Optional[float] = None) -> Any:
        return self.number(key, default, minimum=0.0, maximum=maximum, exclusive_minimum=True)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._take(key)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key_path(key)}: must be a whole number, got {_show(value)}")
        if not minimum <= value <= maximum:
            raise ConfigError(
                f"{self.key_path(key)}: must be between {minimum} and {maximum}, got {value}"
            )
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._take(key)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key_path(key)}: must be true or false, got {_show(value)}")
        return value

    def string(self, key: str, default: Optional[str]) -> Optional[str]:
        value = self._take(key)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a numeric portal id or password is still text
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"{self.key_path(key)}: must be a non-empty string, got {_show(value)}"
            )
        return value

    def choice(self, key: str, default: str, choices: Tuple[str, ...]) -> str:
        value = self._take(key)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(
                f"{self.key_path(key)}: must be one of {', '.join(choices)}, got {_show(value)}"
            )
        return value

    def section(self, key: str) -> _Section:
        value = self._take(key)
        return _Section(None if value is _MISSING else value, self.key_path(key))

    def raw(self, key: str) -> Any:
        value = self._take(key)
        return None if value is _MISSING else value

    def done(self) -> None:
        """Reject keys nobody asked for."""
        unknown = sorted(str(k) for k in self._raw if k not in self._seen)
        if unknown:
            close = difflib.get_close_matches(unknown[0], [str(k) for k in self._seen], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{self.key_path(unknown[0])}: unknown key{hint}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _read_trim(sec: _Section) -> TrimConfig:
    d = TrimConfig()
    trim = TrimConfig(
        enabled=sec.boolean("enabled", d.enabled),
        target_charge_w=sec.number("target_charge_w", d.target_charge_w, minimum=0),
        min_factor=sec.number("min_factor", d.min_factor, minimum=0, exclusive_minimum=True),
        max_factor=sec.number("max_factor", d.max_factor, minimum=0, maximum=1.0),
        gain_per_w_s=sec.number("gain_per_w_s", d.gain_per_w_s, minimum=0),
    )
    sec.done()
    _check(
        trim.min_factor <= trim.max_factor,
        f"{sec.key_path('min_factor')}: must be <= max_factor ({trim.max_factor:g}), "
        f"got {trim.min_factor:g}",
    )
    return trim


def _read_control(sec: _Section) -> ControlConfig:
    max_w = sec.number("max_inverter_power_w", _MISSING, minimum=0, exclusive_minimum=True)
    d = ControlConfig(max_inverter_power_w=max_w)
    raw_min_soc = sec.raw("min_soc")
    if raw_min_soc is None or raw_min_soc == "auto":
        min_soc: Optional[float] = None
    elif isinstance(raw_min_soc, (int, float)) and not isinstance(raw_min_soc, bool):
        _check(
            0 <= raw_min_soc < 100,
            f"{sec.key_path('min_soc')}: must be 'auto' or a number from 0 to 99, "
            f"got {raw_min_soc}",
        )
        min_soc = float(raw_min_soc)
    else:
        raise ConfigError(
            f"{sec.key_path('min_soc')}: must be 'auto' or a number, got {_show(raw_min_soc)}"
        )
    control = ControlConfig(
        max_inverter_power_w=max_w,
        min_soc=min_soc,
        subtract_dc_loads=sec.boolean("subtract_dc_loads", d.subtract_dc_loads),
        pv_window_s=sec.positive("pv_window_s", d.pv_window_s),
        prio_band=sec.positive("prio_band", d.prio_band, maximum=100),
        recover_band=sec.positive("recover_band", d.recover_band, maximum=100),
        pv_factor=sec.positive("pv_factor", d.pv_factor, maximum=1.0),
        pv_offset_w=sec.number("pv_offset_w", d.pv_offset_w, minimum=0),
        pv_min_w=sec.number("pv_min_w", d.pv_min_w, minimum=0),
        pv_min_hysteresis_w=sec.number("pv_min_hysteresis_w", d.pv_min_hysteresis_w, minimum=0),
        hold_w=sec.number("hold_w", d.hold_w, minimum=0),
        half_power_fraction=sec.number(
            "half_power_fraction", d.half_power_fraction, maximum=1.0, minimum=0
        ),
        ramp_w_per_min=sec.positive("ramp_w_per_min", d.ramp_w_per_min),
        step_w=sec.number("step_w", d.step_w, minimum=1),
        tick_s=sec.number("tick_s", d.tick_s, minimum=0.05, maximum=60),
        stale_after_s=sec.positive("stale_after_s", d.stale_after_s),
        refresh_s=sec.positive("refresh_s", d.refresh_s),
        enabled=sec.boolean("enabled", d.enabled),
        trim=_read_trim(sec.section("trim")),
    )
    sec.done()
    _check(
        control.prio_band < control.recover_band,
        f"{sec.key_path('prio_band')}: must be below recover_band ({control.recover_band:g}), "
        f"got {control.prio_band:g}",
    )
    _check(
        control.hold_w < control.max_inverter_power_w,
        f"{sec.key_path('hold_w')}: must be below max_inverter_power_w "
        f"({control.max_inverter_power_w:g}), got {control.hold_w:g}",
    )
    _check(
        control.pv_min_hysteresis_w <= control.pv_min_w,
        f"{sec.key_path('pv_min_hysteresis_w')}: must be <= pv_min_w ({control.pv_min_w:g}), "
        f"got {control.pv_min_hysteresis_w:g}",
    )
    _check(
        control.refresh_s < control.stale_after_s,
        f"{sec.key_path('refresh_s')}: must be below stale_after_s ({control.stale_after_s:g}), "
        f"got {control.refresh_s:g}",
    )
    return control


def _read_writes(sec: _Section) -> WritesConfig:
    d = WritesConfig()
    baseline = sec.number("baseline_w", None, minimum=-1)
    writes = WritesConfig(
        deadband_w=sec.number("deadband_w", d.deadband_w, minimum=0),
        min_increase_interval_s=sec.number(
            "min_increase_interval_s", d.min_increase_interval_s, minimum=0
        ),
        max_writes_per_hour=sec.integer(
            "max_writes_per_hour", d.max_writes_per_hour, minimum=1, maximum=3600
        ),
        dry_run=sec.boolean("dry_run", d.dry_run),
        baseline_w=baseline,
    )
    sec.done()
    return writes


def _read_override(sec: _Section) -> OverrideConfig:
    d = OverrideConfig()
    override = OverrideConfig(
        pv_factor=sec.number(
            "pv_factor", d.pv_factor, minimum=0, exclusive_minimum=True, maximum=1.5
        ),
        pv_offset_w=sec.number("pv_offset_w", d.pv_offset_w, minimum=-1000, maximum=1000),
        step_w=sec.positive("step_w", d.step_w, maximum=1000),
        deadband_w=sec.number("deadband_w", d.deadband_w, minimum=0),
        refresh_s=sec.positive("refresh_s", d.refresh_s, maximum=55),
        verify_s=sec.positive("verify_s", d.verify_s),
        retry_after_s=sec.positive("retry_after_s", d.retry_after_s),
        effect_tolerance_w=sec.number("effect_tolerance_w", d.effect_tolerance_w, minimum=0),
        effect_window_s=sec.positive("effect_window_s", d.effect_window_s),
        foreign_clear_s=sec.number("foreign_clear_s", d.foreign_clear_s, minimum=0),
    )
    sec.done()
    return override


def _read_actuator(sec: _Section) -> ActuatorConfig:
    d = ActuatorConfig()
    actuator = ActuatorConfig(
        kind=sec.choice("kind", d.kind, ACTUATOR_KINDS),
        override=_read_override(sec.section("override")),
    )
    sec.done()
    return actuator


def _read_secret(sec: _Section, env: Mapping[str, str], env_name: str) -> Optional[str]:
    """Return the password from the environment, ``password`` or ``password_file``."""
    password = sec.string("password", None)
    password_file = sec.string("password_file", None)
    _check(
        password is None or password_file is None,
        f"{sec.key_path('password_file')}: give either password or password_file, not both",
    )
    if env.get(env_name):
        return env[env_name]
    if password_file is not None:
        try:
            return Path(password_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{sec.key_path('password_file')}: cannot read {password_file}: {exc.strerror}"
            ) from exc
    return password


def _check_ca_file(key: str, ca_file: str) -> None:
    """Raise ``ConfigError`` unless ``ca_file`` holds certificates (PEM) that TLS can trust."""
    path = Path(ca_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: no such file: {ca_file}")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{key}: not a PEM certificate file: {ca_file} ({exc})") from exc


def _read_tls(sec: _Section) -> TlsConfig:
    d = TlsConfig()
    tls = TlsConfig(
        enabled=sec.boolean("enabled", d.enabled),
        ca_file=sec.string("ca_file", d.ca_file),
        insecure=sec.boolean("insecure", d.insecure),
        server_name=sec.string("server_name", d.server_name),
    )
    sec.done()
    chosen = [key for key in ("ca_file", "insecure", "server_name") if getattr(tls, key)]
    # Without enabled these would be ignored and the connection made in plain text.
    _check(
        tls.enabled or not chosen,
        f"{sec.key_path('enabled')}: {', '.join(chosen)} given but TLS is not enabled; "
        "set enabled: true",
    )
    _check(
        not (tls.insecure and (tls.ca_file or tls.server_name)),
        f"{sec.key_path('insecure')}: insecure skips the certificate check; "
        "give ca_file/server_name or insecure, not both",
    )
    if tls.ca_file is not None:
        _check_ca_file(sec.key_path("ca_file"), tls.ca_file)
    return tls


def _read_broker(
    sec: _Section, env: Mapping[str, str], env_name: str, default_host: str
) -> BrokerConfig:
    tls = _read_tls(sec.section("tls"))
    broker = BrokerConfig(
        host=sec.string("host", default_host) or default_host,
        port=sec.integer("port", 8883 if tls.enabled else 1883, minimum=1, maximum=65535),
        username=sec.string("username", None),
        password=_read_secret(sec, env, env_name),
        tls=tls,
    )
    return broker


def _read_venus(sec: _Section, env: Mapping[str, str]) -> VenusConfig:
    d = VenusConfig()
    portal_id = sec.string("portal_id", None)
    if portal_id == "auto":
        portal_id = None
    vrm = sec.boolean("vrm", d.vrm)
    broker = _read_broker(sec, env, ENV_MQTT_PASSWORD, "127.0.0.1")
    dbus_sec = sec.section("dbus")
    dbus = DbusConfig(
        address=dbus_sec.string("address", None),
        backend=dbus_sec.choice("backend", DbusConfig().backend, DBUS_BACKENDS),
    )
    dbus_sec.done()
    venus = VenusConfig(
        transport=sec.choice("transport", d.transport, TRANSPORTS),
        broker=broker,
        portal_id=portal_id,
        vrm=vrm,
        portal_id_timeout_s=sec.positive("portal_id_timeout_s", d.portal_id_timeout_s),
        keepalive_interval_s=sec.positive(
            "keepalive_interval_s", d.keepalive_interval_s, maximum=55
        ),
        full_publish_timeout_s=sec.positive("full_publish_timeout_s", d.full_publish_timeout_s),
        heartbeat_timeout_s=sec.positive("heartbeat_timeout_s", d.heartbeat_timeout_s),
        reconnect_max_s=sec.positive("reconnect_max_s", d.reconnect_max_s),
        dbus=dbus,
    )
    sec.done()
    if vrm:
        _check(
            portal_id is not None,
            f"{sec.key_path('portal_id')}: the VRM broker needs the portal id set explicitly",
        )
        _check(
            venus.transport != "dbus",
            f"{sec.key_path('vrm')}: the VRM broker is MQTT; transport dbus contradicts it",
        )
    return venus


def _read_homeassistant(sec: _Section, env: Mapping[str, str]) -> HomeAssistantConfig:
    d = HomeAssistantConfig()
    broker: Optional[BrokerConfig] = None
    if sec.has("broker"):
        broker_sec = sec.section("broker")
        broker = _read_broker(broker_sec, env, ENV_HA_PASSWORD, "localhost")
        broker_sec.done()
    else:
        sec.raw("broker")
    ha = HomeAssistantConfig(
        enabled=sec.boolean("enabled", d.enabled),
        discovery_prefix=sec.string("discovery_prefix", d.discovery_prefix) or d.discovery_prefix,
        state_topic_prefix=sec.string("state_topic_prefix", d.state_topic_prefix),
        node_id=sec.string("node_id", d.node_id) or d.node_id,
        controls=sec.boolean("controls", d.controls),
        broker=broker,
    )
    sec.done()
    for key in ("discovery_prefix", "node_id"):
        value = getattr(ha, key)
        _check(
            not any(c in value for c in "#+ ") and not value.startswith("/"),
            f"{sec.key_path(key)}: must be a plain MQTT topic level without #, + or spaces, "
            f"got {value!r}",
        )
    return ha


def _read_sim(sec: _Section) -> SimConfig:
    d = SimConfig()
    sim = SimConfig(
        battery_kwh=sec.positive("battery_kwh", d.battery_kwh),
        inverter_w=sec.positive("inverter_w", d.inverter_w),
        reserve_soc=sec.number("reserve_soc", d.reserve_soc, minimum=0, maximum=95),
        start_soc=sec.number("start_soc", d.start_soc, minimum=0, maximum=100),
        charge_efficiency=sec.positive("charge_efficiency", d.charge_efficiency, maximum=1),
        discharge_efficiency=sec.positive(
            "discharge_efficiency", d.discharge_efficiency, maximum=1
        ),
        inverter_efficiency=sec.positive("inverter_efficiency", d.inverter_efficiency, maximum=1),
        idle_w=sec.number("idle_w", d.idle_w, minimum=0),
        dt_s=sec.number("dt_s", d.dt_s, minimum=0.1, maximum=60),
        seed=sec.integer("seed", d.seed, minimum=0, maximum=2**31),
        override=sec.choice("override", d.override, OVERRIDE_VARIANTS),
        override_expiry_s=sec.positive("override_expiry_s", d.override_expiry_s),
    )
    sec.done()
    return sim


def parse_config(raw: Any, env: Optional[Mapping[str, str]] = None) -> Config:
    """Turn a parsed YAML document into a ``Config``; raise ``ConfigError`` on the first problem."""
    env = os.environ if env is None else env
    top = _Section(raw, "")
    control = _read_control(top.section("control"))
    config = Config(
        control=control,
        writes=_read_writes(top.section("writes")),
        actuator=_read_actuator(top.section("actuator")),
        venus=_read_venus(top.section("venus"), env),
        homeassistant=_read_homeassistant(top.section("homeassistant"), env),
        sim=_read_sim(top.section("sim")),
        state_dir=top.string("state_dir", None),
        log_level=top.choice("log_level", "INFO", LOG_LEVELS),
    )
    top.done()
    return config


def load_config(path: Union[str, Path], env: Optional[Mapping[str, str]] = None) -> Config:
    """Read and validate a YAML configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(raw, env)


def _masked(value: Any, key: str) -> Any:
    if key == "password" and value is not None:
        return SECRET_MASK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _masked(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
    return value


def effective_config_yaml(config: Config) -> str:
    """Render the effective configuration as YAML with every password masked."""
    data: Dict[str, Any] = _masked(config, "")
    if data["control"]["min_soc"] is None:
        data["control"]["min_soc"] = "auto"
    if data["venus"]["portal_id"] is None:
        data["venus"]["portal_id"] = "auto"
    # The file spells the GX broker's keys directly under venus:, so show them there too.
    data["venus"] = {**data["venus"].pop("broker"), **data["venus"]}
    data["state_dir"] = str(config.resolved_state_dir())
    return yaml.safe_dump(data, sort_keys=False)


__all__: List[str] = [
    "ActuatorConfig",
    "BrokerConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DbusConfig",
    "HomeAssistantConfig",
    "OverrideConfig",
    "SimConfig",
    "TlsConfig",
    "TrimConfig",
    "VenusConfig",
    "WritesConfig",
    "default_config",
    "effective_config_yaml",
    "load_config",
    "parse_config",
]
