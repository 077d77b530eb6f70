"""Answering click2call commands: the reply to the caller (with its copy in the journal, one
publish over the command connection), the outcome event on the events exchange, the audit
line and the metrics.

An answer is owed until the broker took it: when the command connection is down, the
reply waits for the next session (:meth:`Answering.wait_link`) and is published then —
unless the journal shows that it did reach the broker before the link went (its reply id
is read back), or that another replica has concluded this replica's claim meanwhile (a
replica that outlived a long cut must not answer twice). A reply the broker keeps refusing
(a caller's queue with ``x-overflow: reject-publish``) is given up after
:data:`REFUSALS` tries, logged, counted, and recorded in the journal alone, so a
redelivery or a retry of that command is still recognised.

Cancellation (shutdown) stops waiting for a link: the command's message was not settled,
so the broker delivers it again and the next replica answers it from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika

from producer.click2call.commands import AnswerParts, answer_parts, outcome_event
from producer.click2call.journal import Journal, Owner, Remembered
from producer.click2call.journal_link import JournalLink, JournalUnavailable, ReplyTo
from producer.click2call.message import CommandMessage
from producer.click2call.policy import mask_number
from producer.core.clock import now as _now
from producer.core.errors import CommandError
from producer.publish.publisher import Publisher
from producer.telemetry.logs import BurstLog
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer.click2call")
audit = logging.getLogger("producer.audit")

REFUSALS = 3
"""Nacks of one reply before it is given up (the pauses between: 0.2 s, 1 s)."""


@dataclass
class Pending:
    """What the adapter keeps of one delivered command until it is answered and settled."""

    message: CommandMessage
    session: int
    channel: Any  # the aiormq channel it came on (settled there, if still open)
    started: float
    fields: dict[str, Any]
    sender: str | None = None
    claim: str = ""
    """The token of this replica's claim of it (written, or maybe written), if any."""
    dispatch: str = ""
    """The dispatch this command came as (its owner answers it), or was handed over as
    (this replica holds its message)."""
    inherited: str = ""
    """For a dispatched command: the holder's claim, which stands for the dispatch."""
    settler: Owner | None = None
    """For a dispatched command: the replica that holds (and settles) its message."""
    reply_id: str = ""
    """The reply that answered it here, once settled."""
    answered: bool = False
    """An answer was attempted here (even one not sent: another replica answered)."""
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Answering:
    """Publishes answers; :attr:`link` is the current session's journal (None between)."""

    def __init__(
        self,
        journal: Journal,
        publisher: Publisher,
        metrics: Metrics,
        *,
        me: Owner,
        exchange: str,
        command_queue: str,
    ) -> None:
        self.journal = journal
        self.publisher = publisher
        self.metrics = metrics
        self.me = me
        self.exchange = exchange
        self.command_queue = command_queue
        self.link: JournalLink | None = None
        self.session: Callable[[], int] = lambda: -1
        """The adapter's current session (set by the adapter)."""
        self._link_changed = asyncio.Event()
        self._refused_log = BurstLog(log, interval=60.0)

    def _holds(self, pending: Pending) -> bool:
        """Whether ``pending``'s own message is held here, in the current session (not a
        dispatched command's: its holder answers; not one that will come back)."""
        return pending.channel is not None and pending.session == self.session()

    def set_link(self, link: JournalLink | None) -> None:
        self.link = link
        self._link_changed.set()

    async def wait_link(self) -> JournalLink:
        """The current session's journal, waiting for one (cancellation propagates)."""
        while self.link is None:
            self._link_changed.clear()
            await self._link_changed.wait()
        return self.link

    async def answer(
        self,
        pending: Pending,
        outcome: CommandError | None,
        *,
        dialed: bool,
        remembered_settle: Any,
        pbx_message: str | None = None,
        concludes: tuple[str, ...] = (),
    ) -> str:
        """Answer ``pending`` (metrics, audit and outcome event at once; the reply once the
        broker takes it). Returns, once published or given up, the reply's id ("" when
        another replica answered meanwhile)."""
        parts = self._parts(pending, outcome, pbx_message)
        latency = _now() - pending.started
        self.metrics.click2call_commands.labels(parts.result).inc()
        if parts.result in ("success", "pbx_error"):
            self.metrics.click2call_latency.observe(latency)
        self.publisher.put(
            outcome_event(
                parts,
                exchange=self.exchange,
                received=pending.started,
                wall_ms=time.time_ns() // 1_000_000,
            )
        )
        self._audit("click2call %s", pending, parts, latency, outcome)
        remembered = Remembered(parts.body, parts.result, dialed, remembered_settle)
        return await self.deliver(pending, parts, remembered, concludes)

    async def repeat(
        self, pending: Pending, remembered: Remembered, concludes: tuple[str, ...]
    ) -> str:
        """A retry of a command already dialed: its remembered reply again, no dial.
        Returns the reply's id."""
        parts = self._parts(pending, None, None)
        parts = AnswerParts(
            remembered.body,
            {**parts.headers, "result": remembered.result},
            remembered.result,
            parts.reply_to,
        )
        self.metrics.commands.repeated.inc()
        self._audit("click2call repeated %s", pending, parts, _now() - pending.started, None)
        return await self.deliver(pending, parts, remembered, concludes)

    def _parts(
        self, pending: Pending, outcome: CommandError | None, pbx_message: str | None
    ) -> AnswerParts:
        """The answer's body, headers and where it goes, for ``pending``'s message."""
        message = pending.message
        return answer_parts(
            pending.fields,
            outcome,
            pbx_message,
            command_queue=self.command_queue,
            reply_to=message.reply_to,
            correlation_id=message.answer_to,
        )

    async def deliver(
        self,
        pending: Pending,
        parts: AnswerParts,
        remembered: Remembered,
        concludes: tuple[str, ...],
    ) -> str:
        """Publish the reply (see the module docstring for when it is given up); returns
        its id, or "" when another replica answered meanwhile. Every try has an id of its
        own: the journal keeps a copy even of a publish the broker nacked (the caller's
        queue refused it, the journal did not), so only a try whose outcome is unknown
        (the link went) may be found to have got through."""
        message = pending.message
        identity = message.identity
        to = ReplyTo(parts.reply_to, message.answer_to)
        refused = 0
        tried: list[str] = []
        unknown: list[str] = []
        while True:
            link = await self.wait_link()
            through = next((r for r in unknown if self.journal.has_reply(identity, r)), None)
            if through is not None:
                return through
            if (
                concludes
                and not self.journal.is_open(identity, concludes[-1])
                and not any(self.journal.has_reply(identity, r) for r in tried)
            ):
                known = self.journal.reply_of(identity)
                if known is None or not self._holds(pending):
                    log.warning("a command's answer came after another one answered it; not sent")
                    return ""
                # Another replica answered another send of it (a retry), giving up on this
                # one's claim, while this send's message is still held here: it gets that
                # answer too (it was not dialed here; the first answer stands).
                parts = AnswerParts(
                    known.body,
                    {**parts.headers, "result": known.result},
                    known.result,
                    parts.reply_to,
                )
                remembered, concludes = known, ()
            reply_id = secrets.token_hex(8)
            tried.append(reply_id)
            try:
                await link.reply(
                    identity,
                    to,
                    parts.body,
                    parts.headers,
                    remembered,
                    concludes,
                    reply_id,
                    dispatch=pending.dispatch,
                    settler=pending.settler,
                )
                return reply_id
            except aio_pika.exceptions.DeliveryError:
                # Refused (by the caller's queue): this try's copy in the journal answered
                # nothing, and its message will not come back because of it.
                with contextlib.suppress(JournalUnavailable):
                    await link.settled(identity, reply_id)
                refused += 1
                if refused >= REFUSALS:
                    self.metrics.commands.replies_refused.inc()
                    self._refused_log(
                        logging.WARNING,
                        "the broker refused a click2call reply %d times (the caller's reply"
                        " queue rejects it): given up, recorded in the journal only",
                        refused,
                    )
                    to = ReplyTo(None, message.answer_to)
                    continue
                await asyncio.sleep(0.2 if refused == 1 else 1.0)
            except JournalUnavailable:
                unknown.append(reply_id)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # the next session, or retry this one
                        self._link_changed.clear()
                        await self._link_changed.wait()

    def _audit(
        self,
        what: str,
        pending: Pending,
        parts: AnswerParts,
        latency: float,
        outcome: CommandError | None,
    ) -> None:
        subscriber = pending.fields.get("subscriber")
        audit.info(
            what,
            parts.result,
            extra={
                "sender": pending.sender,
                "subscriber": subscriber if isinstance(subscriber, str) else None,
                "number": mask_number(pending.fields.get("to")),
                "command_id": pending.fields.get("id"),
                "result": parts.result,
                "latency_ms": round(latency * 1000, 1),
                "detail": None if outcome is None else str(outcome)[:200],
            },
        )
