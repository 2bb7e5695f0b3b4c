"""Home Assistant MQTT discovery, state and command messages; pure builders, no I/O.

How it works: venus-prio appears in Home Assistant as one device with a set of entities. Each
entity is one row of the ``_ENTITIES`` table and becomes one retained discovery config at
``<discovery_prefix>/<component>/<node_id>_<portal id>/<object>/config``. Every entity reads the
same retained JSON state document at ``<base>/state`` through a ``value_template`` and shares one
availability topic ``<base>/availability`` (``online``/``offline``; the service publishes
``offline`` as its MQTT last will). Controls (switch, select, button) publish to
``<base>/set/<what>``; ``parse_command`` turns exactly the documented payloads into a
``Command`` and everything else into ``None``.

Home Assistant compatibility (every release from 2023.1 on):

- Discovery schemas drop unknown keys (``extra=REMOVE_EXTRA``), so a key an older release does
  not know is ignored rather than rejecting the entity.
- Entity ids: ``object_id`` set the entity id up to 2025.9; 2025.10 deprecated it in favour of
  ``default_entity_id`` (``<domain>.<object id>``, home-assistant/core#151775) and 2026.4
  removed it, ignoring it when present (home-assistant/core#164460). We send both with the same
  value: old releases use ``object_id``, new ones ``default_entity_id`` (publishers that send
  both report no deprecation warning on 2025.10+). Either only names the entity when it is
  first added; ``unique_id`` keeps it stable afterwards. Drop ``object_id`` once HA < 2025.10
  no longer matters.
- ``device_class: enum`` on MQTT sensors works from 2023.4 (home-assistant/core#89391), its
  ``options`` from 2024.9; 2023.1-2023.3 show the two enum sensors as unknown.
- Entity names do not repeat the device name: since 2023.8 Home Assistant prefixes it itself.
- A value template that renders ``None`` (a JSON null) makes a numeric sensor unknown. Enum and
  text sensors would show the string "None", so their values are never null.
- ``suggested_display_precision`` is read from 2023.5 on; older releases drop it (see above).
- Extra detail goes into attributes (``json_attributes_topic`` + ``json_attributes_template``,
  every release): the *Actuator* sensor's state is the enum, why it fell back is its ``why``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from venus_prio.config import HomeAssistantConfig
from venus_prio.model import Actuator, Decision, Phase, Reason
from venus_prio.status import DailyBenefit
from venus_prio.writes import WriteCounters

PAYLOAD_ONLINE = "online"
PAYLOAD_OFFLINE = "offline"
PAYLOAD_ON = "ON"
PAYLOAD_OFF = "OFF"
PAYLOAD_PRESS = "PRESS"
MODES: Tuple[str, ...] = ("auto", "dry-run", "off")
ACTUATORS: Tuple[str, ...] = tuple(actuator.value for actuator in Actuator)
PHASE_UNKNOWN = "unknown"  # the enum sensor's value before the controller picked a phase
# The service publishes the state on every change and at least this often; sensors expire (turn
# unavailable) after DEFAULT_EXPIRE_AFTER_S without one, i.e. when the service hangs.
STATE_HEARTBEAT_S = 60
DEFAULT_EXPIRE_AFTER_S = 5 * STATE_HEARTBEAT_S
MAX_STATE_LENGTH = 255  # Home Assistant rejects longer entity states
ORIGIN_NAME = "venus-prio"
MANUFACTURER = "venus-prio"
MODEL = "PV-first discharge limiter for Victron ESS"

_UNSAFE_ID_CHARS = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class Message:
    """One MQTT publication: topic, text payload (empty = delete a retained one), retain flag."""

    topic: str
    payload: str
    retain: bool


@dataclass(frozen=True)
class Topics:
    """The topics venus-prio publishes its state on and listens to for commands."""

    base: str
    state: str
    availability: str
    set_enabled: str
    set_mode: str
    set_restore: str

    @property
    def commands(self) -> Tuple[str, str, str]:
        """Return the command topics to subscribe to."""
        return (self.set_enabled, self.set_mode, self.set_restore)


class CommandKind(enum.Enum):
    """What a command from Home Assistant asks for."""

    SET_ENABLED = "enabled"
    SET_MODE = "mode"
    RESTORE = "restore"


@dataclass(frozen=True)
class Command:
    """A validated command: ``enabled`` for SET_ENABLED, ``mode`` (one of MODES) for SET_MODE."""

    kind: CommandKind
    enabled: Optional[bool] = None
    mode: Optional[str] = None


def state_prefix(cfg: HomeAssistantConfig, *, portal_id: str) -> str:
    """Return the base of the state topics: the configured prefix or ``venus_prio/<portal id>``."""
    prefix = cfg.state_topic_prefix or f"venus_prio/{portal_id}"
    return prefix.rstrip("/")


def state_topics(prefix: str) -> Topics:
    """Return the state, availability and command topics under ``prefix``."""
    base = prefix.rstrip("/")
    return Topics(
        base=base,
        state=f"{base}/state",
        availability=f"{base}/availability",
        set_enabled=f"{base}/set/enabled",
        set_mode=f"{base}/set/mode",
        set_restore=f"{base}/set/restore",
    )


def _rounded(value: Optional[float], digits: int) -> Union[int, float, None]:
    """Return a JSON-safe number: None for unknown or non-finite, an int for 0 digits."""
    if value is None or not math.isfinite(value):
        return None
    if digits == 0:
        return round(value)
    return round(value, digits)


def _counts(prefix: str, counters: Optional[WriteCounters]) -> Dict[str, Optional[int]]:
    """Return ``<prefix>_hour/_day/_total``; null (unknown in HA) when nothing counts them."""
    return {
        f"{prefix}_hour": None if counters is None else counters.hour,
        f"{prefix}_day": None if counters is None else counters.day,
        f"{prefix}_total": None if counters is None else counters.total,
    }


def _benefit(benefit: Optional[DailyBenefit]) -> Dict[str, Any]:
    """Return today's energy figures in kWh (10 Wh resolution); null while not measured.

    ``day_started`` is never null: Home Assistant ignores an empty ``last_reset`` but warns about
    the text "None" on every state message.
    """
    if benefit is None:
        return {
            "day_started": "",
            "throughput_today_kwh": None,
            "stock_throughput_today_kwh": None,
            "cycling_avoided_today_kwh": None,
            "stock_micro_cycles_today": None,
        }
    return {
        "day_started": benefit.day_started,
        "throughput_today_kwh": _rounded(benefit.throughput_kwh, 2),
        "stock_throughput_today_kwh": _rounded(benefit.stock_throughput_kwh, 2),
        "cycling_avoided_today_kwh": _rounded(benefit.avoided_kwh, 2),
        "stock_micro_cycles_today": benefit.stock_micro_cycles,
    }


def state_document(
    decision: Decision,
    *,
    written_w: Optional[float],
    battery_power_w: Optional[float],
    data_age_s: Optional[float],
    transport: str,
    writes: WriteCounters,
    dry_run: bool,
    enabled: bool,
    mode: str,
    baseline_w: Optional[float],
    actuator: str = Actuator.NONE.value,
    actuator_why: str = "",
    override_writes: Optional[WriteCounters] = None,
    benefit: Optional[DailyBenefit] = None,
) -> Dict[str, Any]:
    """Return the state as a JSON-ready dict: snake_case keys, watts as whole numbers.

    ``writes`` counts flash writes (the setting; kept under the ``writes_*`` keys the entities
    were first published with), ``override_writes`` the hub4 override's RAM writes (None: not
    counted, shown as unknown). ``benefit`` is today's measured and stock-ESS cycling (None:
    not measured yet, shown as unknown).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if actuator not in ACTUATORS:
        raise ValueError(f"actuator must be one of {', '.join(ACTUATORS)}, got {actuator!r}")
    return {
        "target_w": _rounded(decision.target_w, 0),
        "target_class": decision.target_class.value,
        "written_w": _rounded(written_w, 0),
        "reason": decision.reason.value,
        "text": decision.text[:MAX_STATE_LENGTH],
        "phase": decision.phase.value if decision.phase is not None else PHASE_UNKNOWN,
        "band": decision.band.value,
        "soc": _rounded(decision.soc, 1),
        "floor": _rounded(decision.floor, 1),
        "soc_above_floor": _rounded(decision.d, 1),
        "pv_filtered_w": _rounded(decision.pv_f, 0),
        "pv_share_w": _rounded(decision.pv_share_w, 0),
        "battery_power_w": _rounded(battery_power_w, 0),
        "data_age_s": _rounded(data_age_s, 1),
        "transport": transport,
        **_counts("writes", writes),
        **_counts("override_writes", override_writes),
        "actuator": actuator,
        "actuator_why": actuator_why[:MAX_STATE_LENGTH],
        "baseline_w": _rounded(baseline_w, 0),
        **_benefit(benefit),
        "ac_priority": decision.reason.prioritises_ac_loads,
        "standing_aside": decision.reason.stands_aside,
        "dry_run": dry_run,
        "enabled": enabled,
        "mode": mode,
    }


def state_message(topics: Topics, document: Mapping[str, Any]) -> Message:
    """Return the retained message carrying a ``state_document`` on ``topics.state``."""
    # allow_nan=False: Home Assistant's JSON parser rejects NaN/Infinity; _rounded removed them.
    payload = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return Message(topic=topics.state, payload=payload, retain=True)


def availability_message(topics: Topics, *, online: bool) -> Message:
    """Return the retained availability message (the ``offline`` one doubles as last will)."""
    return Message(
        topic=topics.availability,
        payload=PAYLOAD_ONLINE if online else PAYLOAD_OFFLINE,
        retain=True,
    )


# --- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entity:
    """One row of the entity table: where it lives and its component-specific options."""

    component: str
    object: str
    name: str
    options: Mapping[str, Any]
    control: bool = False  # only published when controls are enabled


def _value(key: str) -> str:
    return "{{ value_json." + key + " }}"


def _on_off(key: str) -> str:
    return "{{ '" + PAYLOAD_ON + "' if value_json." + key + " else '" + PAYLOAD_OFF + "' }}"


def _attributes(**keys: str) -> str:
    """Return a ``json_attributes_template``: attribute name -> state document key."""
    pairs = ", ".join(f"'{name}': value_json.{key}" for name, key in keys.items())
    return "{{ {" + pairs + "} | tojson }}"


# (suffix, name suffix, state class) of the write counters. total_increasing: the count restarts
# at 0 with the service, which Home Assistant treats as a reset.
_COUNTER_PERIODS = (
    ("hour", "last hour", "measurement"),
    ("day", "last day", "measurement"),
    ("total", "total", "total_increasing"),
)


def _writes(key: str, name: str, icon: str) -> Tuple[_Entity, ...]:
    """Return the diagnostic counters of one kind of write: last hour, last day, total."""
    return tuple(
        _Entity(
            "sensor",
            f"{key}_{suffix}",
            f"{name} {label}",
            {
                "state_class": state_class,
                "entity_category": "diagnostic",
                "icon": icon,
                "value_template": _value(f"{key}_{suffix}"),
            },
        )
        for suffix, label, state_class in _COUNTER_PERIODS
    )


def _measured(key: str, unit: str, **options: str) -> Dict[str, Any]:
    """Return the options of a measurement in ``unit`` shown from the state's ``key``, plus
    ``options`` (device_class, icon, entity_category)."""
    return {
        "unit_of_measurement": unit,
        "state_class": "measurement",
        "value_template": _value(key),
        **options,
    }


def _power(key: str, *, diagnostic: bool = False, state_class: bool = True) -> Dict[str, Any]:
    options: Dict[str, Any] = {
        "device_class": "power",
        "unit_of_measurement": "W",
        "value_template": _value(key),
    }
    if state_class:
        options["state_class"] = "measurement"
    if diagnostic:
        options["entity_category"] = "diagnostic"
    return options


def _energy_today(key: str, *, may_decrease: bool = False) -> Dict[str, Any]:
    """Return the options of a kWh figure that starts again at 0 every local midnight.

    Long-term statistics need a state_class. A figure that only grows within the day is
    ``total_increasing``: Home Assistant takes its drop at midnight as a new meter cycle. One that
    may also go down within the day (the cycling avoided) would have each drop taken for a reset,
    so it is ``total`` with ``last_reset`` at the start of the day (MQTT sensors allow
    ``last_reset_value_template`` only with ``total``).
    """
    options: Dict[str, Any] = {
        "device_class": "energy",
        "unit_of_measurement": "kWh",
        "value_template": _value(key),
        "suggested_display_precision": 2,
    }
    if may_decrease:
        options["state_class"] = "total"
        options["last_reset_value_template"] = _value("day_started")
    else:
        options["state_class"] = "total_increasing"
    return options


_ENTITIES: Tuple[_Entity, ...] = (
    _Entity("sensor", "target_w", "Target", _power("target_w")),
    _Entity("sensor", "written_w", "Written", _power("written_w")),
    _Entity("sensor", "soc", "State of charge", _measured("soc", "%", device_class="battery")),
    _Entity(
        "sensor",
        "floor",
        "SOC floor",
        _measured("floor", "%", icon="mdi:battery-arrow-down-outline"),
    ),
    _Entity("sensor", "pv_filtered_w", "PV filtered", _power("pv_filtered_w")),
    _Entity("sensor", "battery_power_w", "Battery power", _power("battery_power_w")),
    _Entity(
        "sensor",
        "data_age_s",
        "Data age",
        _measured("data_age_s", "s", device_class="duration", entity_category="diagnostic"),
    ),
    _Entity(
        "sensor",
        "throughput_today_kwh",
        "Battery throughput today",
        {**_energy_today("throughput_today_kwh"), "icon": "mdi:battery-sync"},
    ),
    _Entity(
        "sensor",
        "stock_throughput_today_kwh",
        "Stock ESS estimate today",
        {**_energy_today("stock_throughput_today_kwh"), "icon": "mdi:battery-sync-outline"},
    ),
    _Entity(
        "sensor",
        "cycling_avoided_today_kwh",
        "Cycling avoided today",
        {**_energy_today("cycling_avoided_today_kwh", may_decrease=True), "icon": "mdi:leaf"},
    ),
    _Entity(
        "sensor",
        "stock_micro_cycles_today",
        "Stock ESS micro-cycles today",
        {
            "state_class": "total_increasing",
            "icon": "mdi:sine-wave",
            "value_template": _value("stock_micro_cycles_today"),
        },
    ),
    # The setting's writes keep the object ids (and so the entity ids) they were first published
    # with; only their names say "flash" now that the override's RAM writes count apart.
    *_writes("writes", "Flash writes", "mdi:content-save-edit-outline"),
    *_writes("override_writes", "Override writes", "mdi:memory"),
    # A setting, not a measurement: no state_class keeps it out of long-term statistics.
    _Entity(
        "sensor", "baseline_w", "Baseline", _power("baseline_w", diagnostic=True, state_class=False)
    ),
    _Entity(
        "sensor",
        "reason",
        "Reason",
        {
            "device_class": "enum",
            "options": [reason.value for reason in Reason],
            "icon": "mdi:head-lightbulb-outline",
            "value_template": _value("reason"),
        },
    ),
    _Entity(
        "sensor",
        "actuator",
        "Actuator",
        {
            "device_class": "enum",
            "options": list(ACTUATORS),
            "icon": "mdi:tune-variant",
            "value_template": _value("actuator"),
            "json_attributes_topic": "state",
            "json_attributes_template": _attributes(why="actuator_why"),
        },
    ),
    _Entity(
        "sensor",
        "phase",
        "Phase",
        {
            "device_class": "enum",
            "options": [phase.value for phase in Phase] + [PHASE_UNKNOWN],
            "icon": "mdi:swap-vertical",
            "value_template": _value("phase"),
        },
    ),
    _Entity(
        "sensor",
        "text",
        "Decision",
        {"icon": "mdi:text-box-outline", "value_template": _value("text")},
    ),
    _Entity(
        "binary_sensor",
        "ac_priority",
        "AC-load priority active",
        {
            "payload_on": PAYLOAD_ON,
            "payload_off": PAYLOAD_OFF,
            "icon": "mdi:solar-power",
            "value_template": _on_off("ac_priority"),
        },
    ),
    _Entity(
        "binary_sensor",
        "standing_aside",
        "Standing aside",
        {
            "payload_on": PAYLOAD_ON,
            "payload_off": PAYLOAD_OFF,
            "icon": "mdi:hand-back-left-outline",
            "value_template": _on_off("standing_aside"),
        },
    ),
    _Entity(
        "switch",
        "enabled",
        "Enabled",
        {
            "command_topic": "set_enabled",
            "payload_on": PAYLOAD_ON,
            "payload_off": PAYLOAD_OFF,
            "value_template": _on_off("enabled"),
        },
        control=True,
    ),
    _Entity(
        "select",
        "mode",
        "Mode",
        {"command_topic": "set_mode", "options": list(MODES), "value_template": _value("mode")},
        control=True,
    ),
    _Entity(
        "button",
        "restore_baseline",
        "Restore baseline now",
        {
            "command_topic": "set_restore",
            "payload_press": PAYLOAD_PRESS,
            "entity_category": "config",
            "icon": "mdi:restore",
        },
        control=True,
    ),
)

# Options naming a topic by its Topics attribute; ``_entity_config`` resolves them.
_TOPIC_OPTIONS = frozenset({"command_topic", "json_attributes_topic"})
# Components that show a state read from the state document (a button has none).
_STATEFUL = frozenset({"sensor", "binary_sensor", "switch", "select"})
# Read-only components that turn unavailable when the state stops coming.
_EXPIRING = frozenset({"sensor", "binary_sensor"})


def _slug(text: str) -> str:
    """Return ``text`` as an MQTT topic level and entity id part: lowercase [a-z0-9_]."""
    return _UNSAFE_ID_CHARS.sub("_", text.lower())


def _config_topic(cfg: HomeAssistantConfig, portal_id: str, entity: _Entity) -> str:
    node = f"{_slug(cfg.node_id)}_{_slug(portal_id)}"
    return f"{cfg.discovery_prefix}/{entity.component}/{node}/{entity.object}/config"


def _device(portal_id: str, sw_version: str) -> Dict[str, Any]:
    return {
        "name": f"venus-prio {portal_id}",
        "identifiers": [f"venus_prio_{portal_id}"],
        "manufacturer": MANUFACTURER,
        "model": MODEL,
        "sw_version": sw_version,
    }


def _origin(sw_version: str, support_url: Optional[str]) -> Dict[str, Any]:
    origin: Dict[str, Any] = {"name": ORIGIN_NAME, "sw_version": sw_version}
    if support_url is not None:
        origin["support_url"] = support_url
    return origin


def _entity_config(
    entity: _Entity,
    *,
    topics: Topics,
    portal_id: str,
    device: Dict[str, Any],
    origin: Dict[str, Any],
    expire_after_s: int,
) -> Dict[str, Any]:
    entity_id = f"venus_prio_{_slug(portal_id)}_{entity.object}"
    config: Dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"venus_prio_{portal_id}_{entity.object}",
        # Both on purpose, see the module docstring: object_id for HA up to 2025.9,
        # default_entity_id from 2025.10 (where object_id is deprecated, then ignored).
        "object_id": entity_id,
        "default_entity_id": f"{entity.component}.{entity_id}",
        "device": device,
        "origin": origin,
        "availability_topic": topics.availability,
        "payload_available": PAYLOAD_ONLINE,
        "payload_not_available": PAYLOAD_OFFLINE,
    }
    if entity.component in _STATEFUL:
        config["state_topic"] = topics.state
    if entity.component in _EXPIRING:
        config["expire_after"] = expire_after_s
    for key, value in entity.options.items():
        config[key] = getattr(topics, value) if key in _TOPIC_OPTIONS else value
    return config


def discovery_messages(
    cfg: HomeAssistantConfig,
    *,
    portal_id: str,
    sw_version: str,
    controls: bool,
    support_url: Optional[str] = None,
    expire_after_s: int = DEFAULT_EXPIRE_AFTER_S,
) -> List[Message]:
    """Return one retained discovery config per entity; controls only when ``controls``."""
    topics = state_topics(state_prefix(cfg, portal_id=portal_id))
    device = _device(portal_id, sw_version)
    origin = _origin(sw_version, support_url)
    messages = []
    for entity in _ENTITIES:
        if entity.control and not controls:
            continue
        config = _entity_config(
            entity,
            topics=topics,
            portal_id=portal_id,
            device=device,
            origin=origin,
            expire_after_s=expire_after_s,
        )
        payload = json.dumps(config, sort_keys=True, separators=(",", ":"))
        messages.append(
            Message(topic=_config_topic(cfg, portal_id, entity), payload=payload, retain=True)
        )
    return messages


def cleanup_messages(cfg: HomeAssistantConfig, *, portal_id: str) -> List[Message]:
    """Return empty retained payloads that delete every config topic, then state and availability.

    Control entities are always included: they may have been published by an earlier run with
    ``controls: true``. Configs go first so Home Assistant removes the entities before their
    state disappears.
    """
    topics = state_topics(state_prefix(cfg, portal_id=portal_id))
    configs = [
        Message(topic=_config_topic(cfg, portal_id, entity), payload="", retain=True)
        for entity in _ENTITIES
    ]
    return [
        *configs,
        Message(topic=topics.state, payload="", retain=True),
        Message(topic=topics.availability, payload="", retain=True),
    ]


# --- commands ----------------------------------------------------------------------------------


_ENABLED_PAYLOADS: Mapping[str, bool] = {PAYLOAD_ON: True, PAYLOAD_OFF: False}


def parse_command(topic: str, payload: object, topics: Topics) -> Optional[Command]:
    """Return the command for exactly the documented payloads; None for anything else.

    ``payload`` is whatever the MQTT client delivered (aiomqtt: bytes, str, int, float or None);
    only text is ever a valid command.
    """
    if isinstance(payload, (bytes, bytearray)):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            return None
    elif isinstance(payload, str):
        text = payload
    else:
        return None
    if topic == topics.set_enabled and text in _ENABLED_PAYLOADS:
        return Command(kind=CommandKind.SET_ENABLED, enabled=_ENABLED_PAYLOADS[text])
    if topic == topics.set_mode and text in MODES:
        return Command(kind=CommandKind.SET_MODE, mode=text)
    if topic == topics.set_restore and text == PAYLOAD_PRESS:
        return Command(kind=CommandKind.RESTORE)
    return None


__all__: List[str] = [
    "ACTUATORS",
    "DEFAULT_EXPIRE_AFTER_S",
    "MODES",
    "STATE_HEARTBEAT_S",
    "Command",
    "CommandKind",
    "Message",
    "Topics",
    "availability_message",
    "cleanup_messages",
    "discovery_messages",
    "parse_command",
    "state_document",
    "state_message",
    "state_prefix",
    "state_topics",
]
