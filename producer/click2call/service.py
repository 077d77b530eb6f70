"""click2call adapter: the command queue, the journal and the sockets, driving the pure
switchboard. It runs as the session hook of the **command connection** (its own: nothing
a command does can interrupt event publishing). Per session it opens the journal
(:mod:`.journal_link`), consumes the command queue with aiormq's raw consumer (properties
read defensively, :mod:`.message`) and picks up what other replicas hand to this one
(:mod:`.dispatching`). Each command runs in a task of its own through
:class:`~.handling.Handler` (decide, claim, hand over or dial) and the switchboard (one
command at a time per socket); :mod:`.answers` publishes, :mod:`.settling` settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Container, Hashable
from functools import partial
from typing import Any

from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage

from producer.broker.topology import Queue, declare_queue
from producer.click2call.answers import Answering, Pending
from producer.click2call.commands import (
    fields_of,
    is_pbx_reply,
    pbx_error_message,
)
from producer.click2call.dispatching import Pickup, Signal, dispatched_message
from producer.click2call.effects import Answer, Effect, SendAction, SettleMessage
from producer.click2call.handling import Handler, Replicas
from producer.click2call.journal import Dispatch, Journal
from producer.click2call.journal_link import JournalLink, JournalUnavailable
from producer.click2call.message import CommandMessage, read_message
from producer.click2call.policy import Policy, RateLimiter, compile_numbers, sender_of
from producer.click2call.settings import PREFETCH, Click2CallSettings
from producer.click2call.settling import Settler
from producer.click2call.switchboard import Switchboard
from producer.core.clock import now as _now
from producer.core.errors import NotConnected
from producer.core.events import CallEvent
from producer.phonet import SocketPool
from producer.publish.publisher import Publisher
from producer.telemetry.logs import BurstLog
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer.click2call")


class Click2Call:
    """Consumes the command queue (a session hook of the command connection)."""

    def __init__(
        self,
        settings: Click2CallSettings,
        sockets: SocketPool,
        publisher: Publisher,
        metrics: Metrics,
        replicas: Replicas,
        *,
        exchange: str,
        queue: Queue,
        journal: Queue,
        configured: Callable[[], Container[str]],
        user: str | None,
    ) -> None:
        """``exchange``: where outcomes are published; ``queue`` and ``journal``: the
        command queue and the journal stream, as values (:mod:`producer.app.topology`)."""
        self.settings = s = settings
        self.sockets = sockets
        self.metrics = metrics
        self.replicas = replicas
        self.user = user
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
        self.journal = Journal()
        self.queue, self.journal_queue = queue, journal
        self.answers = Answering(
            self.journal,
            publisher,
            metrics,
            me=replicas.me,
            exchange=exchange,
            command_queue=s.phonet_click2call_queue,
        )
        self.answers.session = lambda: self._session
        self.settler = Settler(self.answers, prefetch=PREFETCH, session=lambda: self._session)
        self.moved = Signal()
        self.handler = Handler(
            s,
            self.journal,
            self.answers,
            self.settler,
            replicas,
            self.policy,
            configured=configured,
            stopping=lambda: self.board.stopping,
            deliver=lambda delivery: self._apply(self.board.deliver(delivery, _now())),
            session=lambda: self._session,
            moved=self.moved,
            undecodable=metrics.commands.undecodable.inc,
            handed_over=metrics.commands.handed_over.inc,
        )
        self.journal_error: str | None = None
        self._pending: dict[Hashable, Pending] = {}
        self.pickup = Pickup(
            self.journal, me=replicas.me, owns=replicas.owns, alive=replicas.alive, moved=self.moved
        )
        self._consuming: tuple[Any, str] | None = None
        self._taking = True
        self._session = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._timer: asyncio.Task[None] | None = None
        self._journal_log = BurstLog(log, interval=60.0)

    @property
    def consuming(self) -> bool:
        """True while the command queue is being consumed."""
        return self._consuming is not None

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: whether commands are taken, and how many are in hand."""
        return {
            "consuming": self.consuming,
            "journal_error": self.journal_error,
            "in_hand": len(self._pending),
            "open_dispatches": len(self.journal.open_dispatches()),
        }

    # --- from the sockets -------------------------------------------------------------
    def offer(self, subscriber: str, connection: int, event: CallEvent) -> bool:
        """True when ``event`` is the PBX's answer to a command (not a call event)."""
        if not is_pbx_reply(event):
            return False
        refused = pbx_error_message(event) if event.event == "error" else None
        taken, effects = self.board.answer(subscriber, connection, refused, _now())
        if taken and not any(isinstance(e, Answer) for e in effects):
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

    # --- the session ------------------------------------------------------------------
    async def session(self, connection: AbstractConnection) -> None:
        """Session hook: open the journal, declare and consume the queue and pick up
        dispatches until the channel closes. Commands not yet claimed are abandoned when
        it ends (the broker redelivers them); answers owed wait for the next session.
        Raises JournalUnavailable (the session then ends and is retried with backoff)."""
        if self.board.stopping:
            await asyncio.Event().wait()  # shutting down: hold the session, consume nothing
        await self.replicas.wait_assigned()  # roles first: nothing is handed over blindly
        self._ensure_timer()
        self._session += 1
        session = self._session
        link = JournalLink(
            self.journal_queue,
            self.journal,
            self.replicas.me,
            user=self.user,
            on_change=self.moved.fire,
        )
        try:
            await link.open(connection)
        except JournalUnavailable as exc:
            self.journal_error = str(exc)[:300]
            self.metrics.commands.journal_up.set(0)
            self._journal_log(logging.ERROR, "%s; commands wait in the queue", self.journal_error)
            await link.close()
            raise
        self.journal_error = None
        self.metrics.commands.journal_up.set(1)
        self.answers.set_link(link)
        dispatcher: asyncio.Task[None] | None = None
        try:
            await self.settler.catch_up(link)
            channel, raw, queue = await self._declare(connection)
            picking = self.pickup.run(
                lambda: session == self._session and not self.board.stopping,
                partial(self._pick, session),
            )
            dispatcher = asyncio.create_task(picking, name="click2call:pickup")
            if self._taking:  # not once shutting down
                consume = partial(self._delivered, session, raw)
                self._consuming = (raw, (await raw.basic_consume(queue, consume)).consumer_tag)
                log.info("consuming click2call commands", extra={"queue": queue})
            await channel.closed()
        finally:
            self._consuming = None
            if dispatcher is not None:
                dispatcher.cancel()
            self.answers.set_link(None)
            self.metrics.commands.journal_up.set(0)
            await link.close()
            self._apply(self.board.session_lost(session, _now()))

    async def _declare(self, connection: AbstractConnection) -> tuple[Any, Any, str]:
        channel, _ = await declare_queue(connection, self.queue)
        raw = await channel.get_underlay_channel()
        await raw.basic_qos(prefetch_count=PREFETCH)
        return channel, raw, self.queue.name

    async def _delivered(self, session: int, raw: Any, delivered: DeliveredMessage) -> None:
        """aiormq's consumer callback: hand the message to a task of ours (aiormq cancels
        its own tasks when the channel closes; an answer in progress must not be cut)."""
        message = read_message(delivered.delivery, delivered.header, delivered.body)
        pending = self._pending_of(message, session, raw)
        work = self._hold((session, message.delivery_tag), pending, self.handler.handle)
        self._spawn(work, "click2call:command")

    def _pick(self, session: int, dispatch: Dispatch) -> None:
        """Take a command another replica handed to this one (its subscriber's owner)."""
        pending = self._pending_of(dispatched_message(dispatch), session, None)
        pending.dispatch, pending.inherited = dispatch.id, dispatch.holder.token
        pending.settler = dispatch.holder.owner
        self._spawn(self._picked(dispatch, pending), "click2call:dispatched")

    async def _picked(self, dispatch: Dispatch, pending: Pending) -> None:
        try:
            await self._hold(
                ("dispatch", dispatch.id), pending, partial(self.handler.picked, dispatch)
            )
        finally:
            self.pickup.ended(dispatch.id, answered=pending.answered)

    def _pending_of(self, message: CommandMessage, session: int, channel: Any) -> Pending:
        return Pending(
            message,
            session,
            channel,
            started=_now(),
            fields=fields_of(message.body),
            sender=sender_of(message.user_id, message.app_id),
        )

    async def _hold(
        self,
        key: Hashable,
        pending: Pending,
        handle: Callable[[Hashable, Pending], Awaitable[None]],
    ) -> None:
        """Keep ``pending`` in hand from its arrival to its settlement. Cancelled
        (shutdown): what is not settled is left to the broker."""
        self._pending[key] = pending
        try:
            await handle(key, pending)
            await pending.done.wait()
        finally:
            self._pending.pop(key, None)
            if not self._pending:
                self._idle.set()

    async def stop_taking(self) -> None:
        """Consume no more commands (those delivered already go on). Bounded: 1 s."""
        self._taking = False
        consuming, self._consuming = self._consuming, None
        if consuming is not None:
            raw, tag = consuming
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await raw.basic_cancel(tag)

    async def stop(self, timeout: float) -> None:
        """Stop taking commands; the ones being claimed or dialed finish and are answered
        (up to ``timeout`` seconds), the ones waiting their turn go back to the queue."""
        await self.stop_taking()
        self._apply(self.board.stop(_now()))
        self.moved.fire()
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
                while self._pending:
                    self._idle.clear()
                    await self._idle.wait()

    # --- effects ----------------------------------------------------------------------
    def _apply(self, effects: list[Effect]) -> None:
        """Carry out the switchboard's decisions, each in its own task where it waits."""
        for effect in effects:
            try:
                if isinstance(effect, SendAction):
                    self._spawn(self._send(effect), "click2call:send")
                    continue
                pending = self._pending.get(effect.key)
                if pending is None:
                    continue
                if isinstance(effect, Answer):
                    answer = self.handler.answer(
                        pending,
                        effect.outcome,
                        effect.settle,
                        dialed=effect.dialed,
                        pbx_message=effect.pbx_message,
                    )
                    self._spawn(answer, "click2call:answer")
                elif isinstance(effect, SettleMessage):
                    self._spawn(self.settler.settle(pending, effect.how), "click2call:settle")
            except Exception:  # a bug in one effect must not stop the others
                log.exception("click2call effect failed", extra={"effect": type(effect).__name__})
        self._wake.set()

    async def _send(self, effect: SendAction) -> None:
        """Write the action; whatever happens (cancellation included) the switchboard
        hears whether it was written."""
        ok = False
        try:
            sock = self.sockets.get(effect.subscriber)
            if sock is not None and self._still_claimed(effect.key):
                await sock.send(effect.action, effect.conn)
                ok = True
        except NotConnected:
            pass
        except Exception:
            log.exception("sending a click2call action failed")
        finally:
            self._apply(self.board.sent(effect.key, ok, _now()))

    def _still_claimed(self, key: Hashable) -> bool:
        """Dial only under a claim that still stands: another replica may have answered
        for it (it waited past its bound, taking this one for gone)."""
        pending = self._pending.get(key)
        return (
            pending is not None
            and bool(pending.claim)
            and self.journal.is_open(pending.message.identity, pending.claim)
        )

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._tick(), name="click2call:timer")

    async def _tick(self) -> None:
        """Tick the switchboard at its next deadline, and age the journal, until cancelled."""
        while True:
            deadline = self.board.next_deadline()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                timeout = 5.0 if deadline is None else max(0.0, min(5.0, deadline - _now()))
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            try:
                self._apply(self.board.tick(_now()))
                self.journal.expire(_now())
            except Exception:  # keep ticking: timeouts are what frees a line
                log.exception("click2call timer failed")
