"""The pure half of the dbus-flashmq protocol: topics, payloads and the VRM broker name.

Nothing here does I/O or reads a clock. ``venus_prio.venus.mqtt`` (the client) and
``venus_prio.fakes.mqtt_gx`` (the fake GX) both build and parse their messages with these
functions, so the two sides cannot drift apart. See venus-mqtt.md for the behaviour modelled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from venus_prio.venus import paths
from venus_prio.venus.paths import VenusItem
from venus_prio.venus.source import InputStore

SERIAL_DISCOVERY_TOPIC = "N/+/system/0/Serial"
SUPPRESS_REPUBLISH = "suppress-republish"
ECHO_KEY = "full-publish-completed-echo"
VRM_PORT = 8883

Number = Union[int, float]


class PayloadError(ValueError):
    """A payload on a subscribed topic is not what dbus-flashmq sends."""


@dataclass(frozen=True)
class ItemUpdate:
    """One parsed N/ message for an input item.

    ``absent`` = the 0-byte payload dbus-flashmq sends when the service disappeared;
    ``value`` None and not absent = the GX marked the value invalid (JSON null).
    ``minimum``/``maximum`` are the bounds a settings payload carries (None when not sent).
    """

    value: Optional[float]
    absent: bool = False
    minimum: Optional[float] = None
    maximum: Optional[float] = None


_ABSENT = ItemUpdate(value=None, absent=True)  # frozen: one for every 0-byte payload


def n_topic(portal_id: str, suffix: str) -> str:
    """Return the notification topic ``N/<id>/<suffix>``."""
    return f"N/{portal_id}/{suffix}"


def r_topic(portal_id: str, suffix: str) -> str:
    """Return the read-request topic ``R/<id>/<suffix>``."""
    return f"R/{portal_id}/{suffix}"


def w_topic(portal_id: str, suffix: str) -> str:
    """Return the write topic ``W/<id>/<suffix>``."""
    return f"W/{portal_id}/{suffix}"


def heartbeat_topic(portal_id: str) -> str:
    return n_topic(portal_id, "heartbeat")


def completed_topic(portal_id: str) -> str:
    return n_topic(portal_id, "full_publish_completed")


def keepalive_topic(portal_id: str) -> str:
    return r_topic(portal_id, "keepalive")


# What the client follows: every input, and the hub4 override (a GX may not have it: the
# absence of its topic after the full publish says so, venus-mqtt.md checklist point 9).
FOLLOWED: Tuple[VenusItem, ...] = (*paths.INPUTS, paths.OVERRIDE_MAX_DISCHARGE)


def input_topics(portal_id: str) -> Dict[str, VenusItem]:
    """Return the N/ topic of every followed item (inputs and the override), mapped to it."""
    return {n_topic(portal_id, item.topic_suffix()): item for item in FOLLOWED}


def subscriptions(portal_id: str) -> List[str]:
    """Return the narrow QoS-0 subscriptions the client needs (never ``N/#``)."""
    return [*input_topics(portal_id), heartbeat_topic(portal_id), completed_topic(portal_id)]


def portal_id_from_serial_topic(topic: str) -> Optional[str]:
    """Return the ``+`` level of an ``N/<id>/system/0/Serial`` topic, None for other topics."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "N" and parts[1] and parts[2:] == ["system", "0", "Serial"]:
        return parts[1]
    return None


def full_keepalive_payload(echo: str) -> bytes:
    """Return the keepalive that asks for a full republish ending with our echo."""
    return json.dumps({"keepalive-options": [{ECHO_KEY: echo}]}).encode()


def suppress_keepalive_payload() -> bytes:
    """Return the keepalive that keeps the GX publishing without a full republish."""
    return json.dumps({"keepalive-options": [SUPPRESS_REPUBLISH]}).encode()


def _json_number(value: float) -> Number:
    # An integral float goes out as a JSON int: localsettings converts to the setting's own
    # type anyway, and ints are what the GX's own GUI sends.
    return int(value) if float(value).is_integer() else float(value)


def write_payload(value: float) -> bytes:
    """Return the W/ payload ``{"value": x}`` (integral values as JSON ints)."""
    if isinstance(value, bool) or not math.isfinite(float(value)):
        raise ValueError(f"cannot write {value!r}")
    return json.dumps({"value": _json_number(value)}).encode()


def _load_json(payload: bytes) -> Any:
    try:
        if payload[:1] == b"{" and payload[1:2] != b"\x00":
            # What json.loads would detect for these bytes (no BOM, no UTF-16/32 zero byte),
            # decoded here: its detection is Python code, run on every N/ message.
            return json.loads(payload.decode("utf-8", "surrogatepass"))
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError("not JSON") from exc


def _bound(obj: Dict[str, Any], key: str) -> Optional[float]:
    if key not in obj:
        return None
    raw = obj[key]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise PayloadError(f"{key!r} is not a number: {raw!r}")
    try:
        number = float(raw)
    except OverflowError as exc:
        raise PayloadError(f"{key!r} is out of range") from exc
    if not math.isfinite(number):
        raise PayloadError(f"{key!r} is not finite")
    return number


def parse_item_payload(item: VenusItem, payload: bytes) -> ItemUpdate:
    """Parse an N/ payload for ``item``; raise ``PayloadError`` for anything malformed."""
    if len(payload) == 0:
        return _ABSENT
    obj = _load_json(payload)
    if not isinstance(obj, dict):
        raise PayloadError(f"not a JSON object: {type(obj).__name__}")
    if "value" not in obj:
        raise PayloadError("no 'value' key")
    try:
        value = InputStore.coerce(item, obj["value"])
    except (ValueError, OverflowError) as exc:
        raise PayloadError(str(exc)) from exc
    if "min" not in obj and "max" not in obj:  # only settings carry bounds
        return ItemUpdate(value)
    return ItemUpdate(value=value, minimum=_bound(obj, "min"), maximum=_bound(obj, "max"))


def plausible_setting_bounds(minimum: Optional[float], maximum: Optional[float]) -> bool:
    """Return whether min/max can be MaxDischargePower's range (localsettings: -1 .. 1e6).

    The range must allow 0 (hold) and be ordered; anything else is not from localsettings,
    and obeying it would push a write outside [0, max] (a garbage min of 9000, a max of -50).
    """
    if minimum is not None and minimum > 0:
        return False
    if maximum is not None and maximum < 0:
        return False
    return minimum is None or maximum is None or minimum <= maximum


def parse_completion_echo(payload: bytes) -> Tuple[bool, Optional[str]]:
    """Return (well formed, echo) of an ``N/<id>/full_publish_completed`` payload.

    Firmware before Venus 3.50 sends no echo: (True, None).
    """
    try:
        obj = _load_json(payload)
    except PayloadError:
        return False, None
    if not isinstance(obj, dict):
        return False, None
    echo = obj.get(ECHO_KEY)
    return True, echo if isinstance(echo, str) else None


def parse_keepalive_request(payload: bytes) -> Tuple[bool, Optional[str]]:
    """Return (full republish wanted, echo) of an ``R/<id>/keepalive`` payload.

    Mirrors the plugin: anything that is not a JSON object with ``keepalive-options`` (an
    empty payload, garbage) is a plain keepalive that asks for a full republish.
    """
    try:
        obj = _load_json(payload)
    except PayloadError:
        return True, None
    options = obj.get("keepalive-options") if isinstance(obj, dict) else None
    if not isinstance(options, list):
        return True, None
    full = SUPPRESS_REPUBLISH not in options
    echo: Optional[str] = None
    for option in options:
        if isinstance(option, dict) and isinstance(option.get(ECHO_KEY), str):
            echo = option[ECHO_KEY]
    return full, echo


def vrm_broker_host(portal_id: str) -> str:
    """Return the VRM cloud broker that serves ``portal_id`` (``mqtt<N>.victronenergy.com``)."""
    index = sum(ord(c) for c in portal_id.lower()) % 128
    return f"mqtt{index}.victronenergy.com"


def vrm_password(token: str) -> str:
    """Return the VRM broker password: the access token prefixed with ``Token ``."""
    return token if token.startswith("Token ") else f"Token {token}"
