"""Home Assistant discovery, state and command builders: parsed JSON checked against HA's rules."""

from __future__ import annotations

import json
import random
import re
from typing import Any, Dict, FrozenSet, List, Optional, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from venus_prio import homeassistant as ha
from venus_prio.config import HomeAssistantConfig
from venus_prio.model import Actuator, Band, Decision, Phase, Reason, TargetClass
from venus_prio.status import DailyBenefit
from venus_prio.writes import WriteCounters

PORTAL = "c0619ab00001"
CFG = HomeAssistantConfig()
TOPICS = ha.state_topics(f"venus_prio/{PORTAL}")

# Allow-lists taken from the Home Assistant documentation (sensor, binary_sensor, entity
# categories), restricted to what every release since 2023.1 accepts.
COMPONENTS = {"sensor", "binary_sensor", "switch", "select", "button"}
SENSOR_UNITS: Dict[str, Optional[FrozenSet[str]]] = {
    # device class -> units it accepts (None: must have no unit)
    "power": frozenset({"W", "kW"}),
    "battery": frozenset({"%"}),
    "duration": frozenset({"d", "h", "min", "s"}),
    "energy": frozenset({"Wh", "kWh", "MWh"}),
    "enum": None,
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
}  # fmt: skip
ENTITY_CATEGORIES = {"config", "diagnostic"}
TEMPLATE_KEY = re.compile(r"value_json\.([A-Za-z_][A-Za-z0-9_]*)")
SIMPLE_TEMPLATE = re.compile(r"^\{\{ value_json\.([a-z_]+) \}\}$")
ON_OFF_TEMPLATE = re.compile(r"^\{\{ 'ON' if value_json\.([a-z_]+) else 'OFF' \}\}$")
ATTRIBUTES_TEMPLATE = re.compile(r"^\{\{ \{(.*)\} \| tojson \}\}$")
ATTRIBUTE_PAIR = re.compile(r"^'([a-z_]+)': value_json\.([a-z_]+)$")
# Entities per kind; the lists of ids below are the published ones.
SENSORS = 22
BINARY_SENSORS = 2
CONTROLS = 3


def decision(
    *,
    reason: Reason = Reason.PV_PRIORITY,
    phase: Optional[Phase] = Phase.CHARGING,
    target_w: float = 812.4,
    soc: Optional[float] = 17.26,
    text: str = "PV 1015 W, sharing 80 %",
) -> Decision:
    return Decision(
        target_w=target_w,
        target_class=TargetClass.POSITIVE,
        reason=reason,
        phase=phase,
        band=Band.PRIORITY,
        d=2.26,
        soc=soc,
        floor=15.0,
        pv_f=1015.49,
        pv_share_w=812.39,
        text=text,
    )


def document(dec: Optional[Decision] = None, **overrides: Any) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {
        "written_w": 800.0,
        "battery_power_w": -23.6,
        "data_age_s": 1.234,
        "transport": "mqtt",
        "writes": WriteCounters(hour=3, day=17, total=120),
        "dry_run": False,
        "enabled": True,
        "mode": "auto",
        "baseline_w": -1.0,
    }
    kwargs.update(overrides)
    message = ha.state_message(TOPICS, ha.state_document(dec or decision(), **kwargs))
    assert message.topic == TOPICS.state
    assert message.retain
    parsed: Dict[str, Any] = json.loads(message.payload)
    return parsed


def configs(controls: bool = True, cfg: HomeAssistantConfig = CFG) -> Dict[str, Dict[str, Any]]:
    messages = ha.discovery_messages(cfg, portal_id=PORTAL, sw_version="0.1.0", controls=controls)
    assert all(m.retain for m in messages)
    parsed = {m.topic: json.loads(m.payload) for m in messages}
    assert len(parsed) == len(messages), "two entities share a config topic"
    return parsed


def configs_by_object() -> Dict[str, Dict[str, Any]]:
    """Return the discovery configs (controls included) keyed by their object id."""
    return {topic.split("/")[3]: config for topic, config in configs().items()}


def component(topic: str) -> str:
    return topic.split("/")[1]


# --- topics --------------------------------------------------------------------------------------


def test_state_topics_default_prefix_is_portal_id() -> None:
    topics = ha.state_topics(ha.state_prefix(CFG, portal_id=PORTAL))
    assert topics == ha.Topics(
        base="venus_prio/c0619ab00001",
        state="venus_prio/c0619ab00001/state",
        availability="venus_prio/c0619ab00001/availability",
        set_enabled="venus_prio/c0619ab00001/set/enabled",
        set_mode="venus_prio/c0619ab00001/set/mode",
        set_restore="venus_prio/c0619ab00001/set/restore",
    )
    assert topics.commands == (topics.set_enabled, topics.set_mode, topics.set_restore)


def test_configured_state_prefix_wins() -> None:
    cfg = HomeAssistantConfig(state_topic_prefix="home/ess/")
    topics = ha.state_topics(ha.state_prefix(cfg, portal_id=PORTAL))
    assert topics.state == "home/ess/state"
    assert topics.set_mode == "home/ess/set/mode"
    for config in configs(cfg=cfg).values():
        assert config["availability_topic"] == "home/ess/availability"


def test_availability_messages() -> None:
    assert ha.availability_message(TOPICS, online=True) == ha.Message(
        topic=TOPICS.availability, payload="online", retain=True
    )
    assert ha.availability_message(TOPICS, online=False).payload == "offline"


# --- discovery -----------------------------------------------------------------------------------


def test_config_topics_follow_the_discovery_layout() -> None:
    cfg = HomeAssistantConfig(discovery_prefix="ha", node_id="vp")
    for topic, config in configs(cfg=cfg).items():
        prefix, comp, node, obj, last = topic.split("/")
        assert (prefix, node, last) == ("ha", f"vp_{PORTAL}", "config")
        assert comp in COMPONENTS
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", obj)
        assert config["unique_id"] == f"venus_prio_{PORTAL}_{obj}"


def test_unique_ids_are_unique_and_stable() -> None:
    first = configs()
    second = configs()
    ids = [c["unique_id"] for c in first.values()]
    assert len(ids) == len(set(ids))
    assert all(i.startswith(f"venus_prio_{PORTAL}_") for i in ids)
    assert first == second
    # A new software version changes the device block, never the ids.
    newer = ha.discovery_messages(CFG, portal_id=PORTAL, sw_version="9.9", controls=True)
    assert [json.loads(m.payload)["unique_id"] for m in newer] == ids


def test_unique_ids_are_the_published_ones() -> None:
    # Renaming one orphans the entity in every installation: this list may only grow.
    # The writes_* ids are the flash writes: they kept the ids they were first published with.
    objects = [
        "target_w", "written_w", "soc", "floor", "pv_filtered_w", "battery_power_w",
        "data_age_s", "writes_hour", "writes_day", "writes_total", "baseline_w", "reason",
        "phase", "text", "ac_priority", "standing_aside", "enabled", "mode", "restore_baseline",
        "override_writes_hour", "override_writes_day", "override_writes_total", "actuator",
        "throughput_today_kwh", "stock_throughput_today_kwh", "cycling_avoided_today_kwh",
        "stock_micro_cycles_today",
    ]  # fmt: skip
    ids = sorted(c["unique_id"] for c in configs().values())
    assert ids == sorted(f"venus_prio_{PORTAL}_{o}" for o in objects)


def test_every_entity_shares_device_origin_and_availability() -> None:
    parsed = list(configs().values())
    device = parsed[0]["device"]
    assert device == {
        "name": f"venus-prio {PORTAL}",
        "identifiers": [f"venus_prio_{PORTAL}"],
        "manufacturer": device["manufacturer"],
        "model": device["model"],
        "sw_version": "0.1.0",
    }
    assert device["manufacturer"] and device["model"]
    for config in parsed:
        assert config["device"] == device
        assert config["origin"]["name"] == "venus-prio"
        assert config["origin"]["sw_version"] == "0.1.0"
        assert config["availability_topic"] == TOPICS.availability
        assert config["payload_available"] == "online"
        assert config["payload_not_available"] == "offline"
        # Since HA 2023.8 the device name is prefixed automatically: never repeat it.
        assert not config["name"].lower().startswith("venus-prio")


def test_support_url_goes_into_origin() -> None:
    messages = ha.discovery_messages(
        CFG, portal_id=PORTAL, sw_version="1", controls=False, support_url="https://example.org/vp"
    )
    assert all(
        json.loads(m.payload)["origin"]["support_url"] == "https://example.org/vp" for m in messages
    )
    assert all("support_url" not in c["origin"] for c in configs().values())


def test_entity_ids_for_old_and_new_home_assistant() -> None:
    for topic, config in configs().items():
        obj = topic.split("/")[3]
        assert config["object_id"] == f"venus_prio_{PORTAL}_{obj}"
        assert config["default_entity_id"] == f"{component(topic)}.{config['object_id']}"
        assert re.fullmatch(r"[a-z0-9_]+", config["object_id"])


def test_portal_id_with_odd_characters_gives_valid_topics_and_ids() -> None:
    messages = ha.discovery_messages(CFG, portal_id="AB+cd/1", sw_version="1", controls=True)
    for message in messages:
        node = message.topic.split("/")[2]
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", node)
        config = json.loads(message.payload)
        assert re.fullmatch(r"[a-z0-9_]+", config["object_id"])
        assert config["unique_id"].startswith("venus_prio_AB+cd/1_")


def test_units_device_and_state_classes_are_valid_home_assistant_values() -> None:
    checked = 0
    for topic, config in configs().items():
        comp = component(topic)
        category = config.get("entity_category")
        assert category is None or category in ENTITY_CATEGORIES
        if comp == "sensor":
            assert category in (None, "diagnostic"), "sensors cannot be config entities"
            device_class = config.get("device_class")
            unit = config.get("unit_of_measurement")
            if device_class is not None:
                assert device_class in SENSOR_UNITS
                allowed = SENSOR_UNITS[device_class]
                if allowed is None:
                    assert unit is None
                else:
                    assert unit in allowed
            state_class = config.get("state_class")
            assert state_class is None or state_class in STATE_CLASSES
            if device_class == "enum":
                assert state_class is None and unit is None
                assert config["options"]
            else:
                assert "options" not in config, "options only go with device_class enum"
            checked += 1
        elif comp == "binary_sensor":
            assert category in (None, "diagnostic")
            assert config.get("device_class") in (None, *BINARY_SENSOR_CLASSES)
            checked += 1
    assert checked == SENSORS + BINARY_SENSORS


def test_expected_sensor_classes() -> None:
    by_object = configs_by_object()
    expect = {
        "target_w": ("power", "W", "measurement", None),
        "written_w": ("power", "W", "measurement", None),
        "soc": ("battery", "%", "measurement", None),
        "floor": (None, "%", "measurement", None),
        "pv_filtered_w": ("power", "W", "measurement", None),
        "battery_power_w": ("power", "W", "measurement", None),
        "data_age_s": ("duration", "s", "measurement", "diagnostic"),
        "writes_hour": (None, None, "measurement", "diagnostic"),
        "writes_day": (None, None, "measurement", "diagnostic"),
        "writes_total": (None, None, "total_increasing", "diagnostic"),
        "override_writes_hour": (None, None, "measurement", "diagnostic"),
        "override_writes_day": (None, None, "measurement", "diagnostic"),
        "override_writes_total": (None, None, "total_increasing", "diagnostic"),
        "actuator": ("enum", None, None, None),
        "baseline_w": ("power", "W", None, "diagnostic"),
        "reason": ("enum", None, None, None),
        "phase": ("enum", None, None, None),
        "text": (None, None, None, None),
        "throughput_today_kwh": ("energy", "kWh", "total_increasing", None),
        "stock_throughput_today_kwh": ("energy", "kWh", "total_increasing", None),
        "cycling_avoided_today_kwh": ("energy", "kWh", "total", None),
        "stock_micro_cycles_today": (None, None, "total_increasing", None),
    }
    for obj, (device_class, unit, state_class, category) in expect.items():
        config = by_object[obj]
        got = (
            config.get("device_class"),
            config.get("unit_of_measurement"),
            config.get("state_class"),
            config.get("entity_category"),
        )
        assert got == (device_class, unit, state_class, category), obj


def test_enum_options_cover_every_reason_phase_and_actuator() -> None:
    by_object = configs_by_object()
    assert set(by_object["reason"]["options"]) == {r.value for r in Reason}
    assert "STAND_ASIDE_OVERRIDE_IN_USE" in by_object["reason"]["options"]
    assert {p.value for p in Phase} <= set(by_object["phase"]["options"])
    assert by_object["actuator"]["options"] == ["override", "setting", "none"]
    for reason in Reason:
        assert document(decision(reason=reason))["reason"] in by_object["reason"]["options"]
    for phase in (*Phase, None):
        assert document(decision(phase=phase))["phase"] in by_object["phase"]["options"]
    for actuator in Actuator:
        rendered = document(actuator=actuator.value)["actuator"]
        assert rendered in by_object["actuator"]["options"]


def render_attributes(template: str, state: Dict[str, Any]) -> Dict[str, Any]:
    """Render our json_attributes_template shape (a dict literal piped to tojson) as HA would."""
    shape = ATTRIBUTES_TEMPLATE.match(template)
    assert shape, f"unexpected attributes template: {template}"
    attributes: Dict[str, Any] = {}
    for pair in shape.group(1).split(", "):
        match = ATTRIBUTE_PAIR.match(pair)
        assert match, pair
        attributes[match.group(1)] = state[match.group(2)]
    # tojson must give a JSON object: that is all Home Assistant accepts as attributes.
    parsed: Dict[str, Any] = json.loads(json.dumps(attributes))
    return parsed


def render(template: str, state: Dict[str, Any]) -> str:
    """Render the two template shapes we publish the way HA's Jinja would."""
    simple = SIMPLE_TEMPLATE.match(template)
    if simple:
        value = state[simple.group(1)]
        return "None" if value is None else str(value)
    on_off = ON_OFF_TEMPLATE.match(template)
    assert on_off, f"unexpected template shape: {template}"
    return "ON" if state[on_off.group(1)] else "OFF"


def test_value_templates_reference_keys_of_the_real_state_document() -> None:
    state = document()
    seen = 0
    for topic, config in configs().items():
        template: Optional[str] = config.get("value_template")
        if component(topic) == "button":
            assert template is None and "state_topic" not in config
            continue
        assert template is not None
        assert config["state_topic"] == TOPICS.state
        keys = TEMPLATE_KEY.findall(template)
        assert keys, template
        assert all(key in state for key in keys), (topic, keys)
        rendered = render(template, state)
        if component(topic) in ("binary_sensor", "switch"):
            assert rendered in (config["payload_on"], config["payload_off"])
        if "options" in config:
            assert rendered in config["options"]
        attributes_template: Optional[str] = config.get("json_attributes_template")
        if attributes_template is not None:
            assert config["json_attributes_topic"] == TOPICS.state
            assert render_attributes(attributes_template, state)
        seen += 1
    assert seen == SENSORS + BINARY_SENSORS + CONTROLS - 1  # the button has no state


def test_rendered_states_follow_the_decision() -> None:
    by_object = configs_by_object()
    aside = document(decision(reason=Reason.STAND_ASIDE_STALE), enabled=False)
    prio = document(decision(reason=Reason.BELOW_FLOOR))
    assert render(by_object["standing_aside"]["value_template"], aside) == "ON"
    assert render(by_object["ac_priority"]["value_template"], aside) == "OFF"
    assert render(by_object["standing_aside"]["value_template"], prio) == "OFF"
    assert render(by_object["ac_priority"]["value_template"], prio) == "ON"
    assert render(by_object["enabled"]["value_template"], aside) == "OFF"
    # A null renders "None", which HA turns into "unknown" for numeric sensors.
    assert render(by_object["soc"]["value_template"], document(decision(soc=None))) == "None"


@pytest.mark.parametrize(
    ("reason", "standing_aside", "ac_priority"),
    [
        (Reason.PV_PRIORITY, "OFF", "ON"),
        (Reason.STAND_ASIDE_DYNAMIC_ESS, "ON", "OFF"),
        # Someone else's hub4 override: venus-prio stands aside and never writes it.
        (Reason.STAND_ASIDE_OVERRIDE_IN_USE, "ON", "OFF"),
        (Reason.NORMAL, "OFF", "OFF"),
    ],
)
def test_binary_sensors_per_reason(reason: Reason, standing_aside: str, ac_priority: str) -> None:
    by_object = configs_by_object()
    state = document(decision(reason=reason))
    assert state["reason"] == reason.value
    assert render(by_object["standing_aside"]["value_template"], state) == standing_aside
    assert render(by_object["ac_priority"]["value_template"], state) == ac_priority


FELL_BACK = "the GX resets the override (Venus before v3.60)"
UNCOUNTED = ("None",) * 3  # a null renders "None": unknown in Home Assistant


@pytest.mark.parametrize(
    ("status", "actuator", "why", "override"),
    [
        # The override in force: the RAM writes count, the flash writes stay where they were.
        ({"actuator": "override", "override_writes": WriteCounters(720, 9000, 9001)},
         "override", "", ("720", "9000", "9001")),
        # Fell back to the setting: the sensor says so, its why attribute says why.
        ({"actuator": "setting", "actuator_why": FELL_BACK,
          "override_writes": WriteCounters(0, 4, 4)}, "setting", FELL_BACK, ("0", "4", "4")),
        # Nothing counts override writes (the setting only): unknown, not 0.
        ({"actuator": "setting"}, "setting", "", UNCOUNTED),
        ({}, "none", "", UNCOUNTED),
        ({"actuator_why": "x" * 400}, "none", "x" * 255, UNCOUNTED),
    ],
)  # fmt: skip
def test_actuator_and_the_two_write_counters(
    status: Dict[str, Any], actuator: str, why: str, override: Any
) -> None:
    by_object = configs_by_object()
    state = document(**status)
    sensor = by_object["actuator"]
    assert render(sensor["value_template"], state) == actuator
    assert render_attributes(sensor["json_attributes_template"], state) == {"why": why}
    counters = [
        tuple(
            render(by_object[f"{key}_{p}"]["value_template"], state)
            for p in ("hour", "day", "total")
        )
        for key in ("writes", "override_writes")
    ]
    # The flash writes are document()'s WriteCounters(hour=3, day=17, total=120) every time.
    assert counters == [("3", "17", "120"), override]
    assert by_object["writes_total"]["name"] == "Flash writes total"
    assert by_object["override_writes_total"]["name"] == "Override writes total"


def test_sensors_and_binary_sensors_expire() -> None:
    for topic, config in configs().items():
        if component(topic) in ("sensor", "binary_sensor"):
            assert isinstance(config["expire_after"], int) and config["expire_after"] > 0
        else:
            assert "expire_after" not in config
    messages = ha.discovery_messages(
        CFG, portal_id=PORTAL, sw_version="1", controls=False, expire_after_s=90
    )
    assert {json.loads(m.payload)["expire_after"] for m in messages} == {90}


def test_controls() -> None:
    with_controls = {component(t): c for t, c in configs(controls=True).items()}
    switch, select, button = (
        with_controls["switch"],
        with_controls["select"],
        with_controls["button"],
    )
    assert switch["command_topic"] == TOPICS.set_enabled
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")
    assert select["command_topic"] == TOPICS.set_mode
    assert select["options"] == ["auto", "dry-run", "off"]
    assert button["command_topic"] == TOPICS.set_restore
    assert button["payload_press"] == "PRESS"
    # Each documented command payload round-trips through parse_command.
    assert ha.parse_command(switch["command_topic"], switch["payload_on"], TOPICS) is not None
    assert ha.parse_command(button["command_topic"], button["payload_press"], TOPICS) is not None
    for option in select["options"]:
        assert ha.parse_command(select["command_topic"], option, TOPICS) is not None


def test_no_controls_without_controls() -> None:
    without = configs(controls=False)
    assert {component(t) for t in without} == {"sensor", "binary_sensor"}
    assert len(without) == SENSORS + BINARY_SENSORS
    assert all("command_topic" not in c for c in without.values())
    assert set(without) < set(configs(controls=True))


def test_cleanup_empties_every_config_topic() -> None:
    cleanup = ha.cleanup_messages(CFG, portal_id=PORTAL)
    assert all(m.payload == "" and m.retain for m in cleanup)
    topics = [m.topic for m in cleanup]
    config_topics = set(configs(controls=True))
    assert set(topics[: len(config_topics)]) == config_topics
    assert topics[len(config_topics) :] == [TOPICS.state, TOPICS.availability]


# --- state ---------------------------------------------------------------------------------------


def test_state_document_values() -> None:
    state = document()
    assert state == {
        "target_w": 812,
        "target_class": "positive",
        "written_w": 800,
        "reason": "PV_PRIORITY",
        "text": "PV 1015 W, sharing 80 %",
        "phase": "charging",
        "band": "priority",
        "soc": 17.3,
        "floor": 15.0,
        "soc_above_floor": 2.3,
        "pv_filtered_w": 1015,
        "pv_share_w": 812,
        "battery_power_w": -24,
        "data_age_s": 1.2,
        "transport": "mqtt",
        "writes_hour": 3,
        "writes_day": 17,
        "writes_total": 120,
        "baseline_w": -1,
        "day_started": "",
        "throughput_today_kwh": None,
        "stock_throughput_today_kwh": None,
        "cycling_avoided_today_kwh": None,
        "stock_micro_cycles_today": None,
        "actuator": "none",
        "actuator_why": "",
        "override_writes_hour": None,
        "override_writes_day": None,
        "override_writes_total": None,
        "ac_priority": True,
        "standing_aside": False,
        "dry_run": False,
        "enabled": True,
        "mode": "auto",
    }


def test_todays_energy_figures_and_their_last_reset() -> None:
    benefit = DailyBenefit(
        day_started="2026-12-07T00:00:00+01:00",
        throughput_kwh=1.23456,
        stock_throughput_kwh=3.5,
        stock_micro_cycles=14,
    )
    state = document(benefit=benefit)
    assert state["day_started"] == "2026-12-07T00:00:00+01:00"
    assert state["throughput_today_kwh"] == 1.23
    assert state["stock_throughput_today_kwh"] == 3.5
    assert state["cycling_avoided_today_kwh"] == 2.27  # 3.5 - 1.23456, rounded after subtracting
    assert state["stock_micro_cycles_today"] == 14
    by_object = configs_by_object()
    avoided = by_object["cycling_avoided_today_kwh"]
    # The one figure that may go down within a day carries its reset; the others' drop at
    # midnight is their reset (total_increasing), so they must not carry one.
    assert render(avoided["last_reset_value_template"], state) == benefit.day_started
    for obj, config in by_object.items():
        has_reset = "last_reset_value_template" in config
        assert has_reset == (config.get("state_class") == "total"), obj
    assert render(avoided["value_template"], state) == "2.27"


def test_without_a_shadow_the_stock_figures_are_unknown() -> None:
    state = document(
        benefit=DailyBenefit(
            day_started="2026-12-07T06:12:00+01:00",
            throughput_kwh=0.4,
            stock_throughput_kwh=None,
            stock_micro_cycles=None,
        )
    )
    assert state["throughput_today_kwh"] == 0.4
    assert state["stock_throughput_today_kwh"] is None
    assert state["cycling_avoided_today_kwh"] is None  # not 0 - 0.4
    # Before any measurement HA must get an empty last_reset (ignored), not the text "None".
    assert document()["day_started"] == ""


def test_state_unknowns_are_null_and_non_finite_numbers_too() -> None:
    state = document(
        decision(soc=None, phase=None, target_w=float("inf")),
        written_w=None,
        battery_power_w=float("nan"),
        data_age_s=None,
        baseline_w=None,
    )
    for key in ("soc", "written_w", "battery_power_w", "data_age_s", "baseline_w", "target_w"):
        assert state[key] is None, key
    assert state["phase"] == "unknown"


def test_state_text_is_cut_to_what_home_assistant_stores() -> None:
    assert len(document(decision(text="x" * 1000))["text"]) == 255


@pytest.mark.parametrize(
    ("field", "value"), [("mode", "manual"), ("actuator", "Override"), ("actuator", "")]
)
def test_state_rejects_unknown_mode_and_actuator(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        kwargs: Dict[str, Any] = {field: value}
        document(**kwargs)


def test_actuators_constant_matches_the_model() -> None:
    assert ha.ACTUATORS == ("override", "setting", "none")


@settings(max_examples=200)
@given(
    target=st.floats(allow_nan=True, allow_infinity=True),
    soc=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    age=st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
def test_state_is_always_strict_json(
    target: float, soc: Optional[float], age: Optional[float]
) -> None:
    state = ha.state_document(
        decision(target_w=target, soc=soc),
        written_w=target,
        battery_power_w=soc,
        data_age_s=age,
        transport="dbus",
        writes=WriteCounters(hour=0, day=0, total=0),
        dry_run=True,
        enabled=True,
        mode="dry-run",
        baseline_w=target,
    )
    # Would raise on NaN/Infinity, which Home Assistant's JSON parser rejects.
    json.dumps(state, allow_nan=False)


# --- commands ------------------------------------------------------------------------------------

VALID = [
    (TOPICS.set_enabled, "ON", ha.Command(kind=ha.CommandKind.SET_ENABLED, enabled=True)),
    (TOPICS.set_enabled, "OFF", ha.Command(kind=ha.CommandKind.SET_ENABLED, enabled=False)),
    (TOPICS.set_mode, "auto", ha.Command(kind=ha.CommandKind.SET_MODE, mode="auto")),
    (TOPICS.set_mode, "dry-run", ha.Command(kind=ha.CommandKind.SET_MODE, mode="dry-run")),
    (TOPICS.set_mode, "off", ha.Command(kind=ha.CommandKind.SET_MODE, mode="off")),
    (TOPICS.set_restore, "PRESS", ha.Command(kind=ha.CommandKind.RESTORE)),
]


@pytest.mark.parametrize(("topic", "payload", "expected"), VALID)
def test_every_documented_command_parses(topic: str, payload: str, expected: ha.Command) -> None:
    assert ha.parse_command(topic, payload, TOPICS) == expected
    assert ha.parse_command(topic, payload.encode(), TOPICS) == expected
    assert ha.parse_command(topic, bytearray(payload.encode()), TOPICS) == expected


def test_modes_constant_matches_select() -> None:
    assert ha.MODES == ("auto", "dry-run", "off")


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (TOPICS.set_enabled, "on"),
        (TOPICS.set_enabled, " ON"),
        (TOPICS.set_enabled, "ON\n"),
        (TOPICS.set_enabled, "true"),
        (TOPICS.set_enabled, "1"),
        (TOPICS.set_mode, "Auto"),
        (TOPICS.set_mode, "dry_run"),
        (TOPICS.set_mode, ""),
        (TOPICS.set_restore, "press"),
        (TOPICS.set_restore, "ON"),
        (TOPICS.set_mode, "ON"),  # right payload, wrong topic
        (TOPICS.set_enabled, "auto"),
        (TOPICS.state, "ON"),
        ("venus_prio/other/set/enabled", "ON"),
        (TOPICS.set_enabled + "/", "ON"),
    ],
)
def test_near_misses_are_rejected(topic: str, payload: str) -> None:
    assert ha.parse_command(topic, payload, TOPICS) is None


def test_invalid_utf8_and_non_text_payloads_are_rejected() -> None:
    assert ha.parse_command(TOPICS.set_enabled, b"O\xffN", TOPICS) is None
    assert ha.parse_command(TOPICS.set_enabled, None, TOPICS) is None
    assert ha.parse_command(TOPICS.set_enabled, 1, TOPICS) is None
    assert ha.parse_command(TOPICS.set_mode, 0.0, TOPICS) is None


def _malformed(rng: random.Random) -> Union[str, bytes]:
    """Return a random payload: noise, or a valid one bent slightly."""
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    if kind == 1:
        alphabet = "ONFoFnRESPautodry-"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9)))
    base = rng.choice([v[1] for v in VALID])
    if kind == 2:
        i = rng.randrange(len(base) + 1)
        return base[:i] + rng.choice([" ", "\n", "\x00", "x", "-", "é"]) + base[i:]
    return base.swapcase() if rng.random() < 0.5 else base[:-1]


def test_fuzzed_payloads_are_rejected() -> None:
    rng = random.Random(20261124)
    valid_pairs = {(topic, payload) for topic, payload, _ in VALID}
    rejected = 0
    while rejected < 1000:
        topic = rng.choice(TOPICS.commands)
        payload = _malformed(rng)
        text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        if (topic, text) in valid_pairs:
            continue  # the fuzzer hit a valid payload by chance
        assert ha.parse_command(topic, payload, TOPICS) is None, (topic, payload)
        rejected += 1


def test_message_lists_are_messages() -> None:
    every: List[ha.Message] = [
        *ha.discovery_messages(CFG, portal_id=PORTAL, sw_version="1", controls=True),
        *ha.cleanup_messages(CFG, portal_id=PORTAL),
    ]
    assert all(isinstance(m, ha.Message) and isinstance(m.payload, str) for m in every)
