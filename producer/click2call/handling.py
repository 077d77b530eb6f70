"""One command, from its delivery to its answer: the journal's decision, the claim, and
where it is dialed (the adapter side of :mod:`producer.click2call.journal`).

For each delivered command (and each command another replica dispatched to this one):

1. the journal is read up to now and asked what to do (:meth:`Handler.take`); whatever is
   to be done — answered, dialed, or settled silently — is *claimed* first, and decided
   again holding the leading claim, so only one delivery of a command is handled at a
   time. It waits while a live replica's claim stands (bounded: past that bound the claim
   counts as a gone replica's);
2. a redelivery of an answered command is settled silently; a retry of a dialed one gets
   its remembered reply; one a gone replica claimed and never answered is answered
   "outcome unknown" — none of them dialed; a command whose properties could not be
   decoded is answered invalid;
3. a fresh command goes to the switchboard when this replica owns its subscriber. Else it
   is **handed over through the journal** (:meth:`Handler.hand_over`): this replica holds
   the message and writes a dispatch; the owner (:meth:`Handler.picked`) answers it, and
   this replica settles the message once it reads that answer. Nothing goes back to the
   queue — a quorum queue would count each return toward its delivery limit, and may hand
   a returned message to the same replicas again and again, never to the owner. A
   dispatch no owner answers is answered here after a bound: ``not connected`` when no
   owner even claimed it, else ``unknown``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Container, Hashable
from typing import Protocol

from producer.click2call.answers import Answering, Pending
from producer.click2call.commands import command_fields, parse_command
from producer.click2call.dispatching import Signal, properties
from producer.click2call.effects import Delivery, Settle
from producer.click2call.journal import Decision, Dispatch, Journal, Owner, Verdict
from producer.click2call.journal_link import JournalUnavailable
from producer.click2call.policy import Policy
from producer.click2call.settings import Click2CallSettings
from producer.click2call.settling import Settler
from producer.core.clock import now as _now
from producer.core.errors import CommandError, InvalidCommand, NotConnected, OutcomeUnknown
from producer.telemetry.logs import BurstLog

log = logging.getLogger("producer.click2call")

POLL = 0.2
"""Seconds between looks while a command waits (on another claim, or for its owner)."""
LAST_WAIT = 60.0
"""Seconds past the wait's bound before a command waiting on this replica's own other
claim (a hand-over in progress) goes back to the queue instead."""


class Replicas(Protocol):
    """What click2call asks the replicas' coordinator (one replica: it owns everything)."""

    @property
    def me(self) -> Owner: ...

    def owns(self, subscriber: str) -> bool: ...

    def alive(self, owner: Owner) -> bool: ...

    async def wait_assigned(self) -> None: ...


class Handler:
    """The per-command flow (see the module docstring)."""

    def __init__(
        self,
        settings: Click2CallSettings,
        journal: Journal,
        answers: Answering,
        settler: Settler,
        replicas: Replicas,
        policy: Policy,
        *,
        configured: Callable[[], Container[str]],
        stopping: Callable[[], bool],
        deliver: Callable[[Delivery], None],
        session: Callable[[], int],
        moved: Signal,
        undecodable: Callable[[], None],
        handed_over: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.answers = answers
        self.settler = settler
        self.replicas = replicas
        self.policy = policy
        self.configured = configured
        self.stopping = stopping
        self.deliver = deliver
        self.session = session
        self.moved = moved
        self.undecodable = undecodable
        self.handed_over = handed_over
        self._undecodable_log = BurstLog(log)

    async def handle(self, key: Hashable, pending: Pending) -> None:
        """Take the command through steps 1–3; returns once it is with the switchboard,
        answered, or settled. Cancelled: what is not settled is left to the broker."""
        message = pending.message
        try:
            decision = await self.take(pending)
        except JournalUnavailable:
            await self.settler.settle(pending, Settle.REQUEUE)  # cannot decide safely: later
            return
        if pending.inherited and not self._still_handed(pending):
            await self.settler.settle(pending, Settle.ABANDON)
            return
        if decision.verdict is Verdict.SILENT:
            # Its answered delivery, back again: settled the same way, no second reply;
            # the journal hears that this orphan is taken before the claim goes.
            assert decision.remembered is not None
            await self.settler.settle(pending, decision.remembered.settle, decision.reply_id)
            await self.settler.release(pending)
        elif message.undecodable:
            self.undecodable()
            names = ",".join(message.undecodable)[:100]
            self._undecodable_log(
                logging.WARNING,
                "a click2call command with undecodable properties (%s): answered invalid, rejected",
                names,
            )
            invalid = InvalidCommand(f"invalid command: property {names} cannot be decoded")
            await self.answer(pending, invalid, Settle.REJECT, dialed=False)
        elif decision.verdict is Verdict.REPEAT:
            assert decision.remembered is not None
            pending.answered = True
            reply_id = await self.answers.repeat(pending, decision.remembered, self._mine(pending))
            await self.settler.settle(pending, Settle.ACK, reply_id)
        elif decision.verdict is Verdict.UNKNOWN:
            error = OutcomeUnknown("already dialed; its outcome is unknown")
            await self.answer(pending, error, Settle.ACK, dialed=True, gone=decision.gone)
        else:
            await self._fresh(key, pending)

    async def answer(
        self,
        pending: Pending,
        outcome: CommandError | None,
        settle: Settle,
        *,
        dialed: bool,
        pbx_message: str | None = None,
        gone: tuple[str, ...] = (),
    ) -> None:
        """Publish the answer (waiting for the command link when it is down), then settle
        the message (the holder's, for a dispatched command)."""
        reply_id = ""
        pending.answered = True
        try:
            reply_id = await self.answers.answer(
                pending,
                outcome,
                dialed=dialed,
                remembered_settle=settle,
                pbx_message=pbx_message,
                concludes=(*gone, *self._mine(pending)),
            )
        except Exception:
            log.exception("answering a click2call command failed")
        await self.settler.settle(pending, settle, reply_id)

    async def take(self, pending: Pending) -> Decision:
        """Step 1 (see the module docstring). Raises JournalUnavailable."""
        message, me = pending.message, self.replicas.me
        given_up: set[Owner] = set()
        transparent = frozenset({pending.inherited} - {""})
        deadline = _now() + 2 * self.settings.phonet_click2call_timeout + 5.0

        def alive(owner: Owner) -> bool:
            return owner == me or (owner not in given_up and self.replicas.alive(owner))

        def decide(holder: str | None) -> Decision:
            return self.journal.decide(
                message.identity,
                redelivered=message.redelivered,
                has_id=message.message_id is not None,
                alive=alive,
                holder=holder,
                transparent=transparent,
            )

        while True:
            link = self.answers.link
            if link is None or pending.session != self.session():
                raise JournalUnavailable("the session ended")
            await link.sync()
            decision = decide(None)
            log.debug(
                "click2call command %s: %s",
                message.identity[:12],
                decision.verdict.value,
                extra={"redelivered": message.redelivered, "dispatch": pending.dispatch},
            )
            if decision.verdict is Verdict.WAIT:
                owner = decision.owner
                if _now() >= deadline and owner is not None and owner != me:
                    given_up.add(owner)  # it never answered: counted as gone
                    continue
                if _now() >= deadline + LAST_WAIT:  # its own claim, held elsewhere here
                    raise JournalUnavailable("the command stays claimed by this replica")
                await self.moved.wait(POLL)
                continue
            pending.claim = token = secrets.token_hex(6)
            try:
                leads = await link.claim(message.identity, token, alive, transparent)
            except JournalUnavailable:
                self.settler.unsure(message.identity, token)
                raise
            if not leads:  # another delivery goes first: this claim is voided
                await self.settler.release(pending)
                await self.moved.wait(POLL)
                continue
            decision = decide(token)
            if decision.verdict is Verdict.WAIT:  # an answered delivery is being settled
                await self.settler.release(pending)
                continue
            return decision

    async def picked(self, dispatch: Dispatch, key: Hashable, pending: Pending) -> None:
        """A command another replica dispatched to this one, the owner: the same flow,
        under the holder's claim; given up when this replica no longer owns it."""
        if not self.replicas.owns(dispatch.subscriber):
            pending.done.set()
            return
        await self.handle(key, pending)

    def _still_handed(self, pending: Pending) -> bool:
        """A dispatch is taken only while it waits for its owner and its holder lives
        (else the holder's message went back to the queue: its next delivery decides)."""
        holder = pending.settler
        return (
            self.journal.dispatch_open(pending.dispatch)
            and holder is not None
            and (holder == self.replicas.me or self.replicas.alive(holder))
        )

    async def _fresh(self, key: Hashable, pending: Pending) -> None:
        subscriber = pending.fields.get("subscriber")
        if (
            isinstance(subscriber, str)
            and subscriber in self.configured()
            and not self.replicas.owns(subscriber)
        ):
            if pending.inherited:  # a dispatch this replica no longer owns: not ours
                await self.settler.release(pending)
                pending.done.set()
            else:
                await self.hand_over(pending, subscriber)
            return
        self.deliver(self.delivery(key, pending, self.fresh_until(pending)))

    async def hand_over(self, pending: Pending, subscriber: str) -> None:
        """Step 3 for another replica's subscriber: dispatch it through the journal and
        hold the message until its answer is read, then settle it as answered."""
        message = pending.message
        link = self.answers.link
        pending.dispatch = dispatch = secrets.token_hex(8)
        try:
            if link is None:
                raise JournalUnavailable("the session ended")
            await link.dispatch(
                message.identity,
                dispatch,
                pending.claim,
                subscriber,
                message.body,
                properties(message),
            )
        except JournalUnavailable:
            await self.settler.settle(pending, Settle.REQUEUE)
            return
        self.handed_over()
        s = self.settings
        deadline = _now() + s.phonet_click2call_connect_wait + 2 * s.phonet_click2call_timeout + 10
        while _now() < deadline:
            reply_id = self.journal.answer_to(dispatch)
            if reply_id is not None:
                remembered = self.journal.reply_of(message.identity)
                how = remembered.settle if remembered is not None else Settle.ACK
                await self.settler.settle(pending, how, reply_id)
                return
            if self.stopping() and not self._taken(pending):
                # Shutting down and no owner took it yet: back to the queue (the release
                # voids the dispatch), rather than hold the shutdown for an owner.
                await self.settler.settle(pending, Settle.REQUEUE)
                return
            await self.moved.wait(POLL)
        await self._unanswered(pending, dispatch)

    async def _unanswered(self, pending: Pending, dispatch: str) -> None:
        """A dispatch nobody answered in time: answered here, under this replica's claim
        — unless its message is no longer this replica's (its session ended: whoever gets
        it again answers it), or the answer came meanwhile."""
        message, link = pending.message, self.answers.link
        if link is None or pending.session != self.session():
            await self.settler.settle(pending, Settle.ABANDON)
            return
        with contextlib.suppress(JournalUnavailable):
            await link.sync()  # an owner's late claim or answer, read before deciding
        reply_id = self.journal.answer_to(dispatch)
        remembered = self.journal.reply_of(message.identity)
        if reply_id is not None:
            how = remembered.settle if remembered is not None else Settle.ACK
            await self.settler.settle(pending, how, reply_id)
            return
        # A claim of its own first: an owner's claim read before it means an owner took
        # the command; one written after it no longer leads (that owner backs off).
        me, token = self.replicas.me, secrets.token_hex(6)
        try:
            leads = await link.claim(
                message.identity,
                token,
                lambda owner: owner == me or self.replicas.alive(owner),
                frozenset({pending.claim}),
            )
        except JournalUnavailable:
            self.settler.unsure(message.identity, token)
            await self.settler.settle(pending, Settle.ABANDON)
            return
        mine = {pending.claim, token}
        claimed = [c.token for c in self.journal.claims(message.identity) if c.token not in mine]
        if claimed or not leads:
            error: CommandError = OutcomeUnknown("already dialed; its outcome is unknown")
            gone = (*claimed, token)
            await self.answer(pending, error, Settle.ACK, dialed=True, gone=gone)
        elif remembered is not None and remembered.dialed:
            # Answered meanwhile under another claim (a retry's): that answer again.
            pending.answered = True
            concludes = (token, *self._mine(pending))
            reply_id = await self.answers.repeat(pending, remembered, concludes)
            await self.settler.settle(pending, Settle.ACK, reply_id)
        else:
            error = NotConnected("not connected")
            await self.answer(pending, error, Settle.REJECT, dialed=False, gone=(token,))

    def _taken(self, pending: Pending) -> bool:
        """Whether another claim than this replica's stands on a handed-over command."""
        identity = pending.message.identity
        return any(c.token != pending.claim for c in self.journal.claims(identity))

    def fresh_until(self, pending: Pending) -> float:
        # Age from the sender's timestamp when it set one, else from when it came.
        born = pending.message.timestamp
        age = 0.0 if born is None else max(0.0, time.time() - born)
        return pending.started + self.settings.phonet_click2call_max_age - age

    def delivery(self, key: Hashable, pending: Pending, fresh_until: float) -> Delivery:
        message, s, now = pending.message, self.settings, _now()
        command = error = None
        try:
            self.policy.check_sender(message.user_id)
            if message.reply_to == s.phonet_click2call_queue:
                # Its reply would come back as a command (and could be dialed): refuse.
                raise InvalidCommand("invalid command: reply_to is the command queue")
            command = parse_command(message.body, self.configured())
            pending.fields = command_fields(command)
            if fresh_until < now:
                # Answered "expired" by the switchboard: it takes no rate token.
                self.policy.check_number(command.number)
            else:
                self.policy.check(command.subscriber, command.number, now)
        except CommandError as exc:
            command, error = None, exc
        return Delivery(
            key=key,
            session=pending.session,
            command=command,
            error=error,
            fresh_until=fresh_until,
        )

    @staticmethod
    def _mine(pending: Pending) -> tuple[str, ...]:
        """The claims an answer of this replica concludes (a dispatch's holder's too); its
        own claim last (see :meth:`Answering.deliver`)."""
        return tuple(c for c in (pending.inherited, pending.claim) if c)
