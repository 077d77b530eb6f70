"""click2call adapter: the command queue and the sockets, driving the pure switchboard.

Validation, reply shapes and the answering messages are pure
(:mod:`producer.click2call.commands`), and so is every decision — whose turn it is, when
to ack, which answer belongs to which command, when a command times out
(:mod:`producer.click2call.switchboard`). This module only translates:

* a delivered message becomes a :class:`~producer.click2call.effects.Delivery`; its
  consumer task (:meth:`Click2Call.handle`) then waits for the switchboard to settle it and
  does the ack/reject (the ack goes out *before* the action: at most once);
* socket state and PBX answer frames come from the sockets (:meth:`Click2Call.socket_state`,
  :meth:`Click2Call.offer`); actions go out on the socket in a task of their own;
* replies and outcome events go through the publisher's pipeline, so they are confirmed
  and survive a broker reconnect like events do — the command's fate no longer depends on
  the session it came on;
* one timer task ticks the switchboard at its next deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Container, Hashable
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from producer.click2call.commands import (
    answer_envelopes,
    command_fields,
    fields_of,
    is_pbx_reply,
    parse_command,
    pbx_error_message,
    result_of,
)
from producer.click2call.effects import (
    Delivery,
    Effect,
    Reply,
    SendAction,
    Settle,
    SettleMessage,
)
from producer.click2call.policy import (
    Policy,
    RateLimiter,
    compile_numbers,
    mask_number,
    sender_of,
)
from producer.click2call.switchboard import Switchboard
from producer.config import Settings
from producer.errors import CommandError, InvalidCommand, NotConnected
from producer.events import CallEvent
from producer.metrics import Metrics
from producer.phonet import SocketPool
from producer.publish.publisher import Publisher

log = logging.getLogger("producer.click2call")
BOUNCE_DELAY = 0.05
audit = logging.getLogger("producer.audit")


@dataclass
class Pending:
    """What the adapter keeps of one delivered command until it is answered and settled."""

    message: AbstractIncomingMessage
    started: float
    fields: dict[str, Any]
    sender: str | None = None
    settle: asyncio.Future[Settle] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Click2Call:
    """Consumes the command queue (a broker session hook) and answers every command."""

    def __init__(
        self, settings: Settings, sockets: SocketPool, publisher: Publisher, metrics: Metrics
    ) -> None:
        self.settings = s = settings
        self.sockets = sockets
        self.publisher = publisher
        self.metrics = metrics
        self.board = Switchboard(
            timeout=s.phonet_click2call_timeout,
            grace=s.phonet_click2call_timeout,
            connect_wait=s.phonet_click2call_connect_wait,
        )
        self.policy = Policy(
            allowed_users=frozenset(s.phonet_click2call_allowed_users) or None,
            allowed_numbers=compile_numbers(s.phonet_click2call_allowed_numbers),
            rate=RateLimiter(s.phonet_click2call_rate_limit),
        )
        self.known: Callable[[], Container[str]] = lambda: sockets
        """The configured subscribers (the app's list: with several replicas, more than
        this replica's sockets)."""
        self.mine: Callable[[str], bool] = lambda _subscriber: True
        """Whether this replica owns the subscriber (dials for it); others' commands are
        handed back to the queue for the owner (see :meth:`handle`)."""
        self.ready: Callable[[], Awaitable[None]] = _at_once
        """Returns once this replica knows what it owns (commands wait in the queue)."""
        self._pending: dict[Hashable, Pending] = {}
        self._consuming: tuple[AbstractQueue, str] | None = None
        self._session = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._timer: asyncio.Task[None] | None = None

    @property
    def consuming(self) -> bool:
        """True while the command queue is being consumed."""
        return self._consuming is not None

    # --- from the sockets -------------------------------------------------------------
    def offer(self, subscriber: str, connection: int, event: CallEvent) -> bool:
        """True when ``event`` is the PBX's answer to a command (not a call event)."""
        if not is_pbx_reply(event):
            return False
        refused = pbx_error_message(event) if event.event == "error" else None
        taken, effects = self.board.answer(subscriber, connection, refused, _now())
        if taken and not any(isinstance(e, Reply) for e in effects):
            log.warning(
                "a timed-out command's late PBX answer discarded", extra={"subscriber": subscriber}
            )
        self._apply(effects)
        return taken

    def socket_state(self, subscriber: str, connection: int, up: bool) -> None:
        """A subscriber's socket opened or closed (the pool calls this)."""
        now = _now()
        if up:
            self._apply(self.board.socket_up(subscriber, connection, now))
        else:
            self._apply(self.board.socket_down(subscriber, connection, now))

    # --- the queue --------------------------------------------------------------------
    async def consume(self, connection: AbstractConnection) -> None:
        """Session hook: declare the queue, consume until the channel closes. Commands of
        this session not yet being acked are abandoned when it ends (redelivered)."""
        if self.board.stopping:
            await asyncio.Event().wait()  # shutting down: hold the session, consume nothing
        await self.ready()  # the replicas' roles first: no command bounces meanwhile
        self._ensure_timer()
        self._session += 1
        session = self._session
        channel, queue = await self._declare(connection)
        tag = await queue.consume(partial_handle(self, session))
        self._consuming = (queue, tag)
        log.info("consuming click2call commands", extra={"queue": queue.name})
        try:
            await channel.closed()
        finally:
            self._consuming = None
            self._apply(self.board.session_lost(session, _now()))

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
        """Stop taking commands; the ones being acked or dialed finish (up to ``timeout``
        seconds), the ones waiting their turn go back to the queue, undialed."""
        consuming = self._consuming
        if consuming is not None:
            queue, tag = consuming
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await queue.cancel(tag)
        self._apply(self.board.stop(_now()))
        await self.settled(timeout)

    async def close(self) -> None:
        """Stop the timer and whatever still runs (after :meth:`stop`, sockets closed)."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.wait([self._timer])
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def settled(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds until no command is held (shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.board.busy:
                    self._idle.clear()
                    await self._idle.wait()

    async def handle(self, session: int, message: AbstractIncomingMessage) -> None:
        """One delivered command: hand it to the switchboard, then ack, reject or requeue
        it as told. Cancelled (its channel closed) before the ack: abandoned, the broker
        redelivers it; cancelled during the ack: treated as acked, since the ack may have
        reached the broker and the command must not be lost (a redelivery of a dialed
        command is recognised)."""
        fields = fields_of(message.body)
        subscriber = fields.get("subscriber")
        if isinstance(subscriber, str) and subscriber in self.known() and not self.mine(subscriber):
            # Another replica owns this subscriber's socket: give the command back to the
            # queue (after a pause: no hot loop while the replicas agree on the owner). It
            # is neither acked nor answered here; the owner dials it at most once.
            await asyncio.sleep(BOUNCE_DELAY)
            with contextlib.suppress(Exception):
                await message.reject(requeue=True)
            return
        key = (session, message.delivery_tag)
        pending = Pending(
            message,
            started=_now(),
            fields=fields,
            sender=sender_of(_text(message.user_id), _text(message.app_id)),
        )
        self._pending[key] = pending
        acking = False
        try:
            self._apply(self.board.deliver(self._delivery(key, session, pending), _now()))
            how = await pending.settle
            if how is Settle.ACK:
                acking = True
                written = await self._ack(message)
                acking = False
                self._apply(self.board.acked(key, written, _now()))
            elif how is Settle.REJECT:
                with contextlib.suppress(Exception):
                    await message.reject(requeue=False)
            elif how is Settle.REQUEUE:
                with contextlib.suppress(Exception):
                    await message.reject(requeue=True)
        except asyncio.CancelledError:
            now = _now()
            self._apply(
                self.board.acked(key, True, now) if acking else self.board.abandon(key, now)
            )
            raise
        finally:
            if not self.board.holds(key):
                self._pending.pop(key, None)

    def _delivery(self, key: Hashable, session: int, pending: Pending) -> Delivery:
        message, s, now = pending.message, self.settings, _now()
        # Age from the sender's timestamp when it set one, else from now.
        born = message.timestamp.timestamp() if message.timestamp is not None else time.time()
        fresh_until = pending.started + s.phonet_click2call_max_age - (time.time() - born)
        command = error = None
        try:
            self.policy.check_sender(_text(message.user_id))
            if message.reply_to == s.phonet_click2call_queue:
                # Its reply would come back as a command (and could be dialed): refuse.
                raise InvalidCommand("invalid command: reply_to is the command queue")
            command = parse_command(message.body, self.known())
            pending.fields = command_fields(command)
            if fresh_until < now:
                # Answered "expired" by the switchboard: it takes no rate token.
                self.policy.check_number(command.number)
            else:
                # A redelivery takes a token again: its first answer (rate limited, say)
                # may have been lost with its channel, and must not become a dial.
                self.policy.check(command.subscriber, command.number, now)
        except CommandError as exc:
            command, error = None, exc
        return Delivery(
            key=key,
            session=session,
            identity=_identity(message),
            redelivered=bool(message.redelivered),
            command=command,
            error=error,
            fresh_until=fresh_until,
        )

    async def _ack(self, message: AbstractIncomingMessage) -> bool:
        """Ack; False only when it surely never left (the channel was already closed)."""
        try:
            await message.ack()
        except aiormq.exceptions.ChannelInvalidStateError:
            log.warning("could not acknowledge a command (channel closed); it will be redelivered")
            return False
        except Exception as exc:  # unsure whether the broker got it: dial, never lose it
            log.warning(
                "acknowledging a command failed (%s); dialing it anyway", type(exc).__name__
            )
        return True

    # --- effects ----------------------------------------------------------------------
    def _apply(self, effects: list[Effect]) -> None:
        """Carry out the switchboard's decisions. Settlements first: a failure publishing a
        reply must never leave a command's message unsettled or its line blocked."""
        ordered = sorted(effects, key=lambda e: not isinstance(e, SettleMessage))
        for effect in ordered:
            try:
                if isinstance(effect, SettleMessage):
                    pending = self._pending.get(effect.key)
                    if pending is not None and not pending.settle.done():
                        pending.settle.set_result(effect.how)
                elif isinstance(effect, SendAction):
                    task = asyncio.create_task(self._send(effect), name="click2call:send")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif isinstance(effect, Reply):
                    self._reply(effect)
            except Exception:  # a bug in one effect must not stop the others
                log.exception("click2call effect failed", extra={"effect": type(effect).__name__})
        self._wake.set()
        if not self.board.busy:
            self._idle.set()

    async def _send(self, effect: SendAction) -> None:
        """Write the action; whatever happens (cancellation included) the switchboard
        hears whether it was written."""
        ok = False
        try:
            sock = self.sockets.get(effect.subscriber)
            if sock is not None:
                await sock.send(effect.action, effect.conn)
                ok = True
        except NotConnected:
            pass
        except Exception:
            log.exception("sending a click2call action failed")
        finally:
            self._apply(self.board.sent(effect.key, ok, _now()))

    def _ensure_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._tick(), name="click2call:timer")

    async def _tick(self) -> None:
        """Tick the switchboard at its next deadline, until cancelled."""
        while True:
            deadline = self.board.next_deadline()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if deadline is None else deadline - _now()):
                    await self._wake.wait()
            try:
                self._apply(self.board.tick(_now()))
            except Exception:  # keep ticking: timeouts are what frees a line
                log.exception("click2call timer failed")

    def _reply(self, effect: Reply) -> None:
        pending = self._pending.get(effect.key)
        if pending is None:
            return
        if pending.settle.done():  # handle() is done with it (else its finally pops it)
            del self._pending[effect.key]
        message, fields, outcome = pending.message, pending.fields, effect.outcome
        result = result_of(outcome)
        self.metrics.click2call_commands.labels(result).inc()
        latency = _now() - pending.started
        if result in ("success", "pbx_error"):
            self.metrics.click2call_latency.observe(latency)
        for envelope in answer_envelopes(
            fields,
            outcome,
            effect.pbx_message,
            exchange=self.settings.phonet_exchange,
            command_queue=self.settings.phonet_click2call_queue,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id or message.message_id,
            received=pending.started,
            wall_ms=time.time_ns() // 1_000_000,
        ):
            self.publisher.put(envelope)
        subscriber = fields.get("subscriber")
        audit.info(
            "click2call %s",
            result,
            extra={
                "sender": pending.sender,
                "subscriber": subscriber if isinstance(subscriber, str) else None,
                "number": mask_number(fields.get("to")),
                "command_id": fields.get("id"),
                "result": result,
                "latency_ms": round(latency * 1000, 1),
                "detail": None if outcome is None else str(outcome)[:200],
            },
        )


def partial_handle(service: Click2Call, session: int) -> Any:
    """The consumer callback for one session (aio-pika calls it with the message)."""

    async def on_message(message: AbstractIncomingMessage) -> None:
        await service.handle(session, message)

    return on_message


async def _at_once() -> None:
    return None


def _now() -> float:
    return asyncio.get_running_loop().time()


def _text(value: object) -> str | None:
    """A message property as text, or None: a property of the wrong type (a hostile or
    buggy sender) counts as absent, never as a crash."""
    return value if isinstance(value, str) and value else None


def _identity(message: AbstractIncomingMessage) -> str:
    """What identifies one command across redeliveries."""
    h = hashlib.blake2b(digest_size=16)
    for part in (message.message_id or "", message.correlation_id or ""):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(message.body)
    return h.hexdigest()
