"""The calls recently seen to end on each socket, kept compactly and only while a backfill
could need them. Pure: clocks passed in.

A backfill publishes the finished calls of a gap's window that the socket did not deliver,
so it asks "did this call's ``call.hangup`` come on the socket?" for calls that ended in the
window: from a margin before the gap (the socket was up then) to a margin after it, read
up to ``max(RETRY_AFTER)`` after the gap ended. The answer is needed only for calls that
ended within :attr:`SeenEnds.hold_ms` of a clock that **stops while the socket is down or a
backfill job of the subscriber is pending** (:meth:`SeenEnds.pin`): a gap of three hours
still needs what was seen just before it, and a job's reads may come late (a mass
reconnect, a failing REST API). Older entries are dropped; so are the oldest past
``per_subscriber`` (a bound for a busy line).

Memory: an entry is 12 bytes (a 64-bit digest of the uuid, enough for "seen": a false
match, one in 2^64 per pair, would leave out one history record; and a 32-bit stamp in
milliseconds from the record's base), plus about 250 bytes per subscriber that saw a call
end within the hold: at most ``per_subscriber`` × 12 + 250 bytes (1.8 KB at 128) per
subscriber, and in steady traffic (a call every few minutes) about 300 bytes. Subscribers
with nothing recent cost nothing.

The clock is the wall clock: should it jump forward by more than the hold while no job is
pending, a call seen just before the jump may be published again by a later backfill — a
copy, never a loss.
"""

from __future__ import annotations

import hashlib
from array import array

PER_SUBSCRIBER = 128
"""Past this many within the hold (a line ending a call every 6 s for 12 minutes: more than
one person answers it) the oldest go: a backfill might then publish one of them again,
never lose one. The bound that keeps 10,000 subscribers' worst case under 20 MB."""
_REBASE_AT = 2**31 - 2**24
"""A record's stamps are int32 milliseconds from its base (24 days): rebased before that."""
SWEEP_EVERY_MS = 60_000
"""How often (wall time, on a hangup) every subscriber's entries are pruned, so that the
ones that stopped calling give their memory back."""


def uuid_digest(uuid: str) -> int:
    """64 bits of the call's uuid (signed, to fit ``array('q')``)."""
    raw = hashlib.blake2b(uuid.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little", signed=True)


class _Seen:
    """One subscriber's entries, oldest first, stamped on a clock that stops while its
    socket is down or a backfill job of it is pending."""

    __slots__ = ("base", "digests", "down", "frozen_at", "paused_ms", "pins", "stamps")

    def __init__(self, base: int) -> None:
        self.base = base
        self.stamps = array("i")
        """Milliseconds of the clock from ``base``, oldest first."""
        self.digests = array("q")
        self.paused_ms = 0
        """Time the clock was stopped since this record began."""
        self.frozen_at: int | None = None
        self.down = False
        self.pins = 0

    def clock(self, wall_ms: int) -> int:
        """The record's clock, in milliseconds from its base."""
        now = (wall_ms if self.frozen_at is None else self.frozen_at) - self.paused_ms
        rel = now - self.base
        if rel > _REBASE_AT:  # a record alive for weeks: move the base, keep the order
            shift = rel - (1 << 24)
            self.base += shift
            self.stamps = array("i", (max(-(2**31), x - shift) for x in self.stamps))
            rel -= shift
        return rel

    def refreeze(self, wall_ms: int) -> None:
        """Stop or restart the clock as ``down`` and ``pins`` now say."""
        frozen = self.down or self.pins > 0
        if frozen and self.frozen_at is None:
            self.frozen_at = wall_ms
        elif not frozen and self.frozen_at is not None:
            self.paused_ms += max(0, wall_ms - self.frozen_at)
            self.frozen_at = None

    @property
    def idle(self) -> bool:
        """Nothing held and the clock running: the record can go."""
        return not self.stamps and self.frozen_at is None

    def prune(self, now: int, hold_ms: int, keep: int) -> None:
        stamps = self.stamps
        drop = 0
        while drop < len(stamps) and now - stamps[drop] > hold_ms:
            drop += 1
        drop = max(drop, len(stamps) - keep)
        if drop:
            del stamps[:drop]
            del self.digests[:drop]


class SeenEnds:
    """Per subscriber: digests of the calls seen to end within ``hold_ms`` of up-time."""

    def __init__(self, hold_ms: int, per_subscriber: int = PER_SUBSCRIBER) -> None:
        self.hold_ms = hold_ms
        self.per_subscriber = per_subscriber
        self._of: dict[str, _Seen] = {}
        self._swept_ms: int | None = None

    def add(self, subscriber: str, uuid: str, wall_ms: int) -> None:
        """A ``call.hangup`` with this uuid arrived on the socket at ``wall_ms``."""
        if self._swept_ms is None or wall_ms - self._swept_ms >= SWEEP_EVERY_MS:
            self.sweep(wall_ms)
        seen = self._of.get(subscriber)
        if seen is None:
            seen = self._of[subscriber] = _Seen(wall_ms)
        digest = uuid_digest(uuid)
        now = seen.clock(wall_ms)
        seen.prune(now, self.hold_ms, self.per_subscriber)
        if digest not in seen.digests:
            seen.stamps.append(now)
            seen.digests.append(digest)
            seen.prune(now, self.hold_ms, self.per_subscriber)

    def contains(self, subscriber: str, uuid: str) -> bool:
        seen = self._of.get(subscriber)
        return seen is not None and uuid_digest(uuid) in seen.digests

    def down(self, subscriber: str, wall_ms: int) -> None:
        """The socket went down: its entries stop ageing until it is back."""
        seen = self._of.get(subscriber)
        if seen is not None:
            seen.down = True
            seen.refreeze(wall_ms)

    def up(self, subscriber: str, wall_ms: int) -> None:
        seen = self._of.get(subscriber)
        if seen is not None:
            seen.down = False
            seen.refreeze(wall_ms)

    def pin(self, subscriber: str, wall_ms: int) -> None:
        """A backfill job of ``subscriber`` is pending: nothing ages until the matching
        :meth:`unpin` (one per pin; the count bound still applies)."""
        seen = self._of.get(subscriber)
        if seen is None:
            seen = self._of[subscriber] = _Seen(wall_ms)
        seen.pins += 1
        seen.refreeze(wall_ms)

    def unpin(self, subscriber: str, wall_ms: int) -> None:
        seen = self._of.get(subscriber)
        if seen is not None and seen.pins > 0:
            seen.pins -= 1
            seen.refreeze(wall_ms)

    def forget(self, subscriber: str) -> None:
        self._of.pop(subscriber, None)

    def sweep(self, wall_ms: int) -> None:
        """Prune every subscriber; drop the records left empty."""
        self._swept_ms = wall_ms
        for subscriber, seen in list(self._of.items()):
            seen.prune(seen.clock(wall_ms), self.hold_ms, self.per_subscriber)
            if seen.idle:
                del self._of[subscriber]

    def __len__(self) -> int:
        """Entries held over all subscribers."""
        return sum(len(seen.stamps) for seen in self._of.values())

    @property
    def subscribers(self) -> int:
        return len(self._of)
