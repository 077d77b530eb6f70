"""The consumer toolkit's pure parts (phonet_client): keys both ways with the producer's
own cases, typed messages from body plus headers, bounded de-duplication, and an import
that loads none of the service."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonet_client import (
    BackfilledCall,
    CallEvent,
    Click2CallOutcome,
    Gap,
    InvalidFrame,
    Seen,
    Unknown,
    binding_key,
    parse,
    parse_routing_key,
)
from phonet_client import keys as client_keys
from producer.core import routing
from producer.core.envelope import event_envelope, invalid_envelope
from producer.core.events import InvalidReason, parse_frame
from tests.unit.test_events import SAMPLE


@pytest.mark.parametrize(
    ("event", "subscriber", "key"),
    [
        pytest.param("#", None, "#", id="everything"),
        pytest.param("#", "001", "#.001", id="everything-of-one"),
        pytest.param("call.*", None, "call.*.*", id="any-call-event"),
        pytest.param("call.hangup", None, "call.hangup.*", id="hangups"),
        pytest.param(
            "call.*", "ivan.petrov@example.com", "call.*.ivan%2Epetrov@example%2Ecom", id="email"
        ),
        pytest.param("*", "*", "*.%2A", id="a-subscriber-named-star-is-not-a-wildcard"),
        pytest.param("history.call", "Олег", "history.call.%D0%9E%D0%BB%D0%B5%D0%B3", id="utf8"),
        pytest.param("click2call.#", None, "click2call.#.*", id="outcomes"),
        pytest.param("call dial", "001", "call%20dial.001", id="escaped-word"),
    ],
)
def test_binding_key(event: str, subscriber: str | None, key: str) -> None:
    assert binding_key(event, subscriber) == key


@pytest.mark.parametrize(
    "event", [pytest.param("", id="empty"), pytest.param("call..dial", id="empty-word")]
)
def test_binding_key_refuses(event: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        binding_key(event)


TEXT = st.text(min_size=1, max_size=30)


@given(event=TEXT, subscriber=TEXT)
def test_keys_read_back_what_the_producer_routes(event: str, subscriber: str) -> None:
    """Whatever the event and subscriber, the producer's key parses back to them, and the
    binding key for that subscriber matches it (the same escape on both sides)."""
    key = routing.routing_key(event, subscriber)
    if key is None:
        return  # too long for AMQP: the producer publishes it as invalid instead
    assert client_keys.routing_key(event, subscriber) == key
    assert parse_routing_key(key) == (event, subscriber)
    assert key.endswith("." + binding_key(subscriber=subscriber)[2:])


def test_a_key_of_one_word_is_not_ours() -> None:
    with pytest.raises(ValueError, match="not a routing key"):
        parse_routing_key("gap")


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


def test_seen_is_bounded_by_count_and_age() -> None:
    now = [0.0]
    seen = Seen(max_ids=3, max_age=10.0, clock=lambda: now[0])
    assert [seen.first(m) for m in ("a", "b", "a", None, None)] == [True, True, False, True, True]
    assert seen.repeats == 1
    for m in ("c", "d"):
        seen.first(m)
    assert "a" not in seen  # the oldest went past max_ids
    assert seen.first("a")
    now[0] = 11.0
    assert seen.first("d")  # forgotten after max_age
    assert len(seen) == 1


def test_importing_the_toolkit_loads_none_of_the_service() -> None:
    code = (
        "import sys, phonet_client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'producer', 'websockets', 'pydantic', 'pydantic_settings', 'prometheus_client'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_edges_of_keys_and_parse() -> None:
    from phonet_client.keys import escape_word, unescape_word

    assert unescape_word(escape_word("a\ud800b")) == "a\ud800b"  # a lone surrogate, kept
    with pytest.raises(ValueError, match="subscriber must not be empty"):
        binding_key("call.dial", subscriber="")
    deep = b'{"event":"call.dial","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert isinstance(parse("call.dial.001", deep, {}), Unknown)  # never raises
