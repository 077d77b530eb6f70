"""The one seam over aiormq's internals. Everything here fails safe to the public API.

Three things the public API does not give, and what we do when internals change:

* **Batch publishing** (:class:`FastPath`). Profiling showed ~45% of the producer's CPU in
  aiormq/pamqp's per-message ``basic_publish`` (see ``tests/bench/RESULTS.md``). The fast
  path writes a whole batch, encoded by :mod:`producer.broker.wire`, to the connection's
  writer queue as one frame group, and registers one confirmation future per message in
  the channel's own table, so aiormq resolves them on ack, nack and channel close exactly
  as it does for ``basic_publish``. :meth:`FastPath.attach` checks the internals it needs;
  anything unexpected while registering a batch rolls the channel's delivery tags back (as
  ``basic_publish`` does) and raises :class:`FastPathBroken`, after which the publisher
  uses :class:`LibraryPath` (``basic_publish`` per message) for the rest of that session,
  logged once and counted.
* **Returned messages** (:func:`take_returns`, installed by :meth:`FastPath.attach`).
  aiormq matches a ``basic.return`` to a publish through a table that keeps one delivery
  tag per message id, so when the PBX repeats a frame (one id, two publishes in flight)
  one return completes the wrong publish and the other finds nothing; and a return it
  cannot match (also one for a channel it already gave up) is logged at ERROR with the
  whole message, body and all: a call record. The hook takes every return off the channel
  before aiormq sees it and hands the service the message id only (never the body); the
  pipeline matches it (:meth:`~producer.publish.pipeline.Pipeline.returned`). Without the
  hook (internals changed: no fast path either), aiormq handles returns as before and
  :class:`WithholdBodies`, a logging filter on aiormq's loggers, keeps bodies out of its
  log lines; counts of repeated frames can then be off by the repeats.
* **Broker alarms** (:func:`blocked_probe`). RabbitMQ blocks publishing connections during
  a memory or disk alarm (``connection.blocked``); aiormq tracks it in a private event.
  Without it we cannot tell a blocked connection from a stalled one and the watchdog
  behaves as before (reopens after ``PHONET_PUBLISH_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec

from producer.broker import wire
from producer.core.envelope import APP_ID, CONTENT_TYPE, Envelope

log = logging.getLogger("producer.broker.link")

Confirmation = asyncio.Future[Any]
OnResult = Callable[[Envelope, Confirmation], None]
"""Called once per published envelope with its resolved (or cancelled) confirmation."""


@dataclass(frozen=True)
class Returned:
    """What the service learns of a returned message: never its body."""

    message_id: str | None
    reply_code: int | None
    exchange: str
    routing_key: str


OnReturn = Callable[[Returned], None]
"""Called once per ``basic.return`` read on the channel, in the order they arrive."""


class FastPathBroken(RuntimeError):
    """aiormq's internals are not what :class:`FastPath` expects; nothing was sent."""


class FastPath:
    """Publishes batches through one aiormq channel's internals (see the module docstring)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self.number: int = channel.number
        self.frame_max: int = channel.connection.connection_tune.frame_max
        self.broken = False  # the return hook met internals it did not expect

    @classmethod
    def attach(cls, channel: object, on_return: OnReturn) -> FastPath | None:
        """A fast path on ``channel`` with its returns going to ``on_return``
        (:func:`take_returns`), or None (nothing changed) when aiormq no longer looks as
        expected."""
        try:
            c: Any = channel
            if not (
                isinstance(c.delivery_tag, int)
                and isinstance(c.confirmations, dict)
                and isinstance(c.write_queue, asyncio.Queue)
                and hasattr(c, "lock")
                and isinstance(c.connection.connection_tune.frame_max, int)
                and callable(c.create_future)
            ):
                return None
        except AttributeError:
            return None
        fast = cls(c)
        return fast if take_returns(c, on_return, fast) else None

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
            registered: list[tuple[int, Confirmation]] = []
            try:
                for _ in batch:
                    c.delivery_tag += 1
                    tag = c.delivery_tag
                    confirmation = c.create_future()
                    c.confirmations[tag] = confirmation
                    registered.append((tag, confirmation))
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
        # Returns are matched by message id in the pipeline (the hook), not in aiormq's
        # one-tag-per-id table, so nothing is registered there.
        for (envelope, _), (_, confirmation) in zip(batch, registered, strict=True):
            confirmation.add_done_callback(partial(on_result, envelope))

    def _roll_back(self, first: int, registered: list[tuple[int, Confirmation]]) -> None:
        """Undo a half-registered batch, as aiormq's ``basic_publish`` does."""
        c = self._channel
        c.delivery_tag = first
        for tag, confirmation in registered:
            c.confirmations.pop(tag, None)
            confirmation.cancel()


def take_returns(channel: Any, on_return: OnReturn, fast: FastPath) -> bool:
    """Read every ``basic.return`` on ``channel`` ourselves and hand it to ``on_return``
    (see the module docstring); False, changing nothing, when aiormq's reader does not look
    as expected. aiormq then never resolves a confirmation with a returned message: the
    ack that follows each return resolves it, and the pipeline knows it was returned.

    If reading a return fails with an error that says the internals changed, the hook
    marks ``fast.broken`` (the publisher stops using the fast path) and lets the error end
    the channel, as aiormq's own reader does with any frame it cannot read.
    """
    try:
        original = type(channel)._on_return_frame
        read_header = channel._Channel__get_content_header
        read_content = channel._read_content
        fits = (
            inspect.iscoroutinefunction(original)
            and list(inspect.signature(original).parameters) == ["self", "frame"]
            and inspect.iscoroutinefunction(read_header)
            and not inspect.signature(read_header).parameters
            and inspect.iscoroutinefunction(read_content)
            and list(inspect.signature(read_content).parameters) == ["frame", "header"]
        )
    except (AttributeError, TypeError, ValueError):
        return False
    if not fits:
        return False

    async def on_return_frame(frame: spec.Basic.Return) -> None:
        try:
            message = await read_content(frame, await read_header())
            properties = message.header.properties
        except (AttributeError, TypeError) as exc:
            fast.broken = True
            log.warning("aiormq internals changed: cannot read a returned message (%s)", exc)
            raise
        returned = Returned(
            message_id=properties.message_id,
            reply_code=frame.reply_code,
            exchange=frame.exchange or "",
            routing_key=frame.routing_key or "",
        )
        try:
            on_return(returned)
        except Exception:  # a bug of ours must not stop the channel's reader
            log.exception("handling a returned message failed")

    channel._on_return_frame = on_return_frame
    return True


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


class WithholdBodies(logging.Filter):
    """Keeps message bodies out of aiormq's log records: a returned message it cannot
    match is logged at ERROR with its repr (body included), and every frame written is
    logged at DEBUG with its bytes. Such arguments become a description without content.
    Installed on ``aiormq.channel`` and ``aiormq.connection`` when this module loads."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(map(_carries_body, args)):
            record.args = tuple(_withheld(arg) if _carries_body(arg) else arg for arg in args)
        return True


def _carries_body(value: object) -> bool:
    return isinstance(value, DeliveredMessage | ChannelFrame | bytes | bytearray | memoryview)


def _withheld(value: object) -> str:
    if isinstance(value, DeliveredMessage):
        message_id = getattr(value.header.properties, "message_id", None)
        return (
            f"<message exchange={value.exchange!r} routing_key={value.routing_key!r}"
            f" message_id={message_id!r}, {len(value.body)} bytes withheld>"
        )
    if isinstance(value, ChannelFrame):
        return f"<frames, {len(value.payload)} bytes withheld>"
    assert isinstance(value, bytes | bytearray | memoryview)
    return f"<{len(value)} bytes withheld>"


for _name in ("aiormq.channel", "aiormq.connection"):
    logging.getLogger(_name).addFilter(WithholdBodies())


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
