"""What a standby replica keeps of the events it receives: a bounded window. Pure.

A standby holds a socket for the subscriber and reads every event the owner reads, but
publishes nothing. It keeps the last ``seconds`` of them; when it takes over, it publishes
the window — whatever the dead owner had not got confirmed is in it (an owner confirms
within milliseconds, a publish timeout at worst), and what it had confirmed comes again
with the same ``message_id``: duplicates around the takeover only, never a loss as long as
the window is longer than the owner's unconfirmed tail. When the owner reports that its
own socket was down for a while, the standby publishes what it received meanwhile
(:meth:`StandbyWindow.between`).

Bounds: time (``seconds``), count per subscriber (``max_events``) and **bytes over all
subscribers** (``max_bytes``, the envelopes' :func:`~producer.core.envelope.footprint`): large
frames on many standby subscribers cannot take a pod past its memory limit. Past a bound
the oldest events go first, counted in :attr:`StandbyWindow.dropped` (a takeover right
then could miss them, so the coordinator logs and exposes it).

Memory: what :attr:`StandbyWindow.bytes` counts (an envelope's footprint, its body plus
:data:`~producer.core.envelope.ENVELOPE_OVERHEAD`), plus about 100 bytes per subscriber with
something held and 64 bytes per entry of the push order. The push order drops envelopes as
they age out of the window everywhere, and is rebuilt when more than half of it, or a
quarter of the byte bound, is gone (a takeover, a subscriber no longer held): what it keeps
alive stays under 1.25 times the bound.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from producer.core.envelope import Envelope, footprint


@dataclass
class StandbyWindow:
    seconds: float
    max_events: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    _held: dict[str, deque[Envelope]] = field(default_factory=dict)
    _order: deque[tuple[str, Envelope]] = field(default_factory=deque)
    """Every envelope pushed, in push order, for evicting the oldest by bytes; entries
    already gone from ``_held`` are skipped (and compacted away now and then)."""
    bytes: int = 0
    count: int = 0
    dropped: int = 0
    stale: int = 0
    """Bytes of envelopes gone from ``_held`` that the push order still references."""

    def push(self, subscriber: str, envelope: Envelope, now: float) -> None:
        """Keep ``envelope`` (``envelope.received`` is its monotonic receive time)."""
        held = self._held.get(subscriber)
        if held is None:
            held = self._held[subscriber] = deque()
        held.append(envelope)
        self._order.append((subscriber, envelope))
        self.bytes += footprint(envelope)
        self.count += 1
        self._age(now)
        self._trim(held, now)
        while len(held) > self.max_events:
            self._pop(held)
            self.dropped += 1
        while self.bytes > self.max_bytes and self._order:
            if self._drop_oldest():
                self.dropped += 1
        self._maybe_compact()

    def take(self, subscriber: str, now: float) -> list[Envelope]:
        """The window's events, oldest first, for a takeover (the window is emptied)."""
        held = self._held.pop(subscriber, None)
        if held is None:
            return []
        self._trim(held, now)
        self._gone(held)
        self._maybe_compact()
        return list(held)

    def between(self, subscriber: str, from_ms: int, to_ms: int | None) -> list[Envelope]:
        """The events received (wall clock, ``received_at_ms``) in ``[from_ms, to_ms]``
        (``to_ms`` None: up to now), oldest first; they stay in the window."""
        held = self._held.get(subscriber, ())
        out = []
        for envelope in held:
            at = envelope.headers.get("received_at_ms")
            if isinstance(at, int) and at >= from_ms and (to_ms is None or at <= to_ms):
                out.append(envelope)
        return out

    def forget(self, subscriber: str) -> None:
        held = self._held.pop(subscriber, None)
        if held is not None:
            self._gone(held)
            self._maybe_compact()

    def expire(self, now: float) -> None:
        """Drop what is older than the window everywhere (called now and then)."""
        self._age(now)
        for subscriber, held in list(self._held.items()):
            self._trim(held, now)
            if not held:
                del self._held[subscriber]
        self._maybe_compact()

    def __len__(self) -> int:
        return self.count

    @property
    def order_entries(self) -> int:
        """Entries of the push order (held, or gone and not yet dropped from it)."""
        return len(self._order)

    def _age(self, now: float) -> None:
        """Drop from the push order (and from its subscriber, if still held) what is
        older than the window: the oldest envelopes are at its front."""
        order = self._order
        while order and now - order[0][1].received > self.seconds:
            self._drop_oldest()

    def _drop_oldest(self) -> bool:
        """Drop the push order's first entry, and its envelope from its subscriber when
        still held (True then)."""
        owner, oldest = self._order.popleft()
        first = self._held.get(owner)
        if first and first[0] is oldest:
            first.popleft()
            self.bytes -= footprint(oldest)
            self.count -= 1
            return True
        self.stale -= footprint(oldest)
        return False

    def _maybe_compact(self) -> None:
        # Entries for envelopes already gone keep them alive: rebuild once they are as
        # many as the live ones, or hold a quarter of the byte bound.
        if len(self._order) > 2 * self.count + 64 or self.stale > self.max_bytes // 4:
            self._compact()

    def _trim(self, held: deque[Envelope], now: float) -> None:
        while held and now - held[0].received > self.seconds:
            self._pop(held)

    def _pop(self, held: deque[Envelope]) -> None:
        self._gone((held.popleft(),))

    def _gone(self, envelopes: deque[Envelope] | tuple[Envelope, ...]) -> None:
        for envelope in envelopes:
            size = footprint(envelope)
            self.bytes -= size
            self.stale += size  # the push order still holds it
            self.count -= 1

    def _compact(self) -> None:
        """Rebuild the push order from what is held (each subscriber's events are in
        receive order; merged by receive time)."""
        streams = [
            [(e.received, i, s, e) for e in held] for i, (s, held) in enumerate(self._held.items())
        ]
        self._order = deque((s, e) for _, _, s, e in heapq.merge(*streams))
        self.stale = 0
