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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from producer import routing
from producer.events import CallEvent, InvalidFrame, InvalidReason, message_id, metric_event

APP_ID = "phonet-producer"
CONTENT_TYPE = "application/json"


@dataclass(slots=True)
class Envelope:
    """One message to publish. ``received`` is a monotonic time for latency metrics.

    ``label`` is the bounded ``event`` metric label; ``kind`` tells events, invalid frames,
    click2call outcomes and RPC replies apart (a reply goes to the default exchange).
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
    return Envelope(
        exchange=exchange,
        routing_key=routing.invalid_key(subscriber),
        body=body,
        message_id=mid,
        headers={
            "subscriber": subscriber,
            "invalid_reason": parsed.reason.value,
            "invalid_detail": parsed.detail,
            "received_at_ms": wall_ms,
        },
        type="invalid",
        timestamp=wall_ms // 1000,
        label="invalid",
        kind="invalid",
        received=received,
    )


def reply_envelope(
    reply_to: str,
    correlation_id: str | None,
    body: bytes,
    headers: dict[str, Any],
    *,
    message_id: str,
    received: float,
    wall_ms: int,
) -> Envelope:
    """An RPC reply: default exchange, routing key ``reply_to``, the caller's correlation id."""
    return Envelope(
        exchange="",
        routing_key=reply_to,
        body=body,
        message_id=message_id,
        headers=headers,
        type="click2call.reply",
        timestamp=wall_ms // 1000,
        label="reply",
        kind="reply",
        received=received,
        correlation_id=correlation_id,
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
