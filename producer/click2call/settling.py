"""What becomes of a command's message and claim (the adapter side of the journal's rules).

* **settle**: ack, reject or requeue the message on the channel it came on — nothing when
  that channel is gone (the broker delivers it again, and the journal settles the copy);
* **fate**: once an answered message is settled, the journal hears it: *settled* when a
  round trip on its channel came back after the ack or reject (the broker handles a
  channel's commands in order), else *orphaned* (it comes again, redelivered, and that
  delivery is to be settled silently). That is how a redelivery is told from another send
  of the same command;
* **release**: a claim that neither answered nor dialed anything is voided, so no replica
  waits on it.

What cannot be written because the command link is down is written at the next session
(:meth:`Settler.catch_up`). No method raises for a closed channel or a broken link.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from producer.click2call.answers import Answering, Pending
from producer.click2call.effects import Settle
from producer.click2call.journal_link import JournalLink, JournalUnavailable
from producer.telemetry.logs import safe_error

log = logging.getLogger("producer.click2call")


class Settler:
    """Settles messages and voids claims for one producer (every session)."""

    def __init__(self, answers: Answering, *, prefetch: int, session: Callable[[], int]) -> None:
        self.answers = answers
        self.prefetch = prefetch
        self.session = session
        self._unreleased: set[tuple[str, str]] = set()
        """(identity, claim token) of claims maybe written in a broken session, never
        answered: released at the next session."""
        self._fates: list[tuple[str, str, bool]] = []
        """(identity, reply id, settled) not yet written to the journal (link down)."""

    async def settle(self, pending: Pending, how: Settle, reply_id: str = "") -> None:
        """Settle the message (see the module docstring), then let its handler end. An
        answered message (``reply_id``) gets its fate in the journal; a message given
        back unanswered gets its claim released first. A dispatched command's message is
        the holder's to settle: nothing happens here for it."""
        tag = pending.message.delivery_tag
        settled = False
        pending.reply_id = reply_id or pending.reply_id
        try:
            if how in (Settle.REQUEUE, Settle.ABANDON):
                await self.release(pending)
            channel = pending.channel
            if channel is not None and pending.session == self.session():
                if how is Settle.ACK:
                    await channel.basic_ack(tag)
                elif how is Settle.REJECT:
                    await channel.basic_reject(tag, requeue=False)
                elif how is Settle.REQUEUE:
                    await channel.basic_reject(tag, requeue=True)
                if reply_id and how in (Settle.ACK, Settle.REJECT):
                    await channel.basic_qos(prefetch_count=self.prefetch)  # the round trip
                    settled = True
        except Exception as exc:  # a closed channel raises RuntimeError subclasses too
            log.debug("settling a command failed: %s", safe_error(exc))
        finally:
            pending.done.set()
        if reply_id and pending.channel is not None:
            await self.record_fate(pending.message.identity, reply_id, settled)

    async def release(self, pending: Pending) -> None:
        """Void this replica's claim of the command (it answered and dialed nothing)."""
        if not pending.claim:
            return
        void = (pending.message.identity, pending.claim)
        pending.claim = ""
        link = self.answers.link
        if link is None:
            self._unreleased.add(void)
            return
        try:
            await link.release(*void)
        except JournalUnavailable:
            self._unreleased.add(void)

    def unsure(self, identity: str, token: str) -> None:
        """A claim whose write may or may not have reached the broker: voided later."""
        self._unreleased.add((identity, token))

    async def record_fate(self, identity: str, reply_id: str, settled: bool) -> None:
        fate = (identity, reply_id, settled)
        link = self.answers.link
        if link is not None:
            with contextlib.suppress(JournalUnavailable):
                await (link.settled if settled else link.orphaned)(identity, reply_id)
                return
        self._fates.append(fate)

    async def catch_up(self, link: JournalLink) -> None:
        """What a broken session left unsaid: its claims voided, answered messages' fates."""
        for void in list(self._unreleased):
            with contextlib.suppress(JournalUnavailable):
                await link.release(*void)
                self._unreleased.discard(void)
        fates, self._fates = self._fates, []
        for identity, reply_id, settled in fates:
            try:
                await (link.settled if settled else link.orphaned)(identity, reply_id)
            except JournalUnavailable:
                self._fates.append((identity, reply_id, settled))
