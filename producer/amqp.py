"""RabbitMQ adapter: one connection, kept open with backoff, that pumps the outbox.

:class:`BrokerLink` connects (``aio_pika.connect``), opens a publisher-confirm channel,
declares the events exchange, then runs, until the connection or a channel dies:

* the **pump**: takes envelopes from the :class:`~producer.outbox.Outbox` in order and
  publishes them with up to ``window`` confirmations outstanding (pipelined: one task per
  publish, written in order under aiormq's channel lock, never awaited one by one);
* every **session hook** (the click2call consumer), each given the live connection;
* a **watchdog** that ends the session when the connection or a channel closes, or when
  no confirmation arrived for ``publish_timeout`` seconds while publishes were pending.

When a session ends, everything unconfirmed is rewound and sent again on the next
connection (duplicates possible, same ``message_id``; losses not). A ``basic.nack`` is
retried; a ``basic.return`` (unroutable: no queue bound) is counted and not retried, since
sending it again would be returned again. We manage reconnection ourselves rather than
using ``connect_robust`` so that what happens to in-flight publishes across a reconnect is
explicit and tested.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp import commands as spec

from producer import __version__, wire
from producer.backoff import Backoff
from producer.envelope import APP_ID, CONTENT_TYPE, Envelope
from producer.errors import BrokerUnavailable
from producer.logs import BurstLog
from producer.metrics import Metrics
from producer.outbox import Outbox

log = logging.getLogger("producer.amqp")
_NACK_LOG = BurstLog(log)

SessionHook = Callable[[AbstractConnection], Awaitable[None]]
"""Runs for one connection's lifetime; returning or raising ends that session."""

_TRANSIENT = (
    OSError,
    TimeoutError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
    ConnectionError,
)


class SessionLost(Exception):
    """The connection or a channel closed, or confirmations stalled."""


def fast_path_available(channel: object) -> bool:
    """Whether aiormq still exposes what :meth:`BrokerLink._send_batch` relies on."""
    try:
        c: Any = channel
        return (
            isinstance(c.delivery_tag, int)
            and isinstance(c.confirmations, dict)
            and isinstance(c.message_id_delivery_tag, dict)
            and isinstance(c.write_queue, asyncio.Queue)
            and isinstance(c.connection.connection_tune.frame_max, int)
            and callable(c.create_future)
        )
    except AttributeError:
        return False


def properties(envelope: Envelope) -> spec.Basic.Properties:
    """AMQP properties: persistent JSON with id, timestamp, app id, type and headers."""
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


async def open_connection(url: str, *, timeout: float, name: str) -> AbstractConnection:
    """``aio_pika.connect`` with a connection name shown in the RabbitMQ UI."""
    return await aio_pika.connect(
        url,
        timeout=timeout,
        client_properties={"connection_name": name, "product": f"phonet-producer {__version__}"},
    )


async def check_broker(url: str, safe_url: str, timeout: float = 5.0) -> None:
    """Open and close one connection. Raises BrokerUnavailable (with the masked URL)."""
    try:
        connection = await open_connection(url, timeout=timeout, name="phonet-producer check")
    except (*_TRANSIENT, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {safe_url}: {_describe(exc)}") from None
    await connection.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    # aiormq puts the URL (with password) in some messages; never show those.
    return type(exc).__name__ if "://" in text else text[:160]


class BrokerLink:
    """Keeps one broker connection alive and publishes the outbox through it.

    :meth:`run` returns only after :meth:`stop`; connection failures are retried with
    :class:`~producer.backoff.Backoff`. Cancelling :meth:`run` closes the connection.
    """

    def __init__(
        self,
        *,
        url: str,
        safe_url: str,
        exchange: str,
        outbox: Outbox,
        metrics: Metrics,
        window: int = 1024,
        publish_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._url = url
        self.safe_url = safe_url
        self.exchange = exchange
        self.outbox = outbox
        self.metrics = metrics
        self.window = window
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self._backoff = backoff or Backoff(min_delay=0.5, max_delay=15.0, initial=0.5)
        self.session_hooks: list[SessionHook] = []
        self.connection: AbstractConnection | None = None
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None
        self._publishes: set[asyncio.Task[object]] = set()
        self._last_progress = 0.0
        self._up = asyncio.Event()
        # A nack means the broker could not take the message (a full queue with
        # overflow=reject-publish, a failing node): retry, but back off instead of spinning.
        self._nack_delay = 0.0
        self._paused_until = 0.0

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Ask :meth:`run` to close the connection and return."""
        self._stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        name = f"phonet-producer@{socket.gethostname()}"
        first = True
        while not self._stopping.is_set():
            if not first:
                self.metrics.amqp_reconnects.inc()
            first = False
            try:
                connection = await open_connection(
                    self._url, timeout=self.connect_timeout, name=name
                )
            except asyncio.CancelledError:
                raise
            except (*_TRANSIENT, ValueError) as exc:
                self.metrics.amqp_connect_failures.inc()
                delay = self._backoff.next_delay()
                log.warning(
                    "broker connect failed: %s; retrying in %.1fs",
                    _describe(exc),
                    delay,
                    extra={"amqp_url": self.safe_url},
                )
                await self._sleep(delay)
                continue
            started = loop.time()
            try:
                await self._session(connection)
            except asyncio.CancelledError:
                raise
            except SessionLost as exc:
                if not self._stopping.is_set():
                    log.warning("broker session lost: %s", exc)
            except Exception as exc:  # keep publishing whatever the library throws
                log.warning("broker session failed: %s", _describe(exc))
            finally:
                await self._end_session(connection)
            self._backoff.session_ended(loop.time() - started)
            if not self._stopping.is_set():
                await self._sleep(self._backoff.next_delay())

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        except TimeoutError:
            pass

    async def _session(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        self._lost = lost

        def on_close(_sender: object, exc: BaseException | None = None) -> None:
            if not lost.done():
                lost.set_exception(SessionLost(f"closed: {_describe(exc) if exc else 'by peer'}"))

        connection.close_callbacks.add(on_close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        channel.close_callbacks.add(on_close)
        await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        raw = await channel.get_underlay_channel()
        assert isinstance(raw, aiormq.Channel)

        self.connection = connection
        self._up.set()
        self.metrics.amqp_connected.set(1)
        self.metrics.amqp_connects.inc()
        log.info("broker connected", extra={"amqp_url": self.safe_url, "exchange": self.exchange})

        workers = [
            loop.create_task(_guard(self._pump(raw, lost), lost, "publisher"), name="amqp:pump"),
            loop.create_task(_guard(self._watchdog(lost), lost, "watchdog"), name="amqp:watch"),
            *(
                loop.create_task(_guard(hook(connection), lost, "consumer"), name="amqp:hook")
                for hook in self.session_hooks
            ),
        ]
        stop: asyncio.Future[Any] = loop.create_task(self._stopping.wait())
        try:
            await asyncio.wait((lost, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*workers, stop):
                task.cancel()
            await asyncio.wait([*workers, stop])
        if lost.done():
            lost.result()  # raises SessionLost

    async def _end_session(self, connection: AbstractConnection) -> None:
        lost, self._lost = self._lost, None
        if lost is not None and not lost.done():
            lost.cancel()
        self._up.clear()
        self.metrics.amqp_connected.set(0)
        self.connection = None
        for task in list(self._publishes):
            task.cancel()
        if self._publishes:
            await asyncio.wait(list(self._publishes))
        self._publishes.clear()
        resent = self.outbox.rewind()
        if resent:
            self.metrics.publish_retries.inc(resent)
        try:
            async with asyncio.timeout(2):
                await connection.close()
        except Exception:  # already dead; nothing more to do
            pass

    async def _pump(self, channel: aiormq.Channel, lost: asyncio.Future[None]) -> None:
        outbox, window = self.outbox, self.window
        loop = asyncio.get_running_loop()
        self._last_progress = loop.time()
        fast = fast_path_available(channel)
        send = self._send_batch if fast else self._send_each
        if not fast:
            log.warning("aiormq internals changed: publishing one message at a time (slower)")
        while not lost.done():
            await outbox.wait_ready()
            pause = self._paused_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            free = window - outbox.inflight
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            if outbox.inflight == 0:
                self._last_progress = loop.time()
            await send(channel, outbox.take(free))
            # Let confirms arrive and frames be read before taking more.
            await asyncio.sleep(0)

    async def _send_batch(self, channel: aiormq.Channel, batch: list[Envelope]) -> None:
        """Encode the whole batch (:mod:`producer.wire`) and hand it to aiormq's writer as one
        frame group, registering one confirmation future per message in aiormq's own table
        (so acks, nacks, returns and channel closure resolve them as for ``basic_publish``).
        """
        number = channel.number
        frame_max = channel.connection.connection_tune.frame_max
        frames = []
        async with channel.lock:  # delivery tags and frame order must match
            for envelope in batch:
                channel.delivery_tag += 1
                tag = channel.delivery_tag
                confirmation = channel.create_future()
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[envelope.message_id] = tag
                confirmation.add_done_callback(partial(self._published, envelope, channel, tag))
                frames.append(wire.publish(envelope, number, frame_max))
            await channel.write_queue.put(
                ChannelFrame(payload=b"".join(frames), should_close=False)
            )

    async def _send_each(self, channel: aiormq.Channel, batch: list[Envelope]) -> None:
        """The library path, one task per message: used if aiormq's internals change."""
        loop = asyncio.get_running_loop()
        for envelope in batch:
            task = loop.create_task(
                channel.basic_publish(
                    envelope.body,
                    exchange=envelope.exchange,
                    routing_key=envelope.routing_key,
                    properties=properties(envelope),
                    mandatory=True,
                    wait=False,
                )
            )
            self._publishes.add(task)
            task.add_done_callback(partial(self._published, envelope, None, 0))

    def _published(
        self,
        envelope: Envelope,
        channel: aiormq.Channel | None,
        tag: int,
        task: asyncio.Future[object],
    ) -> None:
        if channel is not None:
            if channel.message_id_delivery_tag.get(envelope.message_id) == tag:
                del channel.message_id_delivery_tag[envelope.message_id]
        else:
            self._publishes.discard(task)
        if task.cancelled():
            return  # the session ended; rewind() resends it
        exc = task.exception()
        loop = asyncio.get_running_loop()
        if exc is None:
            result = task.result()
            self._last_progress = loop.time()
            self._nack_delay = 0.0
            if self.outbox.confirm(envelope):
                if isinstance(result, DeliveredMessage):
                    self.metrics.events_returned.labels(envelope.label).inc()
                    _warn_unroutable(envelope)
                else:
                    self.metrics.published[envelope.label].inc()
                    self.metrics.publish_latency.observe(loop.time() - envelope.received)
        elif isinstance(exc, aiormq.exceptions.DeliveryError):
            self._last_progress = loop.time()
            self.metrics.publish_retries.inc()
            self.outbox.retry(envelope)
            if loop.time() >= self._paused_until:  # one step per round, not per message
                self._nack_delay = min(5.0, max(0.05, self._nack_delay * 2))
                self._paused_until = loop.time() + self._nack_delay
            _NACK_LOG(
                logging.WARNING, "broker nacked a publish; retrying in %.2fs", self._nack_delay
            )
        else:
            # Channel or connection trouble: end the session; rewind() resends it.
            if self._lost is not None and not self._lost.done():
                self._lost.set_exception(SessionLost(f"publish failed: {_describe(exc)}"))
        self._slot_freed.set()

    async def _watchdog(self, lost: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.publish_timeout / 4)
        while not lost.done():
            await asyncio.sleep(tick)
            stalled = loop.time() - self._last_progress > self.publish_timeout
            if self.outbox.inflight and stalled and not lost.done():
                lost.set_exception(
                    SessionLost(f"no publisher confirm for {self.publish_timeout:.0f}s")
                )


async def _guard(work: Awaitable[None], lost: asyncio.Future[None], what: str) -> None:
    """Run one session worker; its end (return or error) ends the session."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except SessionLost as exc:
        if not lost.done():
            lost.set_exception(exc)
    except Exception as exc:
        log.exception("%s failed", what)
        if not lost.done():
            lost.set_exception(SessionLost(f"{what} failed: {_describe(exc)}"))
    else:
        if not lost.done():
            lost.set_exception(SessionLost(f"{what} ended"))


_UNROUTABLE_WARNED: set[str] = set()


def _warn_unroutable(envelope: Envelope) -> None:
    """Warn once per routing-key prefix: nobody is bound to receive these messages."""
    prefix = envelope.routing_key.rsplit(".", 1)[0]
    if prefix not in _UNROUTABLE_WARNED and len(_UNROUTABLE_WARNED) < 100:
        _UNROUTABLE_WARNED.add(prefix)
        log.warning(
            "broker returned a message as unroutable: no queue is bound for %s",
            envelope.routing_key,
            extra={"exchange": envelope.exchange},
        )
