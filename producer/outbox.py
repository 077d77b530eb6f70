"""The outbox: a bounded, in-order buffer of envelopes not yet confirmed by the broker.

Sockets :meth:`Outbox.put` envelopes as frames arrive; the publisher :meth:`Outbox.take`s
them in order, and reports each one :meth:`confirmed <Outbox.confirm>`, to
:meth:`retry <Outbox.retry>` (nack) or, when the connection is lost, :meth:`rewinds
<Outbox.rewind>` everything in flight so it is sent again in order on the next
connection. An envelope leaves the outbox only when confirmed or dropped, so a broker
outage loses nothing while the buffer has room.

When full, :meth:`put` drops the oldest envelope that is not in flight (the oldest waiting
one) and reports it to ``on_drop`` with the reason ``buffer_full``. No I/O here; an
optional :class:`Journal` (the disk spool) is told of every append and removal so it can
survive a crash.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from producer.envelope import Envelope


class Journal(Protocol):
    """What the outbox tells a durable store (see :mod:`producer.spool`)."""

    def append(self, envelope: Envelope) -> None: ...

    def remove(self, seq: int) -> None: ...


class Outbox:
    """Bounded in-order buffer. Single event loop; not thread-safe."""

    def __init__(
        self,
        capacity: int,
        *,
        on_drop: Callable[[Envelope, str], None] | None = None,
        journal: Journal | None = None,
        first_seq: int = 1,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._on_drop = on_drop
        self._journal = journal
        self._next_seq = first_seq
        self._pending: dict[int, Envelope] = {}
        self._waiting: deque[int] = deque()  # seqs to send, ascending; may hold stale seqs
        self._inflight: set[int] = set()
        self._retries: list[int] = []
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    # --- producers --------------------------------------------------------------------
    def put(self, envelope: Envelope, *, journaled: bool = False) -> None:
        """Append ``envelope`` (gives it the next ``seq``); drops the oldest when full.

        ``journaled`` means the envelope came back from the spool: it keeps its ``seq``
        and is not written again.
        """
        if len(self._pending) >= self.capacity:
            self._drop_oldest()
        if journaled:
            self._next_seq = max(self._next_seq, envelope.seq + 1)
        else:
            envelope.seq = self._next_seq
            self._next_seq += 1
            if self._journal is not None:
                self._journal.append(envelope)
        self._pending[envelope.seq] = envelope
        self._waiting.append(envelope.seq)
        self._ready.set()
        self._empty.clear()

    def _drop_oldest(self) -> None:
        self._merge_retries()
        while self._waiting:
            seq = self._waiting.popleft()
            if seq in self._pending and seq not in self._inflight:
                self._remove(seq, dropped="buffer_full")
                return
        # Everything is in flight: drop the oldest anyway, the bound is the bound.
        seq = next(iter(self._pending))
        self._inflight.discard(seq)
        self._remove(seq, dropped="buffer_full")

    def drop_range(self, first: int, last: int, reason: str) -> int:
        """Drop every pending envelope with ``first <= seq <= last`` (the spool evicted
        them); returns how many. They are the oldest, so this walks from the start."""
        doomed = []
        for seq in self._pending:
            if seq > last:
                break
            if seq >= first:
                doomed.append(seq)
        for seq in doomed:
            self._inflight.discard(seq)
            self._remove(seq, dropped=reason)
        return len(doomed)

    def advance_seq(self, next_seq: int) -> None:
        """Never hand out a sequence number below ``next_seq`` (the spool used those)."""
        self._next_seq = max(self._next_seq, next_seq)

    @property
    def oldest_seq(self) -> int:
        """The oldest pending sequence number, or the next one when nothing is pending."""
        return next(iter(self._pending), self._next_seq)

    def _remove(self, seq: int, *, dropped: str | None) -> Envelope | None:
        envelope = self._pending.pop(seq, None)
        if envelope is None:
            return None
        if self._journal is not None:
            self._journal.remove(seq)
        if dropped is not None and self._on_drop is not None:
            self._on_drop(envelope, dropped)
        if not self._pending:
            self._empty.set()
            self._ready.clear()
        return envelope

    # --- the publisher ----------------------------------------------------------------
    def take(self, limit: int) -> list[Envelope]:
        """Up to ``limit`` envelopes to send now, oldest first; they become in flight."""
        self._merge_retries()
        batch: list[Envelope] = []
        waiting, pending, inflight = self._waiting, self._pending, self._inflight
        while waiting and len(batch) < limit:
            seq = waiting.popleft()
            envelope = pending.get(seq)
            if envelope is None or seq in inflight:
                continue
            inflight.add(seq)
            batch.append(envelope)
        if not waiting:
            self._ready.clear()
        return batch

    def confirm(self, envelope: Envelope) -> bool:
        """The broker confirmed (or returned) it: forget it. False if it was dropped meanwhile."""
        self._inflight.discard(envelope.seq)
        return self._remove(envelope.seq, dropped=None) is not None

    def retry(self, envelope: Envelope) -> None:
        """The broker nacked it: send it again, before newer envelopes."""
        if envelope.seq in self._inflight:
            self._inflight.discard(envelope.seq)
            if envelope.seq in self._pending:
                self._retries.append(envelope.seq)
                self._ready.set()

    def rewind(self) -> int:
        """The connection is gone: everything in flight is to be sent again. Returns how many."""
        count = len(self._inflight)
        self._retries.extend(self._inflight)
        self._inflight.clear()
        self._merge_retries()
        if self._waiting:
            self._ready.set()
        return count

    def _merge_retries(self) -> None:
        if self._retries:
            retries = sorted(set(self._retries))
            self._retries.clear()
            self._waiting.extendleft(reversed(retries))

    # --- state ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pending)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def wait_ready(self) -> None:
        """Wait until something can be taken. Cancellation leaves the outbox unchanged."""
        while not (self._waiting or self._retries):
            self._ready.clear()
            await self._ready.wait()

    async def wait_empty(self) -> None:
        """Wait until every envelope is confirmed or dropped (callers bound it with a
        timeout). Cancellation leaves the outbox unchanged."""
        await self._empty.wait()
