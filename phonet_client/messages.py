"""Everything on the events exchange as typed values: :func:`parse` reads one message. Pure.

The producer normalises what the PBX sends and puts it in headers (times in milliseconds
whatever unit the PBX used, ``direction`` in words, the subscriber); the body stays the
PBX's frame, untouched. :func:`parse` takes the routing key, the body and the headers and
returns one of:

* :class:`CallEvent` — ``call.dial`` / ``call.bridge`` / ``call.hangup`` / ``error`` (and
  any other event the PBX may add: ``event`` says which);
* :class:`InvalidFrame` — a frame that was not an event (``invalid.<subscriber>``), its
  bytes as they came;
* :class:`Gap` — a stretch in which a subscriber's socket delivered nothing;
* :class:`BackfilledCall` — a call read from the REST API: ``history.call`` (finished,
  missed by the socket) or ``active.call`` (in progress when a gap ended);
* :class:`Click2CallOutcome` — a click2call command's outcome (``click2call.<result>``
  on the exchange, and the RPC reply itself: see :mod:`phonet_client.click2call`);
* :class:`Unknown` — anything else (a newer producer): never an exception.

Unknown fields are ignored, missing ones are None: the models are tolerant by design.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phonet_client.keys import parse_routing_key

JSON = dict[str, Any]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _json(body: bytes) -> JSON:
    """The body as a JSON object, or ``{}`` when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: not ours to read
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class CallEvent:
    """A PBX event of one subscriber's socket. ``body`` is the PBX's frame as JSON."""

    event: str
    subscriber: str
    uuid: str | None
    parent_uuid: str | None
    direction: str
    """``incoming``, ``outgoing``, ``internal``, ``pause``, ``unpause`` or ``unknown``."""
    dial_at_ms: int | None
    bridge_at_ms: int | None
    server_time_ms: int | None
    received_at_ms: int | None
    message_id: str | None
    body: JSON = field(repr=False)

    @property
    def call_id(self) -> str | None:
        """The call this event belongs to: the parent's uuid for a group call's legs."""
        return self.parent_uuid or self.uuid

    @property
    def client_numbers(self) -> list[str]:
        """The outside parties' numbers (``otherLegs[].num``), as the PBX wrote them."""
        legs = self.body.get("otherLegs")
        if not isinstance(legs, list):
            return []
        return [n for leg in legs if isinstance(leg, dict) and isinstance(n := leg.get("num"), str)]

    @property
    def employee(self) -> JSON:
        """The employee-side party (``leg``), or ``{}``."""
        leg = self.body.get("leg")
        return leg if isinstance(leg, dict) else {}


@dataclass(frozen=True)
class InvalidFrame:
    """A frame the producer could not read as an event, kept as it came."""

    subscriber: str
    reason: str
    """``bad_json``, ``not_object``, ``no_event``, ``bad_event``, ``binary``, ...: the
    ``invalid_reason`` header."""
    detail: str
    raw: bytes = field(repr=False)
    message_id: str | None = None


@dataclass(frozen=True)
class Gap:
    """From ``from_ms`` to ``to_ms`` the subscriber's socket delivered nothing."""

    subscriber: str
    from_ms: int
    to_ms: int
    reason: str
    message_id: str | None = None


@dataclass(frozen=True)
class BackfilledCall:
    """A call row read from Phonet's REST API after a gap (``record`` as Phonet sent it)."""

    kind: str
    """``history`` (a finished call the socket missed) or ``active`` (in progress)."""
    subscriber: str
    uuid: str | None
    record: JSON = field(repr=False)
    message_id: str | None = None


@dataclass(frozen=True)
class Click2CallOutcome:
    """What became of a click2call command (the reply, or its copy on the exchange)."""

    result: str
    """``success``, ``pbx_error``, ``invalid``, ``unknown_subscriber``, ``forbidden``,
    ``number_not_allowed``, ``rate_limited``, ``not_connected``, ``timeout``, ``expired``,
    ``unknown`` (see the README's table)."""
    success: bool
    message: str | None
    subscriber: str | None
    to: str | None
    id: str | int | None
    """The caller's own ``id`` from the command, echoed."""
    command_id: str | None
    correlation_id: str | None


@dataclass(frozen=True)
class Unknown:
    """A message this toolkit does not know (a newer producer): kept, never an error."""

    routing_key: str
    body: bytes = field(repr=False)
    headers: JSON = field(repr=False)


Message = CallEvent | InvalidFrame | Gap | BackfilledCall | Click2CallOutcome | Unknown


def outcome(body: bytes, headers: Mapping[str, Any] | None) -> Click2CallOutcome:
    """A click2call reply or outcome event from its body and headers."""
    data, h = _json(body), dict(headers or {})
    success = data.get("event") == "success"
    result = _str(h.get("result")) or ("success" if success else "unknown")
    ident = data.get("id")
    return Click2CallOutcome(
        result=result,
        success=success,
        message=_str(data.get("message")),
        subscriber=_str(data.get("subscriber")) or _str(h.get("subscriber")),
        to=_str(data.get("to")),
        id=ident if isinstance(ident, str | int) and not isinstance(ident, bool) else None,
        command_id=_str(h.get("command_id")),
        correlation_id=_str(h.get("correlation_id")),
    )


def parse(
    routing_key: str,
    body: bytes,
    headers: Mapping[str, Any] | None = None,
    message_id: str | None = None,
) -> Message:
    """One message of the events exchange as a typed value; never raises."""
    h: JSON = dict(headers or {})
    try:
        event, token = parse_routing_key(routing_key)
    except ValueError:
        return Unknown(routing_key, body, h)
    subscriber = _str(h.get("subscriber")) or token
    if event == "invalid":
        return InvalidFrame(
            subscriber,
            _str(h.get("invalid_reason")) or "unknown",
            _str(h.get("invalid_detail")) or "",
            body,
            message_id,
        )
    if event == "gap":
        data = _json(body)
        return Gap(
            subscriber,
            _int(data.get("from_ms")) or 0,
            _int(data.get("to_ms")) or 0,
            _str(data.get("reason")) or _str(h.get("reason")) or "",
            message_id,
        )
    if event in ("history.call", "active.call"):
        data = _json(body)
        uuid = _str(h.get("uuid")) or _str(data.get("uuid"))
        return BackfilledCall(event.split(".")[0], subscriber, uuid, data, message_id)
    if event.startswith("click2call."):
        return outcome(body, h)
    data = _json(body)
    if not data:
        return Unknown(routing_key, body, h)
    return CallEvent(
        event=_str(h.get("event")) or event,
        subscriber=subscriber,
        uuid=_str(h.get("uuid")) or _str(data.get("uuid")),
        parent_uuid=_str(h.get("parent_uuid")) or _str(data.get("parentUuid")),
        direction=_str(h.get("direction")) or "unknown",
        dial_at_ms=_int(h.get("dial_at_ms")),
        bridge_at_ms=_int(h.get("bridge_at_ms")),
        server_time_ms=_int(h.get("server_time_ms")),
        received_at_ms=_int(h.get("received_at_ms")),
        message_id=message_id,
        body=data,
    )
