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
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Type, TypeVar, Union

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
# The owner's files on a GX (the config beside it): PackageManager's place for a package's options,
# kept by package updates, uninstalls and firmware updates (venus_prio.gx_package).
GX_STATE_DIR = Path("/data/setupOptions/VenusPrio")

# Each key is declared once, in its dataclass, with its default and what the YAML may hold there;
# ``_Section.keys_of`` reads every key declared so. The few keys whose reading depends on others
# (min_soc's "auto", the broker's port, the passwords, the sections) are read by hand.
_READ = "venus_prio.read"
_Keys = TypeVar("_Keys")


def _key(default: Any, read: str, **bounds: Any) -> Any:
    return field(default=default, metadata={_READ: (read, bounds)})


def _number(
    default: Optional[float],
    *,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    exclusive_minimum: bool = False,
) -> Any:
    """A number key: ``minimum`` (``exclusive_minimum``: above it) to ``maximum``."""
    return _key(
        default, "number", minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum
    )


def _positive(default: float, *, maximum: Optional[float] = None) -> Any:
    """A number key above zero, at most ``maximum``."""
    return _key(default, "positive", maximum=maximum)


def _whole(default: int, *, minimum: int, maximum: int) -> Any:
    return _key(default, "integer", minimum=minimum, maximum=maximum)


def _flag(default: bool) -> Any:
    return _key(default, "boolean")


def _text(default: Optional[str]) -> Any:
    """A non-empty string key (a number given there is taken as its text)."""
    return _key(default, "string")


def _choice(default: str, choices: Tuple[str, ...]) -> Any:
    return _key(default, "choice", choices=choices)


@dataclass(frozen=True)
class TrimConfig:
    """Optional closed-loop trim of the PV factor from the measured battery power."""

    enabled: bool = _flag(False)
    target_charge_w: float = _number(30.0, minimum=0)
    min_factor: float = _number(0.6, minimum=0, exclusive_minimum=True)
    max_factor: float = _number(0.95, minimum=0, maximum=1.0)
    gain_per_w_s: float = _number(0.00002, minimum=0)


@dataclass(frozen=True)
class ControlConfig:
    """Keys of ``control:``; the meaning of each is in control.md section 3 and config.yaml."""

    max_inverter_power_w: float
    min_soc: Optional[float] = None  # None = auto (ActiveSocLimit, else MinimumSocLimit)
    subtract_dc_loads: bool = _flag(True)
    pv_window_s: float = _positive(15.0)
    prio_band: float = _positive(5.0, maximum=100)
    recover_band: float = _positive(10.0, maximum=100)
    pv_factor: float = _positive(0.95, maximum=1.0)
    pv_offset_w: float = _number(0.0, minimum=0)
    pv_min_w: float = _number(100.0, minimum=0)
    pv_min_hysteresis_w: float = _number(10.0, minimum=0)
    hold_w: float = _number(0.0, minimum=0)
    half_power_fraction: float = _number(0.2, minimum=0, maximum=1.0)
    ramp_w_per_min: float = _positive(200.0)
    step_w: float = _number(50.0, minimum=1)
    tick_s: float = _number(1.0, minimum=0.05, maximum=60)
    stale_after_s: float = _positive(30.0)
    refresh_s: float = _positive(20.0)
    enabled: bool = _flag(True)
    trim: TrimConfig = field(default_factory=TrimConfig)


@dataclass(frozen=True)
class WritesConfig:
    """Keys of ``writes:`` (control.md section 4)."""

    deadband_w: float = _number(250.0, minimum=0)
    min_increase_interval_s: float = _number(240.0, minimum=0)
    max_writes_per_hour: int = _whole(30, minimum=1, maximum=3600)
    dry_run: bool = _flag(False)
    baseline_w: Optional[float] = _number(None, minimum=-1)  # None = the value found on the GX


@dataclass(frozen=True)
class OverrideConfig:
    """Keys of ``actuator.override:`` (control.md section 8): the volatile hub4 override."""

    # DC-side: the inverter's losses come out of the DC power. Tuned with the simulator
    # (README, "Why these override defaults"): 1.05 evens out the filter's lag and the rounding.
    pv_factor: float = _number(1.05, minimum=0, exclusive_minimum=True, maximum=1.5)
    pv_offset_w: float = _number(0.0, minimum=-1000, maximum=1000)
    step_w: float = _positive(10.0, maximum=1000)
    deadband_w: float = _number(10.0, minimum=0)
    # Rewrite at least this often while steering, so it never expires (the GX's expiry is 60 s).
    refresh_s: float = _positive(5.0, maximum=55)
    verify_s: float = _positive(15.0)  # a value we did not write this soon after ours: a reset
    retry_after_s: float = _positive(86400.0)  # after a reset by the GX, try again after this
    effect_tolerance_w: float = _number(150.0, minimum=0)
    effect_window_s: float = _positive(60.0)
    # Someone else's override must be gone this long before venus-prio resumes.
    foreign_clear_s: float = _number(60.0, minimum=0)


@dataclass(frozen=True)
class ActuatorConfig:
    """Keys of ``actuator:``: where the discharge cap goes (control.md section 8)."""

    kind: str = _choice("auto", ACTUATOR_KINDS)
    override: OverrideConfig = field(default_factory=OverrideConfig)


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = _flag(False)
    ca_file: Optional[str] = _text(None)
    insecure: bool = _flag(False)  # accept the GX's self-signed certificate without a CA file
    # The name the broker's certificate must carry. None: venus.local for the GX (every GX's
    # certificate carries it, whatever address it is reached at), the host for other brokers.
    server_name: Optional[str] = _text(None)


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
    address: Optional[str] = _text(None)  # None = the system bus (DBUS_SYSTEM_BUS_ADDRESS)
    # auto: dbus-fast when importable (it is on Venus OS), else dbus-next.
    backend: str = _choice("auto", DBUS_BACKENDS)


@dataclass(frozen=True)
class VenusConfig:
    """Keys of ``venus:``: how to reach the GX."""

    transport: str = _choice("auto", TRANSPORTS)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    portal_id: Optional[str] = None  # None = auto (N/+/system/0/Serial)
    vrm: bool = _flag(False)
    portal_id_timeout_s: float = _positive(30.0)
    # The GX stops publishing 60 s after the last keepalive: 55 s leaves room for a slow round.
    keepalive_interval_s: float = _positive(30.0, maximum=55)
    full_publish_timeout_s: float = _positive(10.0)
    heartbeat_timeout_s: float = _positive(10.0)
    reconnect_max_s: float = _positive(60.0)
    dbus: DbusConfig = field(default_factory=DbusConfig)


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = _flag(True)
    discovery_prefix: str = _text("homeassistant")
    state_topic_prefix: Optional[str] = _text(None)  # None = venus_prio/<portal id>
    node_id: str = _text("venus_prio")
    controls: bool = _flag(True)
    broker: Optional[BrokerConfig] = None  # None = the GX broker


@dataclass(frozen=True)
class SimConfig:
    """Plant parameters of the simulator (control.md section 7)."""

    battery_kwh: float = _positive(10.0)
    inverter_w: float = _positive(3000.0)
    reserve_soc: float = _number(15.0, minimum=0, maximum=95)
    start_soc: Optional[float] = _number(None, minimum=0, maximum=100)  # None = reserve + 1
    charge_efficiency: float = _positive(0.96, maximum=1)
    discharge_efficiency: float = _positive(0.96, maximum=1)
    inverter_efficiency: float = _positive(0.93, maximum=1)
    idle_w: float = _number(20.0, minimum=0)
    dt_s: float = _number(1.0, minimum=0.1, maximum=60)
    seed: int = _whole(1, minimum=0, maximum=2**31)
    # How the simulated GX treats the hub4 override (OVERRIDE_VARIANTS).
    override: str = _choice("honoured", OVERRIDE_VARIANTS)
    override_expiry_s: float = _positive(60.0)  # the override falls back to -1 this long after


@dataclass(frozen=True)
class RecordConfig:
    """Keys of ``record:``: the day recordings under ``<state_dir>/recordings/`` (recorder.py).

    The battery's capacity, where the GX publishes none, is ``sim.battery_kwh``: the live
    stock-ESS estimate and a replay are the simulator's plant, so they take every plant
    parameter from ``sim:`` (one description of the system, not two).
    """

    enabled: bool = _flag(True)
    interval_s: float = _number(10.0, minimum=1, maximum=3600)
    keep_days: int = _whole(14, minimum=1, maximum=366)


@dataclass(frozen=True)
class Config:
    control: ControlConfig
    writes: WritesConfig = field(default_factory=WritesConfig)
    actuator: ActuatorConfig = field(default_factory=ActuatorConfig)
    venus: VenusConfig = field(default_factory=VenusConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    state_dir: Optional[str] = _text(None)  # None = GX_STATE_DIR on a GX, else XDG state
    log_level: str = _choice("INFO", LOG_LEVELS)

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

    def keys_of(self, cls: type) -> Dict[str, Any]:
        """Read every key ``cls`` declares with its reader (``_number`` ...), in its order."""
        values: Dict[str, Any] = {}
        for key in dataclasses.fields(cls):
            if _READ in key.metadata:
                read, bounds = key.metadata[_READ]
                values[key.name] = getattr(self, read)(key.name, key.default, **bounds)
        return values

    def read(self, cls: Type[_Keys], **by_hand: Any) -> _Keys:
        """Build ``cls`` from ``by_hand`` and its declared keys; reject the keys left over."""
        value = cls(**by_hand, **self.keys_of(cls))
        self.done()
        return value

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
    trim = sec.read(TrimConfig)
    _check(
        trim.min_factor <= trim.max_factor,
        f"{sec.key_path('min_factor')}: must be <= max_factor ({trim.max_factor:g}), "
        f"got {trim.min_factor:g}",
    )
    return trim


def _read_control(sec: _Section) -> ControlConfig:
    max_w = sec.number("max_inverter_power_w", _MISSING, minimum=0, exclusive_minimum=True)
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
    control = sec.read(
        ControlConfig,
        max_inverter_power_w=max_w,
        min_soc=min_soc,
        trim=_read_trim(sec.section("trim")),
    )
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
    tls = sec.read(TlsConfig)
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
    portal_id = sec.string("portal_id", None)
    if portal_id == "auto":
        portal_id = None
    broker = _read_broker(sec, env, ENV_MQTT_PASSWORD, "127.0.0.1")
    dbus = sec.section("dbus").read(DbusConfig)
    venus = sec.read(VenusConfig, broker=broker, portal_id=portal_id, dbus=dbus)
    if venus.vrm:
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
    broker: Optional[BrokerConfig] = None
    if sec.has("broker"):
        broker_sec = sec.section("broker")
        broker = _read_broker(broker_sec, env, ENV_HA_PASSWORD, "localhost")
        broker_sec.done()
    else:
        sec.raw("broker")
    ha = sec.read(HomeAssistantConfig, broker=broker)
    for key in ("discovery_prefix", "node_id"):
        value = getattr(ha, key)
        _check(
            not any(c in value for c in "#+ ") and not value.startswith("/"),
            f"{sec.key_path(key)}: must be a plain MQTT topic level without #, + or spaces, "
            f"got {value!r}",
        )
    return ha


def parse_config(raw: Any, env: Optional[Mapping[str, str]] = None) -> Config:
    """Turn a parsed YAML document into a ``Config``; raise ``ConfigError`` on the first problem."""
    env = os.environ if env is None else env
    top = _Section(raw, "")
    control = _read_control(top.section("control"))
    actuator = top.section("actuator")
    return top.read(
        Config,
        control=control,
        writes=top.section("writes").read(WritesConfig),
        actuator=actuator.read(
            ActuatorConfig, override=actuator.section("override").read(OverrideConfig)
        ),
        venus=_read_venus(top.section("venus"), env),
        homeassistant=_read_homeassistant(top.section("homeassistant"), env),
        sim=top.section("sim").read(SimConfig),
        record=top.section("record").read(RecordConfig),
    )


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
    "RecordConfig",
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
