"""The one seam over aiormq's internals. Everything here fails safe to the public API.

Two things the public API does not give, and what we do when internals change:

* **Batch publishing** (:class:`FastPath`). Profiling showed ~45% of the producer's CPU in
  aiormq/pamqp's per-message ``basic_publish`` (see ``tests/bench/RESULTS.md``). The fast
  path writes a whole batch, encoded by :mod:`producer.publish.wire`, to the connection's
  writer queue as one frame group, and registers one confirmation future per message in
  the channel's own table, so aiormq resolves them on ack, nack, return and channel close
  exactly as it does for ``basic_publish``. :meth:`FastPath.attach` checks the internals
  it needs; anything unexpected while registering a batch rolls the channel's delivery
  tags back (as ``basic_publish`` does) and raises :class:`FastPathBroken`, after which
  the publisher uses :class:`LibraryPath` (``basic_publish`` per message) for the rest of
  that session, logged once and counted.
* **Broker alarms** (:func:`blocked_probe`). RabbitMQ blocks publishing connections during
  a memory or disk alarm (``connection.blocked``); aiormq tracks it in a private event.
  Without it we cannot tell a blocked connection from a stalled one and the watchdog
  behaves as before (reopens after ``PHONET_PUBLISH_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec

from producer.envelope import APP_ID, CONTENT_TYPE, Envelope
from producer.publish import wire

log = logging.getLogger("producer.amqp")

Confirmation = asyncio.Future[Any]
OnResult = Callable[[Envelope, Confirmation], None]
"""Called once per published envelope with its resolved (or cancelled) confirmation."""


class FastPathBroken(RuntimeError):
    """aiormq's internals are not what :class:`FastPath` expects; nothing was sent."""


class FastPath:
    """Publishes batches through one aiormq channel's internals (see the module docstring)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self.number: int = channel.number
        self.frame_max: int = channel.connection.connection_tune.frame_max

    @classmethod
    def attach(cls, channel: object) -> FastPath | None:
        """A fast path on ``channel``, or None when aiormq no longer looks as expected."""
        try:
            c: Any = channel
            if (
                isinstance(c.delivery_tag, int)
                and isinstance(c.confirmations, dict)
                and isinstance(c.message_id_delivery_tag, dict)
                and isinstance(c.write_queue, asyncio.Queue)
                and hasattr(c, "lock")
                and isinstance(c.connection.connection_tune.frame_max, int)
                and callable(c.create_future)
            ):
                return cls(c)
        except AttributeError:
            pass
        return None

    async def publish(self, batch: Sequence[tuple[Envelope, bytes]], on_result: OnResult) -> None:
        """Write ``batch`` (envelopes with their encoded frames) as one frame group.

        Raises:
            FastPathBroken: registering failed; the channel's state was rolled back and
                nothing of the batch was written, so it may be sent another way.
            aiormq.exceptions.ChannelInvalidStateError: the channel is closed.
        Cancellation (while waiting for the lock or for room in the writer queue) also
        rolls back: nothing of the batch is written.
        """
        c = self._channel
        async with c.lock:  # delivery tags and frame order must match
            first = c.delivery_tag
            registered: list[tuple[int, str, Confirmation]] = []
            try:
                for envelope, _ in batch:
                    c.delivery_tag += 1
                    tag = c.delivery_tag
                    confirmation = c.create_future()
                    c.confirmations[tag] = confirmation
                    c.message_id_delivery_tag[envelope.message_id] = tag
                    registered.append((tag, envelope.message_id, confirmation))
                frame = ChannelFrame(
                    payload=b"".join(frames for _, frames in batch), should_close=False
                )
                # The writer queue is bounded: this waits while the connection is busy.
                await c.write_queue.put(frame)
            except BaseException as exc:
                # Not written (a cancelled put enqueues nothing): the broker has not seen
                # these tags, so they are reused, as aiormq's basic_publish does.
                self._roll_back(first, registered)
                if isinstance(exc, Exception):
                    raise FastPathBroken(f"{type(exc).__name__}: {exc}"[:200]) from exc
                raise
        for (envelope, _), (tag, message_id, confirmation) in zip(batch, registered, strict=True):
            confirmation.add_done_callback(
                partial(self._resolved, envelope, message_id, tag, on_result)
            )

    def _roll_back(self, first: int, registered: list[tuple[int, str, Confirmation]]) -> None:
        """Undo a half-registered batch, as aiormq's ``basic_publish`` does."""
        c = self._channel
        c.delivery_tag = first
        for tag, message_id, confirmation in registered:
            c.confirmations.pop(tag, None)
            if c.message_id_delivery_tag.get(message_id) == tag:
                del c.message_id_delivery_tag[message_id]
            confirmation.cancel()

    def _resolved(
        self,
        envelope: Envelope,
        message_id: str,
        tag: int,
        on_result: OnResult,
        confirmation: Confirmation,
    ) -> None:
        ids = self._channel.message_id_delivery_tag
        if ids.get(message_id) == tag:
            del ids[message_id]
        on_result(envelope, confirmation)


def properties(envelope: Envelope) -> spec.Basic.Properties:
    """AMQP properties for the library path (the fast path encodes the same in wire.py)."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        message_id=envelope.message_id,
        correlation_id=envelope.correlation_id,
        timestamp=datetime.fromtimestamp(envelope.timestamp, tz=UTC),
        app_id=APP_ID,
        message_type=wire.fit_shortstr(envelope.type),
        headers=envelope.headers,
    )


class LibraryPath:
    """``basic_publish`` per message: aiormq's public API, slower (one task each)."""

    def __init__(self, channel: aiormq.Channel) -> None:
        self._channel = channel
        self.number = channel.number
        self.frame_max = channel.connection.connection_tune.frame_max
        self._tasks: set[Confirmation] = set()

    async def publish(self, batch: Sequence[tuple[Envelope, bytes]], on_result: OnResult) -> None:
        """Start one ``basic_publish`` per envelope; results come to ``on_result``."""
        loop = asyncio.get_running_loop()
        for envelope, _ in batch:
            task = loop.create_task(
                self._channel.basic_publish(
                    envelope.body,
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    properties=properties(envelope),
                    mandatory=True,
                    wait=False,
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(partial(on_result, envelope))

    async def close(self) -> None:
        """Cancel what is still running (the session ended) and wait for it."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def blocked_probe(connection: object) -> Callable[[], bool] | None:
    """A function telling whether the broker has blocked ``connection`` (an aio-pika
    connection), or None when aiormq's private state is not where it was."""
    try:
        transport: Any = getattr(connection, "transport", None)
        unblocked = transport.connection._Connection__connection_unblocked
    except AttributeError:
        return None
    if not isinstance(unblocked, asyncio.Event):
        return None
    return lambda: not unblocked.is_set()
