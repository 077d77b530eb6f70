"""The publish pipeline as a pure state machine: what to send, what is done, what is lost.

Sans-I/O, in the manner of websockets' protocol objects: no sockets, no clock, no asyncio.
The adapter (:mod:`producer.publish.publisher`) feeds it what happened and does what it says.

Every envelope is in exactly one state::

    put ──▶ waiting ──take──▶ in flight (session s) ──acked / returned──▶ done
              ▲                   │  nacked: back to waiting, sending pauses (backoff)
              └── session ended ──┘  (rewound, sent again in order on the next session)

    waiting or in flight ──put while full──▶ dropped (``buffer_full``, handed back)
    in flight ──unencodable, or refused alone by the broker──▶ poisoned (handed back)

Invariants (``tests/unit/producer/publish/test_pipeline.py`` checks them over random interleavings):

* nothing is silently gone: every envelope put is confirmed, handed back as dropped or
  poisoned, or still held;
* no overtaking: an envelope is only sent when every older one is in flight or done, so
  per subscriber a consumer sees them in order, except where a nack or a lost session made
  the broker miss one (it is sent again before anything newer), and except a suspected
  poison message (below), which the others overtake;
* a confirmation counts only for the session it was sent in: callbacks of a dead channel
  that fire late change nothing;
* memory is bounded by count *and* bytes (:func:`producer.core.envelope.footprint`);
* one pause: a nack that counts leaves sending paused (it starts a pause, or falls in
  one), and while a pause lasts nothing at all is sent (see **Nacks**).

What it holds is everything published on the events connection: events, ``invalid.``
frames, click2call outcome events, gaps, and what the REST API filled in (``history``,
``active``). click2call *replies* are not here: they go over the command connection
(:mod:`producer.click2call.answers`), so a caller's queue that refuses them costs the
events nothing.

**Nacks** (a queue full with ``reject-publish``): the message is sent again before anything
newer, after a pause that stops *all* sending — whatever the kind of the message nacked,
for everything held — and doubles per round of nacks up to :data:`NACK_DELAY_MAX`, reset
by the next ack. Nothing is ever dropped for being nacked: the queue's consumer will drain
it, and at-least-once means waiting for that.

**Returns** (:mod:`producer.publish.returns`): a return completes the oldest envelope in
flight with its message id (:meth:`Pipeline.returned`).

**Poison.** A message the broker cannot take must not block the ones behind it. One the
encoder rejects is poisoned at once (:meth:`Pipeline.unencodable`). One the broker refuses
(it closes the channel or connection with an error code, :meth:`Pipeline.end_session` with
``refused=True``) cannot be told from its neighbours in flight, so they all become
*suspects* and the next sessions send them one at a time (probation). A suspect refused
while alone in flight is *deferred*: the others overtake it. It is poisoned when it is
refused alone again after another message was accepted earlier in the same session — so
the channel demonstrably worked and only this message failed. A broker that refuses
everything (bad permissions) thus makes the pipeline retry, never drop; a one-off refusal
(an exchange deleted and declared again) costs a few messages sent one by one; a lone
poison message with nothing behind it waits for the next message to prove the channel.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from producer.core.envelope import Envelope, footprint
from producer.publish.returns import FlightsById

NACK_DELAY_MIN = 0.05
NACK_DELAY_MAX = 5.0


class Journal(Protocol):
    """A durable copy of what is held (see :mod:`producer.publish.spool`). Must not raise."""

    def append(self, envelope: Envelope) -> None: ...

    def remove(self, seq: int) -> None: ...


@dataclass(frozen=True)
class SessionEnd:
    """What :meth:`Pipeline.end_session` did: how many it will resend, which it poisoned."""

    rewound: int
    poisoned: list[Envelope] = field(default_factory=list)


class Pipeline:
    """Bounded, in-order, session-aware publish state. One event loop; not thread-safe.

    ``max_events``/``max_bytes`` bound what is held; ``window`` bounds what is in flight.
    Sequence numbers (``envelope.seq``) are given by :meth:`put` from ``first_seq`` on.
    """

    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int,
        window: int,
        journal: Journal | None = None,
        first_seq: int = 1,
    ) -> None:
        if max_events < 1 or max_bytes < 1 or window < 1:
            raise ValueError("max_events, max_bytes and window must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.window = window
        self.journal = journal
        self.bytes = 0
        self._next_seq = first_seq
        self._pending: dict[int, Envelope] = {}  # insertion order is seq order
        self._fresh: deque[int] = deque()  # never sent, ascending; may hold gone seqs
        self._resend: list[int] = []  # heap of seqs to send again; may hold gone seqs
        self._inflight: dict[int, int] = {}  # seq -> session
        self._flights = FlightsById()  # for returns, which name a message id
        self._session = 0
        self._open = False
        self._last_progress = 0.0
        self._blocked = False
        self._nack_delay = 0.0
        self._paused_until = 0.0
        self._suspects: set[int] = set()
        self._deferred: set[int] = set()
        self._proven = False

    # --- what sockets and the app do --------------------------------------------------
    def put(self, envelope: Envelope, *, journaled: bool = False) -> list[Envelope]:
        """Hold ``envelope`` (it gets the next ``seq``); returns what had to be dropped to
        stay within the bounds, oldest first (``buffer_full``).

        ``journaled``: it came back from the spool, keeps its ``seq`` and is not journaled
        again. Recovered envelopes must be put in ``seq`` order, before any new one.
        """
        size = footprint(envelope)
        if size > self.max_bytes:
            return [envelope]  # larger than the whole budget (configuration prevents it)
        dropped: list[Envelope] = []
        while self._pending and (
            len(self._pending) >= self.max_events or self.bytes + size > self.max_bytes
        ):
            dropped.append(self._drop_oldest())
        if journaled:
            self._next_seq = max(self._next_seq, envelope.seq + 1)
        else:
            envelope.seq = self._next_seq
            self._next_seq += 1
            if self.journal is not None:
                self.journal.append(envelope)
        self._pending[envelope.seq] = envelope
        self.bytes += size
        self._fresh.append(envelope.seq)
        return dropped

    def drop_range(self, first: int, last: int) -> list[Envelope]:
        """Drop every held envelope with ``first <= seq <= last`` (the spool evicted them
        from disk); returns them. They are the oldest, so this walks from the start."""
        doomed = []
        for seq in self._pending:
            if seq > last:
                break
            if seq >= first:
                doomed.append(seq)
        return [self._forget(seq) for seq in doomed]

    def advance_seq(self, next_seq: int) -> None:
        """Never hand out a sequence number below ``next_seq`` (the spool used those)."""
        self._next_seq = max(self._next_seq, next_seq)

    # --- what the publisher does ------------------------------------------------------
    def begin_session(self, now: float) -> int:
        """A channel is ready to publish; returns the session id its results must carry."""
        self._session += 1
        self._open = True
        self._last_progress = now
        self._blocked = False
        self._paused_until = 0.0
        self._nack_delay = 0.0
        self._proven = False  # the proof that the channel works must be this session's
        return self._session

    def take(self, now: float) -> list[Envelope]:
        """What to send now, oldest first; each becomes in flight in the current session.

        Empty when no session is open, while paused after a nack, when the window is full,
        or (probation) while one suspect is in flight.
        """
        if not self._open or now < self._paused_until:
            return []
        if self._suspects:
            if self._inflight:
                return []
            seq = self._next_probe()
            return [] if seq is None else [self._send(seq, now)]
        room = self.window - len(self._inflight)
        batch: list[Envelope] = []
        while room > 0:
            seq = self._pop_waiting()
            if seq is None:
                break
            batch.append(self._send(seq, now))
            room -= 1
        return batch

    def confirmed(self, session: int, seq: int, now: float) -> Envelope | None:
        """The broker acked ``seq``: it is done. Returns it, or None when the result is
        stale (another session), it was dropped, or it was returned already."""
        if self._inflight.get(seq) != session:
            return None
        self._land(seq)
        self._last_progress = now
        self._nack_delay = 0.0
        self._proven = True
        self._suspects.discard(seq)
        self._deferred.discard(seq)
        envelope = self._pending.pop(seq)
        self._done(envelope)
        return envelope

    def returned(self, session: int, message_id: str, now: float) -> Envelope | None:
        """The broker returned ``message_id`` (no queue took it): the oldest envelope in
        flight in ``session`` with that id is done (its ack is then stale); None if none."""
        seq = self._flights.oldest(message_id)
        return None if seq is None else self.confirmed(session, seq, now)

    def nacked(self, session: int, seq: int, now: float) -> bool:
        """The broker nacked ``seq``: send it again before anything newer, after a pause
        of all sending that doubles per round of nacks (a full queue with
        ``reject-publish`` would be hammered otherwise) and resets on the next ack.
        False when stale (another session's result, or the envelope is gone)."""
        if self._inflight.get(seq) != session:
            return False
        self._land(seq)
        self._last_progress = now
        heapq.heappush(self._resend, seq)
        if now >= self._paused_until:  # one step per round, not per message
            self._nack_delay = min(NACK_DELAY_MAX, max(NACK_DELAY_MIN, self._nack_delay * 2))
            self._paused_until = now + self._nack_delay
        return True

    def unencodable(self, session: int, seq: int) -> Envelope | None:
        """The encoder cannot write ``seq`` (it was never sent): poisoned, handed back."""
        if self._inflight.get(seq) != session:
            return None
        return self._forget(seq)

    def end_session(self, session: int, *, refused: bool, now: float) -> SessionEnd:
        """The session's channel or connection is gone; everything in flight is sent again
        on the next one, in order. ``refused``: the broker closed it with an error reply,
        so one of the messages in flight may be poison (see the module docstring)."""
        if session != self._session or not self._open:
            return SessionEnd(0)
        self._open = False
        lost = sorted(seq for seq, s in self._inflight.items() if s == session)
        for seq in lost:
            self._land(seq)
        poisoned: list[Envelope] = []
        if refused and lost:
            alone = lost[0] if len(lost) == 1 and lost[0] in self._suspects else None
            if alone is not None and alone in self._deferred and self._proven:
                poisoned.append(self._forget(alone))  # refused alone twice; others accepted
                lost = []
            elif alone is not None:
                self._deferred.add(alone)
            else:
                self._suspects.update(lost)
            self._proven = False
        for seq in lost:
            heapq.heappush(self._resend, seq)
        return SessionEnd(len(lost), poisoned)

    def set_blocked(self, blocked: bool, now: float) -> None:
        """The broker blocked the connection (a memory or disk alarm), or unblocked it.
        While blocked, missing confirmations are not a stall."""
        if self._blocked and not blocked:
            self._last_progress = now
        self._blocked = blocked

    def stalled(self, now: float, timeout: float) -> bool:
        """Publishes wait and no confirmation came for ``timeout`` seconds, the broker not
        having said it is blocked: the link is dead in a way TCP did not notice."""
        return bool(self._inflight) and not self._blocked and now - self._last_progress > timeout

    def ready_at(self, now: float) -> float | None:
        """When :meth:`take` may give something again, if that depends on time alone."""
        return self._paused_until if now < self._paused_until else None

    # --- state ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Envelope]:
        return iter(self._pending.values())

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def session(self) -> int:
        return self._session

    @property
    def blocked(self) -> bool:
        return self._blocked

    @property
    def suspects(self) -> int:
        """Messages on probation after a broker refusal (sent one at a time)."""
        return len(self._suspects)

    def deferred(self, seq: int) -> bool:
        """Whether ``seq`` is a suspected poison message that others may overtake."""
        return seq in self._deferred

    @property
    def oldest_seq(self) -> int:
        """The oldest held sequence number, or the next one when nothing is held."""
        return next(iter(self._pending), self._next_seq)

    # --- internals --------------------------------------------------------------------
    def _send(self, seq: int, now: float) -> Envelope:
        if not self._inflight:
            self._last_progress = now  # the stall clock starts with the first in flight
        self._inflight[seq] = self._session
        envelope = self._pending[seq]
        self._flights.sent(envelope.message_id, seq)
        return envelope

    def _land(self, seq: int) -> None:
        """``seq`` is no longer in flight (answered, lost with its session, or dropped)."""
        del self._inflight[seq]
        self._flights.landed(self._pending[seq].message_id, seq)

    def _waiting(self, seq: int) -> bool:
        return seq in self._pending and seq not in self._inflight

    def _pop_waiting(self) -> int | None:
        """The oldest waiting seq, removed from its queue; None when nothing waits."""
        fresh, resend = self._fresh, self._resend
        while resend and not self._waiting(resend[0]):
            heapq.heappop(resend)
        while fresh and not self._waiting(fresh[0]):
            fresh.popleft()
        if resend and (not fresh or resend[0] < fresh[0]):
            return heapq.heappop(resend)
        if fresh:
            return fresh.popleft()
        return None

    def _next_probe(self) -> int | None:
        """On probation: the oldest waiting message that is not deferred, else (nothing
        else to try) the oldest deferred one."""
        held: list[int] = []
        chosen = None
        while (seq := self._pop_waiting()) is not None:
            if seq in self._deferred and not self._proven:
                held.append(seq)
                continue
            chosen = seq
            break
        if chosen is None and held:
            chosen, held = held[0], held[1:]
        for seq in held:
            heapq.heappush(self._resend, seq)
        return chosen

    def _drop_oldest(self) -> Envelope:
        seq = self._pop_waiting()
        if seq is None:  # everything held is in flight: the bound is the bound
            seq = min(self._inflight)
        return self._forget(seq)

    def _forget(self, seq: int) -> Envelope:
        if seq in self._inflight:
            self._land(seq)
        self._suspects.discard(seq)
        self._deferred.discard(seq)
        envelope = self._pending.pop(seq)
        self._done(envelope)
        return envelope

    def _done(self, envelope: Envelope) -> None:
        self.bytes -= footprint(envelope)
        if self.journal is not None:
            self.journal.remove(envelope.seq)
