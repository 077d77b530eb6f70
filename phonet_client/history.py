"""Replay the call history: the producer's stream (``PHONET_HISTORY_STREAM``) from a point.

    async with await aio_pika.connect(url) as connection:
        history = History(connection, "phonet.history")
        async for message in history.since(yesterday_0900, subscriber="001"):
            ...

A RabbitMQ stream keeps every event for its retention and lets each reader start where it
likes: :meth:`History.since` starts at a moment (``datetime``), :meth:`History.read` also
at an offset (``int``) or ``"first"``. Reading stops at ``until`` (default: the moment the
read began) or when nothing newer comes for ``idle`` seconds (the reader has caught up);
``follow=True`` keeps reading live events instead. Messages come typed
(:func:`phonet_client.messages.parse`) in the stream's order, with their offset: each
subscriber's events in the order they were received; events of different subscribers
received within a few milliseconds may come in either order.

A stream is read over plain AMQP 0-9-1 (RabbitMQ 3.9 or later, no plugin): a consumer with
``x-stream-offset``, a prefetch, and acknowledgements (they only give credit: a stream
drops nothing when read). A moment is found at the granularity of the stream's chunks, so
events a little older than ``since`` are filtered out here by their own receive time.

Cancellation stops the read and closes its channel; so does leaving the loop early, once
the generator is closed (``contextlib.aclosing`` closes it at once).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from phonet_client.keys import parse_routing_key
from phonet_client.messages import Message, parse

Offset = datetime.datetime | int | Literal["first", "last", "next"]


@dataclass(frozen=True)
class Replayed:
    """One message of the history: its position in the stream and what it is."""

    offset: int
    at: datetime.datetime
    """When the producer received it (the ``received_at_ms`` header, else the message's
    ``timestamp``)."""
    message: Message


def _aware(moment: datetime.datetime) -> None:
    if moment.tzinfo is None:
        raise ValueError("give an aware datetime (e.g. with tzinfo=datetime.UTC)")


def _ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _received_ms(message: AbstractIncomingMessage) -> int:
    ms = message.headers.get("received_at_ms")
    if isinstance(ms, int) and not isinstance(ms, bool):
        return ms
    stamp = message.timestamp
    if stamp is None:
        return _ms(datetime.datetime.now(datetime.UTC))
    return _ms(stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.UTC))


class History:
    """Reads the stream ``stream`` over ``connection`` (one channel per read)."""

    def __init__(self, connection: AbstractConnection, stream: str, *, prefetch: int = 500):
        self.connection = connection
        self.stream = stream
        self.prefetch = prefetch

    def since(
        self,
        when: datetime.datetime,
        *,
        until: datetime.datetime | None = None,
        subscriber: str | None = None,
        event: str | None = None,
        idle: float = 1.0,
        follow: bool = False,
    ) -> AsyncIterator[Replayed]:
        """What was received from ``when`` on (filters: one ``subscriber``, one ``event``
        or prefix such as ``call`` or ``history.call``)."""
        _aware(when)  # at the call, not at the first iteration
        return self.read(
            when, until=until, subscriber=subscriber, event=event, idle=idle, follow=follow
        )

    async def read(
        self,
        start: Offset,
        *,
        until: datetime.datetime | None = None,
        subscriber: str | None = None,
        event: str | None = None,
        idle: float = 1.0,
        follow: bool = False,
    ) -> AsyncIterator[Replayed]:
        """From ``start`` (a moment, an offset, ``"first"``, ``"last"`` or ``"next"``).
        Raises ConnectionError when the channel closes mid-read (the replay would be cut
        short)."""
        if isinstance(start, datetime.datetime):
            _aware(start)
        # Compared in milliseconds, the precision of the producer's received_at_ms.
        end = None if follow else _ms(until or datetime.datetime.now(datetime.UTC))
        after = _ms(start) if isinstance(start, datetime.datetime) else None
        channel = await self.connection.channel()
        try:
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.get_queue(self.stream, ensure=False)
            arguments: dict[str, Any] = {"x-stream-offset": start}
            async with queue.iterator(arguments=arguments) as messages:
                first = True
                while True:
                    # The first delivery may take a while (the broker finds the chunk).
                    wait = None if follow else (max(idle, 5.0) if first else idle)
                    first = False
                    try:
                        async with asyncio.timeout(wait):
                            message = await anext(messages)
                    except TimeoutError:
                        return  # caught up
                    except StopAsyncIteration:
                        raise ConnectionError("the stream's channel closed mid-read") from None
                    await message.ack()
                    at = _received_ms(message)
                    if end is not None and at > end:
                        return
                    if (after is not None and at < after) or not _wanted(
                        message, subscriber, event
                    ):
                        continue
                    offset = message.headers.get("x-stream-offset")
                    yield Replayed(
                        offset if isinstance(offset, int) else -1,
                        datetime.datetime.fromtimestamp(at / 1000, datetime.UTC),
                        parse(
                            message.routing_key or "",
                            message.body,
                            message.headers,
                            message.message_id,
                        ),
                    )
        finally:
            if not channel.is_closed:
                await channel.close()


def _wanted(message: AbstractIncomingMessage, subscriber: str | None, event: str | None) -> bool:
    if subscriber is None and event is None:
        return True
    try:
        key = parse_routing_key(message.routing_key or "")
    except ValueError:
        return False
    if subscriber is not None and key.subscriber != subscriber:
        return False
    return event is None or key.event == event or key.event.startswith(event + ".")
