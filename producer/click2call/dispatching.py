"""Handing a command to the replica that owns its subscriber, through the journal: what a
dispatch carries of a command, how the owner reads it back as a command, and the owner's
pick-up loop (:class:`Pickup`). The per-command flow on either side is
:mod:`producer.click2call.handling`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from producer.click2call.journal import Dispatch, Journal, Owner
from producer.click2call.message import CommandMessage

POLL = 0.5
"""Seconds between looks for dispatches when the journal is quiet (ownership moves)."""


class Signal:
    """Wakes every waiter when the journal moved (cheaper than one event per waiter)."""

    def __init__(self) -> None:
        self._moved: asyncio.Future[None] | None = None

    def fire(self) -> None:
        if self._moved is not None and not self._moved.done():
            self._moved.set_result(None)
        self._moved = None

    async def wait(self, timeout: float) -> None:
        """Until the next :meth:`fire`, or ``timeout`` seconds."""
        if self._moved is None:
            self._moved = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._moved)


class Pickup:
    """Which open dispatches this replica takes (it owns their subscriber, their holder
    lives), each once at a time: one picked again only when its handling here ended
    without an answer (a lost session, a role that moved)."""

    def __init__(
        self,
        journal: Journal,
        *,
        me: Owner,
        owns: Callable[[str], bool],
        alive: Callable[[Owner], bool],
        moved: Signal,
    ) -> None:
        self.journal = journal
        self.me = me
        self.owns = owns
        self.alive = alive
        self.moved = moved
        self._picked: dict[str, str] = {}
        """Dispatch id → command identity, of those taken here."""
        self._running: set[str] = set()
        """Those still being handled here."""

    async def run(self, going: Callable[[], bool], pick: Callable[[Dispatch], None]) -> None:
        """Call ``pick`` for each dispatch to take, while ``going()`` (and until
        cancelled); looks again whenever the journal moves, and every :data:`POLL` s."""
        while going():
            for dispatch in self.due():
                pick(dispatch)
            await self.moved.wait(POLL)

    def due(self) -> list[Dispatch]:
        """The dispatches to take now (marked taken)."""
        # Forget those the journal no longer lists (answered, voided, expired), unless one
        # is still being handled here.
        self._picked = {
            d: i
            for d, i in self._picked.items()
            if d in self._running or self.journal.dispatch_open(d)
        }
        taking = set(self._picked.values())  # one dispatch of a command at a time
        due = []
        for dispatch in self.journal.open_dispatches():
            holder = dispatch.holder.owner
            if (
                dispatch.id not in self._picked
                and dispatch.identity not in taking
                and self.owns(dispatch.subscriber)
                and (holder == self.me or self.alive(holder))
            ):
                self._picked[dispatch.id] = dispatch.identity
                self._running.add(dispatch.id)
                taking.add(dispatch.identity)
                due.append(dispatch)
        return due

    def ended(self, dispatch: str, answered: bool) -> None:
        """Its handling here ended: kept as taken when it was answered (until the journal
        reads the answer back), else free to be picked again."""
        self._running.discard(dispatch)
        if not answered:
            self._picked.pop(dispatch, None)


def properties(message: CommandMessage) -> dict[str, object]:
    """What a dispatch carries of a command's properties."""
    return {
        "reply_to": message.reply_to,
        "correlation_id": message.correlation_id,
        "message_id": message.message_id,
        "user_id": message.user_id,
        "app_id": message.app_id,
        "timestamp": message.timestamp,
    }


def dispatched_message(dispatch: Dispatch) -> CommandMessage:
    """A dispatched command as if delivered here (never redelivered: it is new here)."""
    p = dispatch.properties

    def text(name: str) -> str | None:
        value = p.get(name)
        return value if isinstance(value, str) else None

    stamp = p.get("timestamp")
    return CommandMessage(
        delivery_tag=0,
        redelivered=False,
        body=dispatch.body,
        message_id=text("message_id"),
        correlation_id=text("correlation_id"),
        reply_to=text("reply_to"),
        user_id=text("user_id"),
        app_id=text("app_id"),
        timestamp=float(stamp) if isinstance(stamp, int | float) else None,
    )
