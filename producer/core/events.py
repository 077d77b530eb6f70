"""The Phonet call event model: one WebSocket frame in, a :class:`CallEvent` or an
:class:`InvalidFrame` out. Pure: no I/O, no clock, never raises on any input.

What Phonet sends is described in ``phonet-wss-api.md``; the quirks handled here:

* ``serverTime`` arrives as a number or as a string of digits;
* ``dialAt``/``bridgeAt`` (documented in milliseconds) have been seen in seconds:
  a value below 10^12 is read as seconds;
* pause/unpause ride on ordinary ``call.*`` events with ``lgDirection`` 32/64;
* the same event can arrive twice, so :func:`message_id` ignores ``serverTime`` (the
  send time, which differs between copies) and hashes what identifies the event;
* fields may be missing, have another type than documented, or be unknown; nothing but a
  usable ``event`` is required, and the original body is always kept by the caller.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

KNOWN_EVENTS = frozenset({"call.dial", "call.bridge", "call.hangup", "error"})
"""Event names Phonet documents; anything else is still published, under its own key."""

SECONDS_BELOW = 10**12
"""A timestamp below this is in seconds (10^12 ms is September 2001)."""

_MAX_TIMESTAMP_MS = 2**53
_DIGITS = re.compile(r"\d{1,16}")


class Direction(StrEnum):
    """``lgDirection`` in words (the ``direction`` header)."""

    INTERNAL = "internal"
    OUTGOING = "outgoing"
    INCOMING = "incoming"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    UNKNOWN = "unknown"


LG_DIRECTIONS: dict[int, Direction] = {
    1: Direction.INTERNAL,
    2: Direction.OUTGOING,
    4: Direction.INCOMING,
    32: Direction.PAUSE,
    64: Direction.UNPAUSE,
}


class InvalidReason(StrEnum):
    """Why a frame is not a usable event (the ``invalid_reason`` header and metric label).

    ``bad_header``: a field that becomes a header does not fit one (a string over
    :data:`producer.core.envelope.MAX_HEADER_BYTES`, an integer beyond 64 bits);
    ``unencodable`` and ``refused``: the AMQP encoder, or the broker, would not take the
    event as it was (a safety net behind ``bad_header``: see :mod:`producer.publish`).
    """

    BINARY = "binary"
    BAD_UTF8 = "bad_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    MISSING_EVENT = "missing_event"
    EVENT_NOT_STRING = "event_not_string"
    BAD_EVENT = "bad_event"
    BAD_HEADER = "bad_header"
    TOO_LARGE = "too_large"
    UNENCODABLE = "unencodable"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A parsed frame with a string ``event``. ``fields`` is the whole decoded object."""

    event: str
    fields: dict[str, Any]
    uuid: str | None
    parent_uuid: str | None
    lg_direction: int | None
    direction: Direction
    server_time_ms: int | None
    dial_at_ms: int | None
    bridge_at_ms: int | None


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A frame that is not a JSON object with a string ``event``; ``detail`` is short."""

    reason: InvalidReason
    detail: str


def to_millis(value: object) -> int | None:
    """Normalise a Phonet timestamp to integer milliseconds since the epoch.

    Accepts an int, a finite float or a string of digits; values below 10^12 are seconds.
    Anything else (``None``, negative, bool, junk, absurdly large) gives ``None``.
    """
    number: float
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not _DIGITS.fullmatch(text):
            return None
        number = int(text)
    else:
        return None
    if number < 0:
        return None
    millis = round(number * 1000) if number < SECONDS_BELOW else round(number)
    return millis if millis < _MAX_TIMESTAMP_MS else None


def _text(value: object) -> str | None:
    """A header-friendly string: strings as they are, integers spelled out, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def direction_of(lg_direction: object) -> tuple[int | None, Direction]:
    """``(lgDirection as int or None, Direction)``; a numeric string is accepted too."""
    if isinstance(lg_direction, bool):
        return None, Direction.UNKNOWN
    if isinstance(lg_direction, str) and lg_direction.isdigit() and len(lg_direction) < 10:
        lg_direction = int(lg_direction)
    if isinstance(lg_direction, int):
        return lg_direction, LG_DIRECTIONS.get(lg_direction, Direction.UNKNOWN)
    return None, Direction.UNKNOWN


def _json_error_detail(exc: Exception) -> str:
    return str(exc)[:120]


def parse_frame(payload: bytes | str, *, is_text: bool = True) -> CallEvent | InvalidFrame:
    """Decode one frame. Never raises; a frame that is not an event comes back invalid.

    ``is_text`` is the WebSocket opcode: Phonet sends text frames only, so a binary frame
    is invalid whatever it holds.
    """
    if not is_text:
        return InvalidFrame(InvalidReason.BINARY, "binary frame")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if isinstance(payload, bytes):
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as uexc:
                return InvalidFrame(InvalidReason.BAD_UTF8, f"invalid UTF-8 at byte {uexc.start}")
        return InvalidFrame(InvalidReason.BAD_JSON, _json_error_detail(exc))
    if not isinstance(data, dict):
        return InvalidFrame(InvalidReason.NOT_OBJECT, f"JSON {type(data).__name__}, not an object")
    if "event" not in data:
        return InvalidFrame(InvalidReason.MISSING_EVENT, "no 'event' field")
    event = data["event"]
    if not isinstance(event, str):
        return InvalidFrame(
            InvalidReason.EVENT_NOT_STRING, f"'event' is {type(event).__name__}, not a string"
        )
    if not event:
        return InvalidFrame(InvalidReason.BAD_EVENT, "'event' is empty")
    lg_direction, direction = direction_of(data.get("lgDirection"))
    return CallEvent(
        event=event,
        fields=data,
        uuid=_text(data.get("uuid")),
        parent_uuid=_text(data.get("parentUuid")),
        lg_direction=lg_direction,
        direction=direction,
        server_time_ms=to_millis(data.get("serverTime")),
        dial_at_ms=to_millis(data.get("dialAt")),
        bridge_at_ms=to_millis(data.get("bridgeAt")),
    )


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def stable_id(*parts: str) -> str:
    """A message id made of ``parts`` (the same parts, the same id: consumers can de-duplicate)."""
    return _digest(*parts)


def message_id(subscriber: str, parsed: CallEvent | InvalidFrame, body: bytes) -> str:
    """A stable id: equal for two deliveries of the same event to the same subscriber.

    For an event with a ``uuid`` it hashes subscriber, event, uuid, lgDirection and the
    normalised ``dialAt``/``bridgeAt`` (so a redelivery with a later ``serverTime``, or
    with seconds instead of milliseconds, keeps its id). Without a ``uuid``, and for
    invalid frames, it hashes the subscriber and the exact body.
    """
    if isinstance(parsed, CallEvent) and parsed.uuid is not None:
        return _digest(
            "e1",
            subscriber,
            parsed.event,
            parsed.uuid,
            str(parsed.lg_direction),
            str(parsed.dial_at_ms),
            str(parsed.bridge_at_ms),
        )
    h = hashlib.blake2b(digest_size=16)
    h.update(b"b1\x00")
    h.update(subscriber.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


def metric_event(event: str) -> str:
    """The ``event`` label for metrics: a known event name, or ``other`` (bounded labels)."""
    return event if event in KNOWN_EVENTS else "other"
