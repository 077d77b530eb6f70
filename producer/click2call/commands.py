"""click2call commands: validation, staleness, replies. Pure: no I/O, clock passed in.

A command is a JSON object ``{"subscriber": "001", "to": "380991234567"}`` with an
optional ``"id"``. :func:`parse_command` returns a :class:`Command` or raises a
:class:`~producer.core.errors.CommandError` whose text is the reply's ``message``; nothing that
fails here is ever sent to the PBX. :func:`reply_body` builds the JSON published back
(``{"event": "success"|"error", ...}``); :func:`is_pbx_reply` tells a PBX answer to an action
apart from a call event on the same socket.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from producer.core.envelope import Envelope, outcome_envelope
from producer.core.errors import CommandError, CommandExpired, InvalidCommand, UnknownSubscriber
from producer.core.events import CallEvent

REPLY_EVENTS = frozenset({"success", "error"})
MAX_ID_LENGTH = 128
MAX_COMMAND_BYTES = 8192
"""A command is a few dozen bytes; anything this large is refused before it is parsed."""
MAX_TO_LENGTH = 64
_SEPARATORS = re.compile(r"[\s\-()\[\]]")
_PHONE = re.compile(r"\+?[0-9]{2,20}")


@dataclass(frozen=True, slots=True)
class Command:
    """A valid command. ``to`` is as the caller wrote it, ``number`` what the PBX gets."""

    subscriber: str
    to: str
    number: str
    id: str | int | None = None

    def action(self) -> str:
        """The text frame sent on the subscriber's socket."""
        return orjson.dumps({"action": "call", "to": self.number}).decode()


def normalise_number(to: str) -> str | None:
    """Digits with an optional leading ``+`` (2–20 digits) after stripping spaces, dashes
    and brackets; ``None`` when that is not a phone number."""
    if len(to) > MAX_TO_LENGTH:
        return None
    number = _SEPARATORS.sub("", to)
    return number if _PHONE.fullmatch(number) else None


def parse_command(body: bytes, configured: Container[str]) -> Command:
    """Validate one command body against the configured subscribers.

    Raises:
        InvalidCommand: larger than MAX_COMMAND_BYTES, not JSON, not an object, a field
            missing or of the wrong type, or ``to`` not a phone number.
        UnknownSubscriber: ``subscriber`` is not configured on this producer.
    """
    if len(body) > MAX_COMMAND_BYTES:
        raise InvalidCommand(f"invalid command: body larger than {MAX_COMMAND_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidCommand("invalid command: body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidCommand("invalid command: body must be a JSON object")
    if data.get("event") in REPLY_EVENTS:
        # A reply or an outcome event routed back to the queue by mistake: never a dial.
        raise InvalidCommand("invalid command: this is a reply, not a command")
    subscriber, to, ident = data.get("subscriber"), data.get("to"), data.get("id")
    if not isinstance(subscriber, str) or not subscriber:
        raise InvalidCommand("invalid command: 'subscriber' must be a non-empty string")
    if not isinstance(to, str) or not to:
        raise InvalidCommand("invalid command: 'to' must be a non-empty string")
    if ident is not None and (
        isinstance(ident, bool)
        or not isinstance(ident, str | int)
        or len(str(ident)) > MAX_ID_LENGTH
    ):
        raise InvalidCommand(
            f"invalid command: 'id' must be a string or integer of at most {MAX_ID_LENGTH}"
            " characters"
        )
    number = normalise_number(to)
    if number is None:
        raise InvalidCommand("invalid command: 'to' is not a phone number")
    if subscriber not in configured:
        raise UnknownSubscriber("unknown subscriber")
    return Command(subscriber=subscriber, to=to, number=number, id=ident)


def check_age(
    *,
    timestamp: datetime | None,
    received_at: float,
    now: float,
    max_age: float,
) -> None:
    """Raise CommandExpired when the command is older than ``max_age`` seconds.

    Age is judged by the AMQP ``timestamp`` (set by the publisher) when present, else from
    ``received_at`` (when the producer took it off the queue; the queue's own TTL, and any
    per-message ``expiration``, keep stale commands from being delivered at all). All
    times are seconds since the epoch.
    """
    born = timestamp.timestamp() if timestamp is not None else received_at
    if now - born > max_age:
        raise CommandExpired("expired")


def fields_of(body: bytes) -> dict[str, Any]:
    """``subscriber``, ``to`` and ``id`` from a body, as far as they can be read (for
    echoing them in an error reply). Only strings and integers are echoed; an oversized
    body is not read at all."""
    if len(body) > MAX_COMMAND_BYTES:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("subscriber", "to", "id"):
        value = data.get(key)
        short_text = isinstance(value, str) and len(value) <= 256
        integer = isinstance(value, int) and not isinstance(value, bool)
        if short_text or integer:
            out[key] = value
    return out


def reply_body(
    fields: dict[str, Any], outcome: CommandError | None, pbx_message: str | None = None
) -> bytes:
    """The reply JSON: ``success`` or ``error`` with ``message``, plus subscriber, to, id.

    ``pbx_message`` is the PBX's own error text (``PbxRefused``), else the error's text.
    """
    body: dict[str, Any] = {"event": "success" if outcome is None else "error"}
    if outcome is not None:
        body["message"] = pbx_message if pbx_message is not None else str(outcome)
    body["subscriber"] = fields.get("subscriber")
    body["to"] = fields.get("to")
    if fields.get("id") is not None:
        body["id"] = fields["id"]
    return orjson.dumps(body)


def command_fields(command: Command) -> dict[str, Any]:
    return {"subscriber": command.subscriber, "to": command.to, "id": command.id}


def is_pbx_reply(event: CallEvent) -> bool:
    """A ``success``/``error`` frame without a ``uuid``: the PBX answering an action.

    ``error`` is also a call-event value; a call event carries its call's ``uuid``, the
    click2call answer (``{"event":"error","message":"..."}``) does not.
    """
    return event.event in REPLY_EVENTS and "uuid" not in event.fields


def pbx_error_message(event: CallEvent) -> str:
    """The PBX's error text, bounded; a generic one when it sent none."""
    message = event.fields.get("message")
    if isinstance(message, str) and message:
        return message[:500]
    return "PBX refused the call"


def result_of(outcome: CommandError | None) -> str:
    """The ``result`` metric label."""
    return "success" if outcome is None else outcome.result


@dataclass(frozen=True, slots=True)
class AnswerParts:
    """One command's answer: the reply body (:func:`reply_body`), its headers (``result``,
    and ``subscriber``, ``command_id``, ``correlation_id`` when known), its ``result``
    label, and where the RPC reply goes (None: no ``reply_to``, or the command queue
    itself, where it would be read as a command)."""

    body: bytes
    headers: dict[str, Any]
    result: str
    reply_to: str | None


def answer_parts(
    fields: dict[str, Any],
    outcome: CommandError | None,
    pbx_message: str | None,
    *,
    command_queue: str,
    reply_to: str | None,
    correlation_id: str | None,
) -> AnswerParts:
    """What answers one command; the same body and headers go to the caller and, as the
    outcome event (:func:`outcome_event`), to the events exchange."""
    result = result_of(outcome)
    headers: dict[str, Any] = {"result": result}
    subscriber = fields.get("subscriber")
    if isinstance(subscriber, str):
        headers["subscriber"] = subscriber
    if fields.get("id") is not None:
        headers["command_id"] = str(fields["id"])
    if correlation_id:
        headers["correlation_id"] = correlation_id
    return AnswerParts(
        body=reply_body(fields, outcome, pbx_message),
        headers=headers,
        result=result,
        reply_to=reply_to if reply_to and reply_to != command_queue else None,
    )


def outcome_event(
    parts: AnswerParts,
    *,
    exchange: str,
    received: float,
    wall_ms: int,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> Envelope:
    """The answer as an event on ``exchange``: ``click2call.success|error.<token>``."""
    subscriber = parts.headers.get("subscriber")
    return outcome_envelope(
        exchange,
        subscriber if isinstance(subscriber, str) else None,
        "success" if parts.result == "success" else "error",
        parts.body,
        dict(parts.headers),
        message_id=new_id(),
        received=received,
        wall_ms=wall_ms,
    )


__all__ = [
    "AnswerParts",
    "Command",
    "CommandError",
    "answer_parts",
    "check_age",
    "command_fields",
    "fields_of",
    "is_pbx_reply",
    "normalise_number",
    "outcome_event",
    "parse_command",
    "pbx_error_message",
    "reply_body",
    "result_of",
]
