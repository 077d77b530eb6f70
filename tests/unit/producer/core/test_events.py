"""The event model: parsing every kind of frame, timestamps, directions, message ids."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.core.events import (
    CallEvent,
    Direction,
    InvalidFrame,
    InvalidReason,
    direction_of,
    message_id,
    metric_event,
    parse_frame,
    to_millis,
)
from tests.support import SAMPLE, frame


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        pytest.param(1473973201000, 1473973201000, id="int-ms"),
        pytest.param("1473973201000", 1473973201000, id="string-ms-vendor-sample"),
        pytest.param(" 1473973201000 ", 1473973201000, id="string-padded"),
        pytest.param(1473973201, 1473973201000, id="int-seconds"),
        pytest.param("1473973201", 1473973201000, id="string-seconds"),
        pytest.param(1473973201.5, 1473973201500, id="float-seconds"),
        pytest.param(1473973201000.0, 1473973201000, id="float-ms"),
        pytest.param(10**12, 10**12, id="boundary-is-ms"),
        pytest.param(10**12 - 1, (10**12 - 1) * 1000, id="just-below-is-seconds"),
        pytest.param(0, 0, id="zero"),
        pytest.param(None, None, id="null"),
        pytest.param(True, None, id="bool"),
        pytest.param(-5, None, id="negative"),
        pytest.param("-5", None, id="negative-string"),
        pytest.param("12a", None, id="junk-string"),
        pytest.param("", None, id="empty-string"),
        pytest.param("1e12", None, id="exponent-string"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param(float("inf"), None, id="inf"),
        pytest.param(2**60, None, id="absurd"),
        pytest.param("9" * 17, None, id="too-many-digits"),
        pytest.param([1], None, id="list"),
        pytest.param({"ms": 1}, None, id="object"),
    ],
)
def test_to_millis(value: object, millis: int | None) -> None:
    assert to_millis(value) == millis


@pytest.mark.parametrize(
    ("lg", "expected"),
    [
        pytest.param(1, (1, Direction.INTERNAL), id="internal"),
        pytest.param(2, (2, Direction.OUTGOING), id="outgoing"),
        pytest.param(4, (4, Direction.INCOMING), id="incoming"),
        pytest.param(32, (32, Direction.PAUSE), id="pause"),
        pytest.param(64, (64, Direction.UNPAUSE), id="unpause"),
        pytest.param("4", (4, Direction.INCOMING), id="numeric-string"),
        pytest.param(8, (8, Direction.UNKNOWN), id="undocumented-number"),
        pytest.param(None, (None, Direction.UNKNOWN), id="null"),
        pytest.param(True, (None, Direction.UNKNOWN), id="bool"),
        pytest.param(4.0, (None, Direction.UNKNOWN), id="float"),
        pytest.param("in", (None, Direction.UNKNOWN), id="word"),
        pytest.param("9" * 20, (None, Direction.UNKNOWN), id="huge-string"),
    ],
)
def test_direction_of(lg: object, expected: tuple[int | None, Direction]) -> None:
    assert direction_of(lg) == expected


def test_vendor_sample_parses_with_normalised_times() -> None:
    parsed = parse_frame(frame())
    assert isinstance(parsed, CallEvent)
    assert parsed.event == "call.dial"
    assert parsed.uuid == "23-1453990999.41"
    assert parsed.parent_uuid is None
    assert parsed.direction is Direction.INCOMING
    assert parsed.lg_direction == 4
    assert parsed.server_time_ms == 1473973201000
    assert parsed.dial_at_ms == 1473973200000
    assert parsed.bridge_at_ms is None
    assert parsed.fields["otherLegs"][0]["name"] == "Тест"


@pytest.mark.parametrize(
    ("payload", "check"),
    [
        pytest.param(
            frame(serverTime=1473973201000),
            {"server_time_ms": 1473973201000},
            id="serverTime-number",
        ),
        pytest.param(
            frame(dialAt=1473973200, bridgeAt=1473973203),
            {"dial_at_ms": 1473973200000, "bridge_at_ms": 1473973203000},
            id="seconds-quirk",
        ),
        pytest.param(frame(lgDirection=32), {"direction": Direction.PAUSE}, id="pause"),
        pytest.param(frame(lgDirection=64), {"direction": Direction.UNPAUSE}, id="unpause"),
        pytest.param(frame(uuid=12345), {"uuid": "12345"}, id="numeric-uuid-spelled"),
        pytest.param(frame(uuid=None), {"uuid": None}, id="null-uuid"),
        pytest.param(frame(uuid=...), {"uuid": None}, id="missing-uuid"),
        pytest.param(frame(parentUuid="22-1.1"), {"parent_uuid": "22-1.1"}, id="group-child"),
        pytest.param(frame(serverTime=...), {"server_time_ms": None}, id="missing-serverTime"),
        pytest.param(frame(serverTime="soon"), {"server_time_ms": None}, id="junk-serverTime"),
        pytest.param(
            frame(event="call.transfer"), {"event": "call.transfer"}, id="unknown-event-kept"
        ),
        pytest.param(frame(leg={"id": "120"}), {"event": "call.dial"}, id="leg-id-string"),
        pytest.param(
            frame(otherLegs=[{"id": None, "name": None}]),
            {"event": "call.dial"},
            id="unknown-client-nulls",
        ),
        pytest.param(
            b'{"event":"error","message":"boom"}',
            {"event": "error", "uuid": None},
            id="minimal-error",
        ),
        pytest.param(
            b'{"event":"call.dial","event":"call.bridge"}',
            {"event": "call.bridge"},
            id="duplicate-key-last-wins",
        ),
        pytest.param(b'\xef\xbb\xbf{"event":"x"}', None, id="bom-is-bad-json"),
    ],
)
def test_quirks(payload: bytes, check: dict[str, object] | None) -> None:
    parsed = parse_frame(payload)
    if check is None:
        assert isinstance(parsed, InvalidFrame)
        return
    assert isinstance(parsed, CallEvent)
    for attr, value in check.items():
        assert getattr(parsed, attr) == value


def test_unknown_fields_are_kept() -> None:
    parsed = parse_frame(frame(crmTag={"a": 1}, extra=[1, 2]))
    assert isinstance(parsed, CallEvent)
    assert parsed.fields["crmTag"] == {"a": 1}
    assert parsed.fields["extra"] == [1, 2]


@pytest.mark.parametrize(
    ("payload", "is_text", "reason"),
    [
        pytest.param(frame(), False, InvalidReason.BINARY, id="binary-even-if-json"),
        pytest.param(b"\x00\x01\x02", False, InvalidReason.BINARY, id="binary-junk"),
        pytest.param(b"not json", True, InvalidReason.BAD_JSON, id="bad-json"),
        pytest.param(b"", True, InvalidReason.BAD_JSON, id="empty"),
        pytest.param(
            b'{"event": "call.dial",}', True, InvalidReason.BAD_JSON, id="vendor-trailing-comma"
        ),
        pytest.param(b'{"event":"x"', True, InvalidReason.BAD_JSON, id="truncated"),
        pytest.param(b"\xff\xfe{}", True, InvalidReason.BAD_UTF8, id="invalid-utf8"),
        pytest.param(b'{"event":"\xc3"}', True, InvalidReason.BAD_UTF8, id="cut-utf8-in-string"),
        pytest.param(b"[]", True, InvalidReason.NOT_OBJECT, id="array"),
        pytest.param(b'"call.dial"', True, InvalidReason.NOT_OBJECT, id="string"),
        pytest.param(b"42", True, InvalidReason.NOT_OBJECT, id="number"),
        pytest.param(b"null", True, InvalidReason.NOT_OBJECT, id="null"),
        pytest.param(b"{}", True, InvalidReason.MISSING_EVENT, id="empty-object"),
        pytest.param(b'{"uuid":"1"}', True, InvalidReason.MISSING_EVENT, id="no-event"),
        pytest.param(b'{"event":null}', True, InvalidReason.EVENT_NOT_STRING, id="event-null"),
        pytest.param(b'{"event":7}', True, InvalidReason.EVENT_NOT_STRING, id="event-number"),
        pytest.param(b'{"event":["a"]}', True, InvalidReason.EVENT_NOT_STRING, id="event-list"),
        pytest.param(b'{"event":""}', True, InvalidReason.BAD_EVENT, id="event-empty"),
        pytest.param(b"[" * 2000 + b"]" * 2000, True, InvalidReason.BAD_JSON, id="deep-nesting"),
        pytest.param(
            b'{"a":' * 600 + b"1" + b"}" * 600,
            True,
            InvalidReason.MISSING_EVENT,
            id="nesting-within-limit",
        ),
        pytest.param(b'{"event":"x","n":1e999}', True, InvalidReason.BAD_JSON, id="huge-number"),
        pytest.param(b'{"event":"\\ud800"}', True, InvalidReason.BAD_JSON, id="lone-surrogate"),
    ],
)
def test_invalid_frames(payload: bytes, is_text: bool, reason: InvalidReason) -> None:
    parsed = parse_frame(payload, is_text=is_text)
    assert isinstance(parsed, InvalidFrame)
    assert parsed.reason is reason
    assert 0 < len(parsed.detail) <= 120


def test_str_payload_is_accepted_too() -> None:
    assert isinstance(parse_frame(frame().decode()), CallEvent)


class TestMessageId:
    def test_duplicate_delivery_same_id(self) -> None:
        body = frame()
        assert message_id("001", parse_frame(body), body) == message_id(
            "001", parse_frame(body), body
        )

    def test_redelivery_with_later_server_time_same_id(self) -> None:
        a, b = frame(serverTime="1473973201000"), frame(serverTime=1473973209999)
        assert message_id("001", parse_frame(a), a) == message_id("001", parse_frame(b), b)

    def test_seconds_and_millis_copies_same_id(self) -> None:
        a, b = frame(dialAt=1473973200000), frame(dialAt=1473973200)
        assert message_id("001", parse_frame(a), a) == message_id("001", parse_frame(b), b)

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"event": "call.bridge"}, id="other-event"),
            pytest.param({"uuid": "other"}, id="other-call"),
            pytest.param({"lgDirection": 32}, id="other-direction"),
            pytest.param({"bridgeAt": 1473973205000}, id="answered-later"),
        ],
    )
    def test_different_events_differ(self, change: dict[str, object]) -> None:
        a, b = frame(), frame(**change)
        assert message_id("001", parse_frame(a), a) != message_id("001", parse_frame(b), b)

    def test_subscriber_is_part_of_identity(self) -> None:
        body = frame()
        assert message_id("001", parse_frame(body), body) != message_id(
            "002", parse_frame(body), body
        )

    def test_without_uuid_hashes_body(self) -> None:
        a, b = frame(uuid=...), frame(uuid=..., serverTime=1)
        assert message_id("001", parse_frame(a), a) == message_id("001", parse_frame(a), a)
        assert message_id("001", parse_frame(a), a) != message_id("001", parse_frame(b), b)

    def test_invalid_frames_hash_body(self) -> None:
        assert message_id("001", parse_frame(b"x"), b"x") == message_id(
            "001", parse_frame(b"x"), b"x"
        )
        assert message_id("001", parse_frame(b"x"), b"x") != message_id(
            "001", parse_frame(b"y"), b"y"
        )

    def test_shape(self) -> None:
        body = frame()
        mid = message_id("001", parse_frame(body), body)
        assert len(mid) == 32
        int(mid, 16)


@pytest.mark.parametrize(
    ("event", "label"),
    [
        ("call.dial", "call.dial"),
        ("call.bridge", "call.bridge"),
        ("call.hangup", "call.hangup"),
        ("error", "error"),
        ("success", "other"),
        ("call.*", "other"),
        ("x" * 1000, "other"),
    ],
)
def test_metric_label_is_bounded(event: str, label: str) -> None:
    assert metric_event(event) == label


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_parse_never_raises_on_bytes(payload: bytes, is_text: bool) -> None:
    assert isinstance(parse_frame(payload, is_text=is_text), CallEvent | InvalidFrame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from([*list(SAMPLE), "x"]), json_values, max_size=12))
def test_parse_never_raises_on_any_object(data: dict[str, object]) -> None:
    try:
        payload = orjson.dumps(data)
    except (TypeError, orjson.JSONEncodeError):
        return
    parsed = parse_frame(payload)
    if isinstance(data.get("event"), str) and data["event"]:
        assert isinstance(parsed, CallEvent)
        message_id("001", parsed, payload)
    else:
        assert isinstance(parsed, InvalidFrame)
