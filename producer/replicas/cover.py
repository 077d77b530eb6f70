"""When the owner's own socket is down, its standby covers for it. Pure: clocks passed in.

The PBX sends each event to every socket of the employee. When the owner's socket for a
subscriber drops (a PBX hiccup, a network cut between that replica and the PBX, a
reconnect) the events of that moment reach only the standby's socket — and the standby
publishes nothing. So the owner says so in its heartbeat (:class:`DownBook`, at most a
heartbeat late), and the standby (:class:`Cover`):

* while the owner's socket is down, publishes that subscriber's events itself, and first
  what its window received since the owner's socket went down (a margin before);
* once the owner's socket is back (the heartbeat reports the stretch as ended), publishes
  what its window received during that stretch, if it did not already, and stops.

A stretch that begins around the death of a replica (noticed up to ``lookback_ms`` before
or after) is replayed from before that death instead: the new owner's socket is down
because it just took the subscriber over, and the replica that was publishing it until then
(the old owner, or one handing it over) may have died with events unconfirmed.

Copies carry the same ``message_id``: duplicates around the drop, never a loss — as long as
the standby's socket was up meanwhile (if both were down, the events are gone upstream,
and the owner's ``gap.*`` message says so). ``since`` of a silent link death already goes
back a keepalive period (see :mod:`producer.subscribers.gaps`).

Memory: :class:`DownBook` keeps one entry (about 30 bytes) per owned subscriber whose socket
is down or was just back, and forgets every subscriber this replica no longer owns;
:class:`Cover` one per standby subscriber its owner reports down.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from producer.replicas.membership import Down, ranking

MARGIN_MS = 1000
"""Replays start this much before the owner's socket went down (clocks differ)."""
REPORT_BEATS = 3
"""Heartbeats that repeat a stretch that ended (a heartbeat may be lost)."""
MAX_REPORTED = 500


@dataclass
class DownBook:
    """The owner's side: which of its subscribers' sockets are down or were just down."""

    _open: dict[str, int] = field(default_factory=dict)
    _ended: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    """subscriber → (since, until, heartbeats left to repeat it)."""

    def down(self, subscriber: str, since_ms: int) -> None:
        self._open.setdefault(subscriber, since_ms)
        self._ended.pop(subscriber, None)

    def up(self, subscriber: str, now_ms: int) -> None:
        since = self._open.pop(subscriber, None)
        if since is not None:
            self._ended[subscriber] = (since, now_ms, REPORT_BEATS)

    def forget(self, subscriber: str) -> None:
        """No longer owned: not this replica's to report."""
        self._open.pop(subscriber, None)
        self._ended.pop(subscriber, None)

    def keep_only(self, owned: set[str] | frozenset[str]) -> None:
        """Forget every subscriber not in ``owned`` (removed from the list, or handed
        over): a stale entry would ride in every heartbeat, and past
        :data:`MAX_REPORTED` make the standbys cover everything."""
        for subscriber in (self._open.keys() | self._ended.keys()) - owned:
            self.forget(subscriber)

    def report(self) -> tuple[tuple[Down, ...], int | None]:
        """What the next heartbeat says: the stretches (open ones, then ended ones still to
        be repeated), or — past :data:`MAX_REPORTED` — ``all down since``. Each call
        counts as one heartbeat for the ended ones."""
        downs = [Down(s, since) for s, since in self._open.items()]
        for subscriber, (since, until, left) in list(self._ended.items()):
            downs.append(Down(subscriber, since, until))
            if left <= 1:
                del self._ended[subscriber]
            else:
                self._ended[subscriber] = (since, until, left - 1)
        if len(downs) > MAX_REPORTED:
            return (), min(d.since_ms for d in downs)
        return tuple(downs), None

    def __len__(self) -> int:
        return len(self._open)


@dataclass(frozen=True)
class Replay:
    """Publish what the window holds of ``subscriber`` in ``[from_ms, to_ms]``."""

    subscriber: str
    from_ms: int
    to_ms: int | None


@dataclass
class Cover:
    """The standby's side: which subscribers it covers for their owners, and what to
    replay. ``covering`` maps subscriber → owner."""

    lookback_ms: int = 0
    """How far before its last heartbeat a vanished replica's unconfirmed events go."""
    covering: dict[str, str] = field(default_factory=dict)
    _gone_ms: int | None = None
    """When a replica was last noticed gone (wall clock, ms)."""
    _done: dict[tuple[str, int], int] = field(default_factory=dict)
    """(subscriber, since) → the end already replayed up to (a stretch is replayed once)."""

    def heard(
        self,
        owner: str,
        downs: Iterable[Down],
        all_down_since: int | None,
        standby_for: Iterable[str],
        now_ms: int,
    ) -> list[Replay]:
        """An owner's heartbeat; ``standby_for`` are the subscribers this replica stands
        by for with that owner. Returns the replays to publish now."""
        mine = dict.fromkeys(standby_for)  # ordered: replays come in a stable order
        replays: list[Replay] = []
        reported: dict[str, Down] = {}
        if all_down_since is not None:
            reported = {s: Down(s, all_down_since) for s in mine}
        for down in downs:
            if down.subscriber in mine:
                reported[down.subscriber] = down
        for subscriber, down in reported.items():
            key = (subscriber, down.since_ms)
            start = down.since_ms - MARGIN_MS
            gone = self._gone_ms
            if gone is not None and down.since_ms - gone <= self.lookback_ms:
                start = min(start, gone - self.lookback_ms)
            if down.until_ms is None:
                if self.covering.get(subscriber) != owner:
                    self.covering[subscriber] = owner
                    replays.append(Replay(subscriber, start, None))
                    self._done[key] = now_ms
            else:
                end = down.until_ms + MARGIN_MS
                done = self._done.get(key)
                if done is None:
                    replays.append(Replay(subscriber, start, end))
                elif done < end:
                    replays.append(Replay(subscriber, done + 1, end))
                self._done[key] = max(end, done or 0)
                if self.covering.get(subscriber) == owner:
                    del self.covering[subscriber]
        for subscriber in [s for s, o in self.covering.items() if o == owner and s not in reported]:
            del self.covering[subscriber]  # its report ended without being heard
        if len(self._done) > 4 * MAX_REPORTED:
            for key in sorted(self._done, key=self._done.__getitem__)[: len(self._done) // 2]:
                del self._done[key]
        return replays

    def gone(self, owner: str, died_ms: int | None) -> None:
        """A replica is gone (a takeover follows): stop covering for it. ``died_ms``:
        when it was last heard, if it vanished (None: it left): a stretch that begins
        around then is replayed from before it."""
        if died_ms is not None:
            self._gone_ms = died_ms
        for subscriber in [s for s, o in self.covering.items() if o == owner]:
            del self.covering[subscriber]

    def forget(self, subscriber: str) -> None:
        self.covering.pop(subscriber, None)


def orphaned_by(died: Set[str], views: Iterable[Set[str]], kept: Iterable[str]) -> list[str]:
    """Of the subscribers this replica keeps a window of (``kept``: stood by for, or
    stepping down from, and not taken over), those whose owner ``died`` (vanished, not
    left) in any of ``views``: the live replicas before this change, and before the one
    before — an owner that dies while it hands a subscriber over (the new owner only just
    joined) was its owner one view ago, and the fault suite lost what reached only it.
    Their windows are published since shortly before the death: the new owner replays its
    own window, but it may have opened its socket only just now, and what reached only
    this replica's socket would be lost."""
    if not died:
        return []
    return [
        s
        for s in sorted(kept)
        if any((ranked := ranking(view, s)) and ranked[0] in died for view in views)
    ]
