"""Typed messages from body plus headers (:func:`phonet_client.parse`, in
:mod:`phonet_client.messages`), read from the producer's own envelopes."""

from __future__ import annotations

import orjson
import pytest

from phonet_client import (
    BackfilledCall,
    CallEvent,
    Click2CallOutcome,
    Gap,
    InvalidFrame,
    Unknown,
    parse,
)
from producer.core.envelope import event_envelope, invalid_envelope
from producer.core.events import InvalidReason, parse_frame
from tests.support import SAMPLE


def test_parse_an_event_from_the_producer_envelope() -> None:
    body = orjson.dumps({**SAMPLE, "parentUuid": "p-1"})
    envelope = event_envelope(
        "x", "ivan.petrov@example.com", parse_frame(body), body, received=0.0, wall_ms=1
    )
    message = parse(envelope.routing_key, envelope.body, envelope.headers, envelope.message_id)
    assert isinstance(message, CallEvent)
    assert (message.event, message.subscriber) == ("call.dial", "ivan.petrov@example.com")
    assert message.call_id == "p-1"
    assert message.direction == envelope.headers["direction"]
    assert message.dial_at_ms == envelope.headers["dial_at_ms"]
    assert message.client_numbers == ["+380567777777"]
    assert message.message_id == envelope.message_id


@pytest.mark.parametrize(
    ("key", "body", "headers", "expected"),
    [
        pytest.param(
            "gap.001",
            b'{"subscriber":"001","from_ms":1,"to_ms":2,"reason":"closed 1006, link lost"}',
            {"subscriber": "001", "reason": "closed 1006, link lost"},
            Gap("001", 1, 2, "closed 1006, link lost"),
            id="gap",
        ),
        pytest.param(
            "history.call.001",
            b'{"uuid":"u1","leg":{"ext":"001"}}',
            {"subscriber": "001", "uuid": "u1", "source": "rest"},
            BackfilledCall("history", "001", "u1", {"uuid": "u1", "leg": {"ext": "001"}}),
            id="history",
        ),
        pytest.param(
            "active.call.a%2Eb",
            b'{"uuid":"u2"}',
            {},
            BackfilledCall("active", "a.b", "u2", {"uuid": "u2"}),
            id="active-subscriber-from-the-key",
        ),
        pytest.param(
            "click2call.error.001",
            b'{"event":"error","message":"forbidden","subscriber":"001","to":"380","id":7}',
            {"result": "forbidden", "subscriber": "001", "command_id": "c1"},
            Click2CallOutcome("forbidden", False, "forbidden", "001", "380", 7, "c1", None),
            id="outcome",
        ),
        pytest.param("weird", b"x", {}, Unknown("weird", b"x", {}), id="one-word-key"),
        pytest.param(
            "call.dial.001", b"[1]", {}, Unknown("call.dial.001", b"[1]", {}), id="not-an-object"
        ),
        pytest.param(
            "call.dial.001",
            b'{"event":"call.dial","extra":{"new":true}}',
            {"dial_at_ms": "soon", "direction": 5},
            CallEvent(
                "call.dial",
                "001",
                None,
                None,
                "unknown",
                None,
                None,
                None,
                None,
                None,
                {"event": "call.dial", "extra": {"new": True}},
            ),
            id="tolerant-of-odd-headers",
        ),
    ],
)
def test_parse(key: str, body: bytes, headers: dict[str, object], expected: object) -> None:
    assert parse(key, body, headers) == expected


def test_parse_an_invalid_frame_keeps_its_bytes() -> None:
    raw = b"\xff not json"
    envelope = invalid_envelope(
        "x", "001", InvalidReason.BAD_JSON, "not json", raw, "m1", received=0.0, wall_ms=1
    )
    message = parse(envelope.routing_key, envelope.body, envelope.headers, "m1")
    assert message == InvalidFrame("001", "bad_json", "not json", raw, "m1")
