"""Envelopes: what one publish to RabbitMQ carries (exchange, key, body, properties).

Pure: the caller passes the receive time. The body is always the frame's bytes exactly as
received; everything the producer adds goes in AMQP headers, so consumers can filter
without parsing JSON and the Phonet payload stays byte-for-byte intact.

Headers of an event (absent when the frame does not carry the value):

============== ==================================================================
subscriber      the configured subscriber, raw (``ivan.petrov@example.com``)
event           the ``event`` field, raw
uuid            call id (a number is spelled out as a string)
parent_uuid     the group call this call was handed from
direction       internal, outgoing, incoming, pause, unpause or unknown
lg_direction    the raw ``lgDirection`` integer
server_time_ms  ``serverTime`` as integer milliseconds
dial_at_ms      ``dialAt`` as integer milliseconds (seconds are converted)
bridge_at_ms    ``bridgeAt`` as integer milliseconds
received_at_ms  when the producer read the frame (wall clock)
invalid_reason  only on ``invalid.*``: why the frame is not an event
invalid_detail  only on ``invalid.*``: a short human description
============== ==================================================================

Header values are checked when the envelope is built, so that nothing a frame says can
make a message the broker or a consumer's client cannot take: a string must be valid
UTF-8 of at most :data:`MAX_HEADER_BYTES`, an integer must fit 64 bits. A frame whose
header-bound field does not fit is published under ``invalid.`` with ``bad_header``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from producer.core import routing
from producer.core.events import CallEvent, InvalidFrame, InvalidReason, message_id, metric_event

APP_ID = "phonet-producer"
CONTENT_TYPE = "application/json"
MAX_HEADER_BYTES = 1024
"""Largest header string. Real values are tens of bytes; all headers of a message travel in
one AMQP frame (at least 4 KiB, RabbitMQ's default 128 KiB), so they must stay small."""
ENVELOPE_OVERHEAD = 1024
"""Bytes of memory an envelope takes beyond its body and header strings (objects, dict,
ids), measured with tracemalloc (``tests/unit/producer/core/test_envelope.py``)."""
_INT64 = range(-(2**63), 2**63)
_FRAME_FIELD = {"lg_direction": "lgDirection", "parent_uuid": "parentUuid"}


@dataclass(slots=True)
class Envelope:
    """One message to publish. ``received`` is a monotonic time for latency metrics.

    ``label`` is the bounded ``event`` metric label; ``kind`` tells events, invalid frames,
    click2call outcomes, gaps and REST records (``history``, ``active``) apart.
    ``correlation_id`` is set by nothing now (click2call replies, which carried one, are
    published over the command connection); it stays for the spool's format and the wire.
    """

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any]
    type: str
    timestamp: int
    label: str
    kind: str
    received: float
    correlation_id: str | None = None
    seq: int = field(default=0)
    size: int = field(default=0)


def footprint(envelope: Envelope) -> int:
    """Approximate bytes of memory ``envelope`` holds (computed once, then cached)."""
    if not envelope.size:
        text = sum(len(v) for v in envelope.headers.values() if isinstance(v, str))
        envelope.size = ENVELOPE_OVERHEAD + len(envelope.body) + text
    return envelope.size


def header_problem(headers: dict[str, Any]) -> str | None:
    """Why ``headers`` cannot travel as AMQP headers every client can read, or None."""
    for name, value in headers.items():
        field_name = _FRAME_FIELD.get(name, name)
        if isinstance(value, str):
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                return f"'{field_name}' is not valid Unicode"
            if size > MAX_HEADER_BYTES:
                return f"'{field_name}' is longer than {MAX_HEADER_BYTES} bytes"
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            return f"'{field_name}' does not fit a 64-bit integer"
    return None


def event_envelope(
    exchange: str,
    subscriber: str,
    parsed: CallEvent | InvalidFrame,
    body: bytes,
    *,
    received: float,
    wall_ms: int,
) -> Envelope:
    """The envelope for one frame: ``<event>.<token>``, or ``invalid.<token>`` with a reason.

    An event whose name does not fit a 255-byte routing key is published as invalid
    (``bad_event``), so nothing is lost and nothing raises.
    """
    mid = message_id(subscriber, parsed, body)
    if isinstance(parsed, CallEvent):
        key = routing.routing_key(parsed.event, subscriber)
        if key is not None:
            headers: dict[str, Any] = {
                "subscriber": subscriber,
                "event": parsed.event,
                "direction": parsed.direction.value,
                "received_at_ms": wall_ms,
            }
            if parsed.uuid is not None:
                headers["uuid"] = parsed.uuid
            if parsed.parent_uuid is not None:
                headers["parent_uuid"] = parsed.parent_uuid
            if parsed.lg_direction is not None:
                headers["lg_direction"] = parsed.lg_direction
            if parsed.server_time_ms is not None:
                headers["server_time_ms"] = parsed.server_time_ms
            if parsed.dial_at_ms is not None:
                headers["dial_at_ms"] = parsed.dial_at_ms
            if parsed.bridge_at_ms is not None:
                headers["bridge_at_ms"] = parsed.bridge_at_ms
            problem = header_problem(headers)
            if problem is not None:
                return invalid_envelope(
                    exchange,
                    subscriber,
                    InvalidReason.BAD_HEADER,
                    problem,
                    body,
                    mid,
                    received=received,
                    wall_ms=wall_ms,
                )
            return Envelope(
                exchange=exchange,
                routing_key=key,
                body=body,
                message_id=mid,
                headers=headers,
                type=parsed.event[:128],
                timestamp=wall_ms // 1000,
                label=metric_event(parsed.event),
                kind="event",
                received=received,
            )
        parsed = InvalidFrame(InvalidReason.BAD_EVENT, "'event' too long for a routing key")
    return invalid_envelope(
        exchange,
        subscriber,
        parsed.reason,
        parsed.detail,
        body,
        mid,
        received=received,
        wall_ms=wall_ms,
    )


def invalid_envelope(
    exchange: str,
    subscriber: str,
    reason: InvalidReason,
    detail: str,
    body: bytes,
    message_id: str,
    *,
    received: float,
    wall_ms: int,
) -> Envelope:
    """``invalid.<token>``: the body unchanged, why it is not an event in the headers."""
    return Envelope(
        exchange=exchange,
        routing_key=routing.invalid_key(subscriber),
        body=body,
        message_id=message_id,
        headers={
            "subscriber": subscriber,
            "invalid_reason": reason.value,
            "invalid_detail": detail[:200],
            "received_at_ms": wall_ms,
        },
        type="invalid",
        timestamp=wall_ms // 1000,
        label="invalid",
        kind="invalid",
        received=received,
    )


def invalid_copy(envelope: Envelope, reason: InvalidReason, detail: str) -> Envelope | None:
    """An event the encoder or the broker would not take, as ``invalid.<token>`` (same body,
    id and receive time, small headers). None for anything but an event: an invalid frame,
    an outcome, a gap or a REST record that is poison has no smaller form."""
    subscriber = envelope.headers.get("subscriber")
    if envelope.kind != "event" or not isinstance(subscriber, str):
        return None
    return invalid_envelope(
        envelope.exchange,
        subscriber,
        reason,
        detail,
        envelope.body,
        envelope.message_id,
        received=envelope.received,
        wall_ms=int(envelope.headers.get("received_at_ms", envelope.timestamp * 1000)),
    )


def outcome_envelope(
    exchange: str,
    subscriber: str | None,
    outcome: str,
    body: bytes,
    headers: dict[str, Any],
    *,
    message_id: str,
    received: float,
    wall_ms: int,
) -> Envelope:
    """A click2call outcome on the events exchange: ``click2call.<outcome>.<token>``.

    ``subscriber`` is None (or does not fit a routing key) when the command did not name a
    usable one: the token is then ``unknown``.
    """
    key = routing.click2call_key(outcome, subscriber) if subscriber else None
    if key is None or len(key) > routing.MAX_ROUTING_KEY_BYTES:
        key = f"{routing.CLICK2CALL_PREFIX}.{outcome}.unknown"
    return Envelope(
        exchange=exchange,
        routing_key=key,
        body=body,
        message_id=message_id,
        headers=headers,
        type=f"click2call.{outcome}",
        timestamp=wall_ms // 1000,
        label="click2call",
        kind="outcome",
        received=received,
    )


def rest_envelope(
    exchange: str,
    routing_key: str,
    kind: str,
    body: bytes,
    headers: dict[str, Any],
    *,
    message_id: str,
    received: float,
    wall_ms: int,
) -> Envelope:
    """A message the producer makes itself on the events exchange: ``gap``, ``history``
    (a missed call read from the REST API) or ``active`` (a call in progress)."""
    return Envelope(
        exchange=exchange,
        routing_key=routing_key,
        body=body,
        message_id=message_id,
        headers=headers,
        type=routing_key.rsplit(".", 1)[0],
        timestamp=wall_ms // 1000,
        label=kind,
        kind=kind,
        received=received,
    )
