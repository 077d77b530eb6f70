"""Envelopes: routing key, exact body, headers, properties of what gets published."""

from __future__ import annotations

import orjson
import pytest

from producer.core.envelope import APP_ID, event_envelope
from producer.core.events import parse_frame
from tests.support import SAMPLE, frame


def envelope(payload: bytes, subscriber: str = "001", is_text: bool = True):  # type: ignore[no-untyped-def]
    return event_envelope(
        "phonet.events",
        subscriber,
        parse_frame(payload, is_text=is_text),
        payload,
        received=12.5,
        wall_ms=1_700_000_000_123,
    )


def test_sample_event_envelope() -> None:
    body = frame()
    env = envelope(body, "ivan.petrov@example.com")
    assert env.exchange == "phonet.events"
    assert env.routing_key == "call.dial.ivan%2Epetrov@example%2Ecom"
    assert env.body is body
    assert env.type == "call.dial"
    assert env.kind == "event"
    assert env.label == "call.dial"
    assert env.timestamp == 1_700_000_000
    assert env.received == 12.5
    assert env.headers == {
        "subscriber": "ivan.petrov@example.com",
        "event": "call.dial",
        "uuid": SAMPLE["uuid"],
        "direction": "incoming",
        "lg_direction": 4,
        "server_time_ms": 1473973201000,
        "dial_at_ms": 1473973200000,
        "received_at_ms": 1_700_000_000_123,
    }
    assert APP_ID == "phonet-producer"


def test_seconds_parent_and_pause_headers() -> None:
    env = envelope(frame(bridgeAt=1473973203, parentUuid="p-1", lgDirection=32))
    assert env.headers["bridge_at_ms"] == 1473973203000
    assert env.headers["parent_uuid"] == "p-1"
    assert env.headers["direction"] == "pause"
    assert env.headers["lg_direction"] == 32
    assert env.routing_key == "call.dial.001"  # pause rides on an ordinary call event


def test_null_fields_leave_headers_out() -> None:
    env = envelope(frame(lgDirection=None, serverTime=None, dialAt=None, uuid=None))
    assert env.headers["direction"] == "unknown"
    for absent in ("lg_direction", "server_time_ms", "dial_at_ms", "uuid", "parent_uuid"):
        assert absent not in env.headers


@pytest.mark.parametrize(
    ("payload", "is_text", "reason"),
    [
        pytest.param(b"[1]", True, "not_object", id="array"),
        pytest.param(b"\x00\xff", False, "binary", id="binary"),
        pytest.param(b"{", True, "bad_json", id="bad-json"),
        pytest.param(orjson.dumps({"event": "*" * 200}), True, "bad_event", id="too-long-for-key"),
    ],
)
def test_invalid_envelope(payload: bytes, is_text: bool, reason: str) -> None:
    env = envelope(payload, "a.b", is_text)
    assert env.routing_key == "invalid.a%2Eb"
    assert env.kind == "invalid"
    assert env.label == "invalid"
    assert env.body is payload
    assert env.headers["invalid_reason"] == reason
    assert env.headers["subscriber"] == "a.b"
    assert env.headers["invalid_detail"]


def test_event_type_property_is_bounded() -> None:
    env = envelope(orjson.dumps({"event": "e" * 200}))
    assert len(env.type) == 128


def test_the_footprint_covers_what_an_envelope_really_holds() -> None:
    """ENVELOPE_OVERHEAD is what the buffers and the standby window count per envelope
    beyond its body: measured with tracemalloc, a real event's envelope (headers, ids,
    the body copied out of the frame) holds no more than its footprint says."""
    import gc
    import tracemalloc

    from producer.core.envelope import footprint

    frames = [orjson.dumps({**SAMPLE, "uuid": f"{n:08x}-1453990999.41"}) for n in range(1000)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    # As a socket's frame becomes an envelope: parsed, then the parse thrown away.
    kept = [
        event_envelope("x", "001", parse_frame(f), bytes(f), received=float(n), wall_ms=n)
        for n, f in enumerate(frames)
    ]
    gc.collect()
    held = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    tracemalloc.stop()
    counted = sum(footprint(e) for e in kept) / len(kept)
    assert held <= counted, (held, counted)
    assert counted <= 2.5 * held  # and not so far above that the bounds mean nothing
