"""A command message as the click2call adapter reads it from aiormq. Pure: no I/O.

The command queue is consumed at aiormq's level, not through aio-pika's message class, so
that nothing a sender puts in a message can make reading it raise (a property of the
wrong type, an ``expiration`` that is not a number, a ``timestamp`` out of range): every
property is read here defensively, and one that cannot be used counts as absent. What the
frame decoder could not read at all is named by
:data:`producer.broker.lenient_frames.UNDECODABLE`; such a command is answered as invalid.

:func:`identity` is what makes a command the same across redeliveries and a caller's
retries: its ``message_id``, ``correlation_id`` and body.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from producer.broker.lenient_frames import UNDECODABLE

MAX_TIMESTAMP = 253_402_300_799
"""The end of year 9999: anything later is not a time a sender meant."""


@dataclass(frozen=True, slots=True)
class CommandMessage:
    """What the adapter needs of one delivered command. Text properties are None when
    absent or not text; ``timestamp`` is seconds since the epoch or None."""

    delivery_tag: int
    redelivered: bool
    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    timestamp: float | None = None
    delivery_count: int = 0
    """``x-delivery-count`` (quorum queues): how often the broker delivered it before."""
    undecodable: tuple[str, ...] = ()
    """Properties the frame decoder could not read (the message is answered as invalid)."""

    @property
    def identity(self) -> str:
        return identity(self.message_id, self.correlation_id, self.body)

    @property
    def answer_to(self) -> str | None:
        """The correlation id a reply carries: the caller's, else its ``message_id``."""
        return self.correlation_id or self.message_id


def identity(message_id: str | None, correlation_id: str | None, body: bytes) -> str:
    """Equal for a redelivery and for a retry with the same id, correlation id and body."""
    h = hashlib.blake2b(digest_size=16)
    for part in (message_id or "", correlation_id or ""):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


def _text(value: object, limit: int = 255) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= limit else None


def _seconds(value: object) -> float | None:
    if isinstance(value, datetime):
        try:
            seconds = value.timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return None
    return seconds if 0 <= seconds <= MAX_TIMESTAMP else None


def read_message(delivery: Any, header: Any, body: bytes) -> CommandMessage:
    """A :class:`CommandMessage` from aiormq's delivery frame, content header and body.
    Never raises for what a sender can put in a message."""
    properties = getattr(header, "properties", None)

    def prop(name: str) -> object:
        return getattr(properties, name, None)

    headers = prop("headers")
    headers = headers if isinstance(headers, dict) else {}
    broken = headers.get(UNDECODABLE)
    count = headers.get("x-delivery-count")
    tag = getattr(delivery, "delivery_tag", None)
    return CommandMessage(
        delivery_tag=tag if isinstance(tag, int) else 0,
        redelivered=bool(getattr(delivery, "redelivered", False)),
        body=bytes(body),
        message_id=_text(prop("message_id")),
        correlation_id=_text(prop("correlation_id")),
        reply_to=_text(prop("reply_to")),
        user_id=_text(prop("user_id")),
        app_id=_text(prop("app_id")),
        timestamp=_seconds(prop("timestamp")),
        delivery_count=count if isinstance(count, int) and not isinstance(count, bool) else 0,
        undecodable=tuple(broken.split(",")) if isinstance(broken, str) and broken else (),
    )
