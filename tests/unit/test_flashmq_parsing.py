"""The pure dbus-flashmq protocol functions: payloads, topics, keepalives, VRM endpoint."""

from __future__ import annotations

import json
import math
import ssl
from typing import Optional

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from venus_prio.config import BrokerConfig, SimConfig, TlsConfig, VenusConfig
from venus_prio.errors import ConfigError
from venus_prio.fakes.mqtt_gx import (
    _NO_VALUE,
    _Entry,
    apply_write,
    entry_payload,
    override_write,
    plant_values,
    written_value,
)
from venus_prio.sim.plant import Plant, PlantParams
from venus_prio.venus import flashmq, paths
from venus_prio.venus.flashmq import ItemUpdate, PayloadError
from venus_prio.venus.mqtt import Endpoint, resolve_endpoint, tls_context
from venus_prio.venus.source import InputStore

PID = "c0619ab00001"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"value": 55}', ItemUpdate(value=55.0)),
        (b'{"value": 55.5}', ItemUpdate(value=55.5)),
        (b'{"value": -3}', ItemUpdate(value=-3.0)),
        (b'{"value": null}', ItemUpdate(value=None)),
        (b"", ItemUpdate(value=None, absent=True)),
        (b'{"value": 1e3, "extra": [1, 2]}', ItemUpdate(value=1000.0)),
    ],
)
def test_valid_soc_payloads(payload: bytes, expected: ItemUpdate) -> None:
    assert flashmq.parse_item_payload(paths.SOC, payload) == expected


def test_settings_payload_carries_bounds() -> None:
    update = flashmq.parse_item_payload(
        paths.MAX_DISCHARGE_POWER, b'{"max":1000000.0,"min":-1.0,"value":-1.0}'
    )
    assert update == ItemUpdate(value=-1.0, minimum=-1.0, maximum=1_000_000.0)


@pytest.mark.parametrize(
    "payload",
    [
        b"55",  # a bare number is not what the plugin sends
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"55"',
        b"null",
        b"{}",
        b'{"Value": 55}',
        b'{"value": "55"}',
        b'{"value": true}',
        b'{"value": [55]}',
        b'{"value": {"value": 55}}',
        b'{"value": NaN}',
        b'{"value": Infinity}',
        b'{"value": -Infinity}',
        b'{"value": 1e400}',
        b'{"value": 1' + b"0" * 400 + b"}",  # an int too big for a float
        b'{"value": 5, "min": "low"}',
        b'{"value": 5, "max": NaN}',
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the recursion limit
    ],
)
def test_garbage_soc_payloads_raise_payload_error(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        flashmq.parse_item_payload(paths.SOC, payload)


def test_codes_must_be_whole_numbers() -> None:
    assert flashmq.parse_item_payload(paths.HUB4_MODE, b'{"value": 3.0}').value == 3.0
    with pytest.raises(PayloadError):
        flashmq.parse_item_payload(paths.HUB4_MODE, b'{"value": 2.5}')


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_payload_error(payload: bytes) -> None:
    try:
        update = flashmq.parse_item_payload(paths.SOC, payload)
    except PayloadError:
        return
    assert update.value is None or math.isfinite(update.value)


def _plain_parse(item: paths.VenusItem, payload: bytes) -> ItemUpdate:
    """``parse_item_payload`` by its definition: json.loads on the bytes, all keys read."""
    if not payload:
        return ItemUpdate(value=None, absent=True)
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("not JSON") from exc
    if not isinstance(obj, dict) or "value" not in obj:
        raise PayloadError("not an object with a value")
    return ItemUpdate(
        value=InputStore.coerce(item, obj["value"]),
        minimum=flashmq._bound(obj, "min"),
        maximum=flashmq._bound(obj, "max"),
    )


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.binary(max_size=40).map(lambda tail: b"{" + tail),
        st.text(max_size=12).map(lambda v: json.dumps({"value": v}).encode()),
        st.sampled_from(["utf-8-sig", "utf-16", "utf-16-le", "utf-32"]).map(
            '{"value": 5, "min": -1}'.encode
        ),
        st.floats().map(lambda v: json.dumps({"value": v, "min": 0.0}).encode()),
    )
)
@example(b'{"value": 5, "x": "\xff"}')  # not UTF-8: not JSON either way
@example(b'{"value": 5, "max": 100}')
@example(b'{"value": 5, "max": "x"}')
def test_the_fast_decoding_parses_as_json_loads_on_bytes(payload: bytes) -> None:
    # parse_item_payload decodes UTF-8 itself where json.loads would detect UTF-8, and skips
    # the bounds when there are none: the same result, or the same error, as the plain way.
    try:
        expected = _plain_parse(paths.SOC, payload)
    except (PayloadError, ValueError, OverflowError):
        with pytest.raises(PayloadError):
            flashmq.parse_item_payload(paths.SOC, payload)
        return
    assert flashmq.parse_item_payload(paths.SOC, payload) == expected


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["value", "min", "max", "x"]), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(_json_values)
def test_any_json_parses_to_finite_or_none(value: object) -> None:
    payload = json.dumps(value).encode()
    try:
        update = flashmq.parse_item_payload(paths.MAX_DISCHARGE_POWER, payload)
    except PayloadError:
        return
    for number in (update.value, update.minimum, update.maximum):
        assert number is None or math.isfinite(number)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("N/c0619ab00001/system/0/Serial", "c0619ab00001"),
        ("N/abc/system/0/Serial", "abc"),
        ("N//system/0/Serial", None),
        ("N/abc/system/1/Serial", None),
        ("N/abc/system/0/Serial/x", None),
        ("R/abc/system/0/Serial", None),
        ("N/abc/heartbeat", None),
    ],
)
def test_portal_id_from_serial_topic(topic: str, expected: Optional[str]) -> None:
    assert flashmq.portal_id_from_serial_topic(topic) == expected


def test_subscriptions_are_narrow() -> None:
    topics = flashmq.subscriptions(PID)
    assert all("#" not in t and "+" not in t for t in topics)
    assert "N/c0619ab00001/system/0/Dc/Battery/Soc" in topics
    assert "N/c0619ab00001/settings/0/Settings/CGwacs/MaxDischargePower" in topics
    assert "N/c0619ab00001/heartbeat" in topics
    assert "N/c0619ab00001/full_publish_completed" in topics
    # The hub4 override too (control.md section 8): whether a GX has it is learnt from it.
    assert "N/c0619ab00001/hub4/0/Overrides/MaxDischargePower" in topics
    assert len(topics) == len(paths.INPUTS) + 3
    assert flashmq.input_topics(PID)["N/c0619ab00001/settings/0/Settings/CGwacs/Hub4Mode"] == (
        paths.HUB4_MODE
    )


def test_every_phase_of_the_ac_quantities_is_followed() -> None:
    topics = flashmq.input_topics(PID)
    for quantity in ("Consumption", "Grid", "PvOnOutput", "PvOnGrid"):
        for phase in ("L1", "L2", "L3"):
            item = topics[f"N/{PID}/system/0/Ac/{quantity}/{phase}/Power"]
            assert item.service == paths.SYSTEM
            assert not item.wakes  # they only report: no evaluation per message
    # Each phase item fills exactly one sum, and the store keys are unique.
    phase_items = [item for phase_sum in paths.PHASE_SUMS for item in phase_sum.items]
    assert len(phase_items) == 12
    assert len({item.field for item in paths.INPUTS}) == len(paths.INPUTS)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"value": -1543.7}', ItemUpdate(value=-1543.7)),  # exporting
        (b'{"value": 0}', ItemUpdate(value=0.0)),
        (b'{"value": null}', ItemUpdate(value=None)),  # a phase this system does not have
        (b"", ItemUpdate(value=None, absent=True)),  # system left the bus
    ],
)
def test_grid_phase_payloads(payload: bytes, expected: ItemUpdate) -> None:
    assert flashmq.parse_item_payload(paths.GRID.items[1], payload) == expected


@pytest.mark.parametrize("payload", [b'{"value": "1500"}', b'{"value": NaN}', b"{}"])
def test_garbage_phase_payloads_raise_payload_error(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        flashmq.parse_item_payload(paths.AC_LOAD.items[0], payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"value": 850}', ItemUpdate(value=850.0)),
        (b'{"value": 1.0}', ItemUpdate(value=1.0)),  # Dynamic ESS's idle: max(1.0, DC PV)
        (b'{"value": -1}', ItemUpdate(value=-1.0)),  # no override
        (b'{"value": null}', ItemUpdate(value=None)),  # invalid: no override either
        (b"", ItemUpdate(value=None, absent=True)),  # hub4 left the bus
    ],
)
def test_override_payloads(payload: bytes, expected: ItemUpdate) -> None:
    topic = "N/c0619ab00001/hub4/0/Overrides/MaxDischargePower"
    item = flashmq.input_topics(PID)[topic]
    assert item == paths.OVERRIDE_MAX_DISCHARGE
    assert flashmq.parse_item_payload(item, payload) == expected


@pytest.mark.parametrize("payload", [b'{"value": "850"}', b'{"value": true}', b"{}", b"x"])
def test_override_garbage_is_rejected(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        flashmq.parse_item_payload(paths.OVERRIDE_MAX_DISCHARGE, payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"value": 850}', (True, 850.0)),
        (b'{"value": 0}', (True, 0.0)),
        (b'{"value": -1}', (True, -1.0)),
        (b'{"value": null}', (True, None)),  # null releases, like -1
        (b'{"value": "850"}', (False, None)),  # hub4 takes numbers only
        (b'{"value": true}', (False, None)),
        (b'{"value": [850]}', (False, None)),
    ],
)
def test_fake_hub4_takes_numbers_and_null(payload: bytes, expected: object) -> None:
    assert override_write(written_value(payload)) == expected


@pytest.mark.parametrize("payload", [b"850", b"not json", b'{"val": 850}'])
def test_fake_drops_writes_without_a_value(payload: bytes) -> None:
    assert written_value(payload) is _NO_VALUE


def test_keepalive_payloads_round_trip() -> None:
    full = flashmq.full_keepalive_payload("e1")
    assert json.loads(full) == {"keepalive-options": [{"full-publish-completed-echo": "e1"}]}
    assert flashmq.parse_keepalive_request(full) == (True, "e1")
    suppress = flashmq.suppress_keepalive_payload()
    assert json.loads(suppress) == {"keepalive-options": ["suppress-republish"]}
    assert flashmq.parse_keepalive_request(suppress) == (False, None)
    # The plugin treats an empty or unknown keepalive as a plain full one.
    assert flashmq.parse_keepalive_request(b"") == (True, None)
    assert flashmq.parse_keepalive_request(b"1") == (True, None)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"full-publish-completed-echo": "e1", "value": 1700000000}', (True, "e1")),
        (b'{"value": 1700000000}', (True, None)),
        (b'{"full-publish-completed-echo": 5}', (True, None)),
        (b"garbage", (False, None)),
        (b"[1]", (False, None)),
    ],
)
def test_completion_echo(payload: bytes, expected: object) -> None:
    assert flashmq.parse_completion_echo(payload) == expected


def test_write_payload_sends_integral_values_as_ints() -> None:
    assert flashmq.write_payload(2500.0) == b'{"value": 2500}'
    assert isinstance(json.loads(flashmq.write_payload(2500.0))["value"], int)
    assert json.loads(flashmq.write_payload(-1)) == {"value": -1}
    assert json.loads(flashmq.write_payload(12.5)) == {"value": 12.5}
    with pytest.raises(ValueError, match="cannot write"):
        flashmq.write_payload(math.nan)


@pytest.mark.parametrize(
    ("portal_id", "host"),
    [
        # sum(ord) of "c0619ab00001" is 615; 615 % 128 = 103
        ("c0619ab00001", "mqtt103.victronenergy.com"),
        ("C0619AB00001", "mqtt103.victronenergy.com"),  # lowercased first
        ("a", "mqtt97.victronenergy.com"),
        ("", "mqtt0.victronenergy.com"),
    ],
)
def test_vrm_broker_host(portal_id: str, host: str) -> None:
    assert flashmq.vrm_broker_host(portal_id) == host


def test_vrm_endpoint_derives_host_port_tls_and_token() -> None:
    venus = VenusConfig(
        vrm=True,
        portal_id="c0619ab00001",
        broker=BrokerConfig(username="me@example.com", password="abc"),
    )
    assert resolve_endpoint(venus) == Endpoint(
        host="mqtt103.victronenergy.com",
        port=8883,
        tls=TlsConfig(enabled=True),
        username="me@example.com",
        password="Token abc",
        vrm=True,
    )


def test_vrm_endpoint_keeps_an_explicit_host_and_an_existing_token_prefix() -> None:
    venus = VenusConfig(
        vrm=True,
        portal_id="c0619ab00001",
        broker=BrokerConfig(host="localhost", port=1884, password="Token abc"),
    )
    endpoint = resolve_endpoint(venus)
    assert (endpoint.host, endpoint.port, endpoint.tls.enabled) == ("localhost", 1884, False)
    assert endpoint.password == "Token abc"


def test_vrm_endpoint_needs_portal_id() -> None:
    with pytest.raises(ConfigError, match="portal_id"):
        resolve_endpoint(VenusConfig(vrm=True))


def test_lan_endpoint_gives_a_password_a_user_name() -> None:
    endpoint = resolve_endpoint(VenusConfig(broker=BrokerConfig(host="gx", password="pw")))
    assert (endpoint.host, endpoint.port, endpoint.username) == ("gx", 1883, "venus-prio")
    assert resolve_endpoint(VenusConfig()).username is None
    assert "pw" not in repr(endpoint)


def test_lan_endpoint_checks_the_gx_certificate_for_venus_local() -> None:
    # Whatever address the GX is reached at, its own certificate names venus.local.
    dialled = VenusConfig(broker=BrokerConfig(host="192.168.1.5", tls=TlsConfig(enabled=True)))
    assert resolve_endpoint(dialled).server_name == "venus.local"
    own = TlsConfig(enabled=True, server_name="gx.home.lan")
    assert resolve_endpoint(VenusConfig(broker=BrokerConfig(tls=own))).server_name == "gx.home.lan"


def test_tls_context() -> None:
    assert tls_context(TlsConfig()) is None
    insecure = tls_context(TlsConfig(enabled=True, insecure=True))
    assert insecure is not None
    assert insecure.check_hostname is False
    verifying = tls_context(TlsConfig(enabled=True))
    assert verifying is not None
    assert verifying.check_hostname is True
    assert verifying.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("entry", "payload", "expected"),
    [
        (_Entry(-1.0, -1.0, 1e6), b'{"value": 2500}', 2500.0),
        (_Entry(-1.0, -1.0, 1e6), b'{"value": 2500.5}', 2500.5),
        (_Entry(-1.0, -1.0, 1e6), b'{"value": 2000000}', None),  # above max
        (_Entry(-1.0, -1.0, 1e6), b'{"value": -2}', None),  # below min
        (_Entry(-1.0, -1.0, 1e6), b'{"value": "2500"}', None),
        (_Entry(-1.0, -1.0, 1e6), b'{"value": true}', None),
        (_Entry(-1.0, -1.0, 1e6), b"2500", None),
        (_Entry(-1.0, -1.0, 1e6), b"", None),
        (_Entry(1, 1.0, 3.0), b'{"value": 2.7}', 2),  # int setting: int() like localsettings
    ],
)
def test_fake_localsettings_write_rules(
    entry: _Entry, payload: bytes, expected: Optional[float]
) -> None:
    assert apply_write(entry, payload) == expected


def test_fake_entry_payloads() -> None:
    assert json.loads(entry_payload(_Entry(-1.0, -1.0, 1e6))) == {
        "max": 1e6,
        "min": -1.0,
        "value": -1.0,
    }
    assert json.loads(entry_payload(_Entry(55.0))) == {"value": 55.0}
    assert entry_payload(_Entry(55.0, present=False)) == b""


def test_fake_gx_publishes_plant_values_rounded() -> None:
    # A step of the default plant with 800 W DC PV, its published values then set by hand.
    plant = Plant(PlantParams.from_sim_config(SimConfig(), min_soc=10.0), start_soc=50.0)
    step = plant.step(1.0, pv_dc_w=800.0, load_w=300.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    step = step._replace(soc=14.96, battery_w=-123.4, curtailed_w=150.4)
    step = step._replace(load_w=1234.4, grid_w=-56.6, pv_ac_w=700.4)
    assert plant_values(step) == {
        paths.SOC: 15.0,
        paths.PV_DC: 650.0,  # what the MPPTs deliver, not what the sun offered
        paths.BATTERY_POWER: -123.0,
        # A single-phase system: L1 only; no PV inverter, so no AC PV item changes.
        paths.AC_LOAD.items[0]: 1234.0,
        paths.GRID.items[0]: -57.0,
    }
    with_ac_pv = plant_values(step, ac_pv=True)  # a PV inverter on the output
    assert with_ac_pv[paths.PV_AC.items[0]] == 700.0
    assert set(with_ac_pv) - set(plant_values(step)) == {paths.PV_AC.items[0]}
