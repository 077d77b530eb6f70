"""click2call: commands from a queue are dialed on the right socket and answered.

The adapter between the command queue and the subscriber sockets; validation and reply
shapes are pure (:mod:`producer.commands`). For each delivered command, inside
``message.process(requeue=False)`` (the aio-pika RPC-server pattern):

1. validate it (bad → error reply, message rejected: dead-lettered when a DLX is set);
2. wait for its subscriber's turn — one command in flight per socket, because the PBX
   answers with no request id: the next ``success``/``error`` frame on that socket *is*
   the answer. Different subscribers run concurrently (up to the prefetch);
3. check it is not stale, wait up to ``connect_wait`` for the socket;
4. **acknowledge, then send** ``{"action":"call","to":…}``: a crash or a redelivery after
   this point cannot dial again (at most once). A redelivered command we already dialed is
   recognised and not dialed twice;
5. wait up to ``timeout`` for the PBX's answer, then reply to ``reply_to`` with the caller's
   ``correlation_id`` and publish the outcome on the events exchange.

Replies and outcome events go through the outbox, so they are confirmed and survive a broker
reconnect like events do. After a timeout the next command on that socket first waits up to
another ``timeout`` for the late answer, so it is never mistaken for the next command's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from producer.commands import (
    check_age,
    command_fields,
    fields_of,
    is_pbx_reply,
    parse_command,
    pbx_error_message,
    reply_body,
    result_of,
)
from producer.config import Settings
from producer.envelope import outcome_envelope, reply_envelope
from producer.errors import CommandError, CommandTimeout, NotConnected, PbxRefused
from producer.events import CallEvent
from producer.metrics import Metrics
from producer.outbox import Outbox
from producer.phonet import SocketPool, SubscriberSocket

log = logging.getLogger("producer.click2call")

DIALED_MEMORY = 10_000
"""How many dialed commands are remembered to recognise a redelivery."""


class CommandLine:
    """One subscriber's line to the PBX: one command in flight, answers matched in order."""

    def __init__(self, subscriber: str) -> None:
        self.subscriber = subscriber
        self._lock = asyncio.Lock()
        self._reply: asyncio.Future[CallEvent] | None = None
        self._late: asyncio.Future[CallEvent] | None = None
        self._late_until = 0.0

    def offer(self, event: CallEvent) -> bool:
        """Take a PBX answer frame if a command (or a timed-out one) awaits it."""
        for waiter in (self._reply, self._late):
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
                if waiter is self._late:
                    log.warning("late PBX answer ignored", extra={"subscriber": self.subscriber})
                return True
        return False

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the line. Waits for earlier commands; cancellation releases the wait."""
        async with self._lock:
            late = self._late
            if late is not None:
                remaining = self._late_until - asyncio.get_running_loop().time()
                if remaining > 0 and not late.done():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await asyncio.shield(late)
                self._late = None
            yield

    async def call(self, sock: SubscriberSocket, action: str, timeout: float) -> CallEvent:
        """Send ``action`` and wait for the answer. Call inside :meth:`turn`.

        Raises:
            NotConnected: the socket is down or dropped before the answer.
            CommandTimeout: no answer within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[CallEvent] = loop.create_future()
        self._reply = reply
        down = loop.create_task(sock.wait_disconnected())
        try:
            await sock.send(action)
            async with asyncio.timeout(timeout):
                done, _ = await asyncio.wait((reply, down), return_when=asyncio.FIRST_COMPLETED)
            if reply in done:
                return reply.result()
            raise NotConnected("connection to the PBX lost before it answered")
        except TimeoutError:
            self._late = loop.create_future()
            self._late_until = loop.time() + timeout
            raise CommandTimeout("timeout") from None
        finally:
            self._reply = None
            down.cancel()
            if not reply.done():
                reply.cancel()


class Click2Call:
    """Consumes the command queue (a broker session hook) and answers every command."""

    def __init__(
        self, settings: Settings, sockets: SocketPool, outbox: Outbox, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.outbox = outbox
        self.metrics = metrics
        self.lines: dict[str, CommandLine] = {}
        self._dialed: OrderedDict[str, None] = OrderedDict()
        self._consuming: tuple[AbstractQueue, str] | None = None
        self._accepting = True
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def consuming(self) -> bool:
        """True while the command queue is being consumed."""
        return self._consuming is not None

    # --- frames from the sockets ------------------------------------------------------
    def offer(self, subscriber: str, event: CallEvent) -> bool:
        """True when ``event`` is the PBX's answer to a pending command (not a call event)."""
        if not is_pbx_reply(event):
            return False
        line = self.lines.get(subscriber)
        return line is not None and line.offer(event)

    def _line(self, subscriber: str) -> CommandLine:
        line = self.lines.get(subscriber)
        if line is None:
            line = self.lines[subscriber] = CommandLine(subscriber)
        return line

    # --- the queue --------------------------------------------------------------------
    async def consume(self, connection: AbstractConnection) -> None:
        """Session hook: declare the queue, consume until the channel closes."""
        if not self._accepting:
            await asyncio.Event().wait()  # shutting down: hold the session, consume nothing
        channel, queue = await self._declare(connection)
        tag = await queue.consume(self.handle)
        self._consuming = (queue, tag)
        log.info("consuming click2call commands", extra={"queue": queue.name})
        try:
            await channel.closed()
        finally:
            self._consuming = None

    async def _declare(
        self, connection: AbstractConnection
    ) -> tuple[AbstractChannel, AbstractQueue]:
        s = self.settings
        arguments: dict[str, Any] = {"x-message-ttl": int(s.phonet_click2call_max_age * 1000)}
        if s.phonet_click2call_queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        if s.phonet_click2call_dead_letter_exchange:
            arguments["x-dead-letter-exchange"] = s.phonet_click2call_dead_letter_exchange
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=s.phonet_click2call_prefetch)
        name = s.phonet_click2call_queue
        try:
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed:
            # The queue exists with other arguments (an older TTL, another type): use it as
            # it is rather than fail to start; the operator can delete it to apply ours.
            log.warning(
                "click2call queue exists with other arguments; using it as it is",
                extra={"queue": name, "wanted": arguments},
            )
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=s.phonet_click2call_prefetch)
            queue = await channel.declare_queue(name, passive=True)
        return channel, queue

    async def stop(self, timeout: float) -> None:
        """Stop taking commands; the one being dialed on each socket finishes (up to
        ``timeout`` seconds), the ones waiting their turn go back to the queue."""
        consuming = self._consuming
        if consuming is not None:
            queue, tag = consuming
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await queue.cancel(tag)
        self._accepting = False  # after the cancel: a given-back command is not redelivered here
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """One command, answered whatever happens; never requeued."""
        self._active += 1
        self._idle.clear()
        try:
            async with message.process(requeue=False, ignore_processed=True):
                await self._execute(message)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _execute(self, message: AbstractIncomingMessage) -> None:
        loop = asyncio.get_running_loop()
        started, received_wall = loop.time(), time.time()
        s = self.settings
        fields = fields_of(message.body)
        outcome: CommandError | None = None
        pbx_message: str | None = None
        answered = False
        if not self._accepting:
            await self._give_back(message)
            return
        try:
            command = parse_command(message.body, self.sockets)
            fields = command_fields(command)

            def check_fresh() -> None:
                check_age(
                    timestamp=message.timestamp,
                    received_at=received_wall,
                    now=time.time(),
                    max_age=s.phonet_click2call_max_age,
                )

            check_fresh()
            identity = _identity(message)
            if message.redelivered and identity in self._dialed:
                log.warning(
                    "redelivered command was already dialed; not dialing it again",
                    extra={"subscriber": command.subscriber},
                )
                await message.ack()
                return
            line = self._line(command.subscriber)
            async with line.turn():
                if not self._accepting:
                    await self._give_back(message)
                    return
                check_fresh()  # again: it may have waited for its turn
                sock = self.sockets.get(command.subscriber)
                if sock is None or not await sock.wait_connected(s.phonet_click2call_connect_wait):
                    raise NotConnected("not connected")
                try:
                    await message.ack()  # before dialing: at most once
                except Exception:
                    # The ack did not reach the broker: it will redeliver; dial then, not now.
                    log.warning("could not acknowledge a command; leaving it to redelivery")
                    return
                self._remember(identity)
                event = await line.call(sock, command.action(), s.phonet_click2call_timeout)
                answered = True
                if event.event == "error":
                    pbx_message = pbx_error_message(event)
                    raise PbxRefused(pbx_message)
        except CommandError as exc:
            outcome = exc
            if not message.processed:
                with contextlib.suppress(Exception):
                    await message.reject(requeue=False)
        self._answer(message, fields, outcome, pbx_message, received=started)
        if answered:
            self.metrics.click2call_latency.observe(loop.time() - started)

    async def _give_back(self, message: AbstractIncomingMessage) -> None:
        """Shutting down before this command was dialed: back to the queue for the next
        producer. The consumer is already cancelled, so it cannot come back here in a loop."""
        with contextlib.suppress(Exception):
            await message.reject(requeue=True)

    def _remember(self, identity: str) -> None:
        self._dialed[identity] = None
        if len(self._dialed) > DIALED_MEMORY:
            self._dialed.popitem(last=False)

    def _answer(
        self,
        message: AbstractIncomingMessage,
        fields: dict[str, Any],
        outcome: CommandError | None,
        pbx_message: str | None,
        *,
        received: float,
    ) -> None:
        result = result_of(outcome)
        self.metrics.click2call_commands.labels(result).inc()
        body = reply_body(fields, outcome, pbx_message)
        wall_ms = time.time_ns() // 1_000_000
        correlation_id = message.correlation_id or message.message_id
        headers: dict[str, Any] = {"result": result}
        subscriber = fields.get("subscriber")
        if isinstance(subscriber, str):
            headers["subscriber"] = subscriber
        if fields.get("id") is not None:
            headers["command_id"] = str(fields["id"])
        if correlation_id:
            headers["correlation_id"] = correlation_id
        if message.reply_to:
            self.outbox.put(
                reply_envelope(
                    message.reply_to,
                    correlation_id,
                    body,
                    headers,
                    message_id=uuid.uuid4().hex,
                    received=received,
                    wall_ms=wall_ms,
                )
            )
        self.outbox.put(
            outcome_envelope(
                self.settings.phonet_exchange,
                subscriber if isinstance(subscriber, str) else None,
                "success" if outcome is None else "error",
                body,
                headers,
                message_id=uuid.uuid4().hex,
                received=received,
                wall_ms=wall_ms,
            )
        )
        level = logging.INFO if outcome is None else logging.WARNING
        log.log(
            level,
            "click2call %s",
            result,
            extra={
                "subscriber": subscriber,
                "command_id": fields.get("id"),
                "detail": None if outcome is None else str(outcome)[:200],
            },
        )


def _identity(message: AbstractIncomingMessage) -> str:
    """What identifies one command across redeliveries."""
    h = hashlib.blake2b(digest_size=16)
    for part in (message.message_id or "", message.correlation_id or ""):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(message.body)
    return h.hexdigest()
