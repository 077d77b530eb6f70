"""Which replica owns which subscriber, and who stands by. Pure: clocks passed in.

Replicas that share ``PHONET_EXCHANGE`` on one broker hear each other's heartbeats (see
:mod:`producer.replicas.presence`, which parses them into :class:`Beat`\\ s).
:class:`Membership` keeps who is live — a replica not heard for ``timeout`` seconds is
gone, one that says it is leaving is gone at once — and ranks, for each subscriber, the
live *peers* by rendezvous (highest-random-weight) hashing: the first *owns* it (holds its
socket and publishes its events), the second *stands by* (holds a socket too, keeps a
window of what it receives, publishes nothing). A replica joining or leaving moves only
the subscribers it gains or held: about 1/N.

A **peer** is a replica that must see the same world to share the work with this one:

* the same protocol version and the same settings that must match (the PBX domain, the
  exchange, the command queue, the standby mode: :attr:`Beat.settings` is a digest of
  them) — anything else is *foreign*: a ``demo`` run against a production broker, an
  older release during an upgrade; it is ignored (logged), and each side acts alone;
* the same subscriber list (:attr:`Beat.roster`, a digest): replicas whose lists differ
  (one's discovery failing, one holding a list back) do not rank each other, so every
  subscriber in each list has an owner — duplicates while they disagree, never a
  subscriber that nobody holds.

A replica's **instance** changes when its process restarts: a restart under the same id
(systemd ``Restart=always``, a container keeping its hostname) is a leave and a join —
the peers take over what it owned (publishing their standby windows: what it had not got
confirmed is in them) and hand it back once the new instance is up (see
:meth:`Membership.heard` and :meth:`Membership.restarts_applied`).

:meth:`Membership.assign` turns the ranking into this replica's roles, and
:meth:`Roles.changes` says what changed since the last assignment: the subscribers taken
over (standby → owner: replay the window), the ones handed over (owner → not owner: keep
publishing for a grace period, so a new owner's socket is up first).

Two replicas may disagree for a heartbeat or two (or much longer in a network partition):
then both publish a subscriber's events — duplicates with the same ``message_id``, never a
loss. Nothing here is consensus; it needs none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

PROTOCOL = 2
"""The heartbeat protocol this code speaks (a replica speaking another is foreign)."""


class Role(Enum):
    OWNER = "owner"
    STANDBY = "standby"


def weight(replica: str, subscriber: str) -> bytes:
    """Rendezvous weight of ``replica`` for ``subscriber`` (higher wins)."""
    return hashlib.blake2b(f"{replica}\x00{subscriber}".encode(), digest_size=8).digest()


def ranking(replicas: Iterable[str], subscriber: str) -> list[str]:
    """The replicas, best first, for ``subscriber`` (ties cannot happen in practice; the
    name breaks them)."""
    return sorted(replicas, key=lambda r: (weight(r, subscriber), r), reverse=True)


def owner_in(live: Iterable[str], subscriber: str) -> str:
    """The owner of ``subscriber`` among ``live`` replicas ("" when none is live)."""
    ranked = ranking(live, subscriber)
    return ranked[0] if ranked else ""


def digest(items: Iterable[str]) -> str:
    """A short digest of ``items`` in the given order (a roster, settings, a view)."""
    h = hashlib.blake2b(digest_size=8)
    for item in items:
        h.update(item.encode())
        h.update(b"\x00")
    return h.hexdigest()


@dataclass(frozen=True)
class Down:
    """A stretch in which the owner's socket for ``subscriber`` was down, in wall-clock
    ms; ``until_ms`` None: still down."""

    subscriber: str
    since_ms: int
    until_ms: int | None = None


@dataclass(frozen=True)
class Beat:
    """One heartbeat as heard (see :mod:`producer.replicas.presence` for its wire form)."""

    replica: str
    instance: str
    version: int = PROTOCOL
    settings: str = ""
    roster: str = ""
    view: str = ""
    leaving: bool = False
    warm: bool = True
    down: tuple[Down, ...] = ()
    all_down_since: int | None = None
    """Every subscriber it owns has been down since then (too many to list)."""


@dataclass
class Roles:
    """This replica's role per subscriber (absent: neither owner nor standby)."""

    of: dict[str, Role] = field(default_factory=dict)

    @property
    def owned(self) -> set[str]:
        return {s for s, r in self.of.items() if r is Role.OWNER}

    @property
    def standby(self) -> set[str]:
        return {s for s, r in self.of.items() if r is Role.STANDBY}

    def changes(self, before: Roles) -> tuple[set[str], set[str]]:
        """``(taken_over, handed_over)``: subscribers this replica now owns that it stood by
        for, and subscribers it owned and no longer does."""
        taken = {s for s in self.owned if before.of.get(s) is Role.STANDBY}
        handed = before.owned - self.owned
        return taken, handed


@dataclass
class Peer:
    beat: Beat
    last: float


class Heard(Enum):
    """What a heartbeat changed."""

    NOTHING = "nothing"
    LIVE = "live"  # the live set (or a peer's view or reports) changed
    RESTARTED = "restarted"  # the replica came back as a new instance
    TWIN = "twin"  # another process uses this replica's own id
    FOREIGN = "foreign"  # another protocol or other settings: ignored
    ROSTER = "roster"  # a peer with another subscriber list (ranked apart)


class Membership:
    """The live replicas, as heard. ``me`` is always live (unless it is leaving)."""

    def __init__(
        self,
        me: str,
        timeout: float,
        *,
        instance: str = "",
        settings: str = "",
        interval: float | None = None,
    ) -> None:
        self.me = me
        self.instance = instance
        self.settings = settings
        self.timeout = timeout
        self.interval = interval if interval is not None else timeout / 4
        self.roster = ""
        """The digest of this replica's subscriber list (set by the coordinator)."""
        self.me_leaving = False
        self._peers: dict[str, Peer] = {}
        self._restarted: set[str] = set()

    # --- hearing ----------------------------------------------------------------------
    def heard(self, beat: Beat, now: float) -> Heard:
        """A heartbeat; returns what it changed."""
        if beat.replica == self.me:
            return Heard.TWIN if beat.instance != self.instance else Heard.NOTHING
        if beat.version != PROTOCOL or beat.settings != self.settings:
            return Heard.FOREIGN
        before = self._peers.get(beat.replica)
        if beat.leaving:
            if before is not None and before.beat.instance != beat.instance:
                return Heard.NOTHING  # a late leave of an instance already replaced
            # Out of the ranking at once, but alive (its click2call claims stand) until
            # its heartbeats stop: it still finishes and answers what it dials.
            self._peers[beat.replica] = Peer(beat, now)
            was_ranked = before is not None and not before.beat.leaving
            return Heard.LIVE if was_ranked else Heard.NOTHING
        was_live = before is not None and now - before.last <= self.timeout
        self._peers[beat.replica] = Peer(beat, now)
        if before is not None and before.beat.instance != beat.instance:
            # A restart under the same id: a leave (its share is taken over, its windows
            # published) and then a join, once the coordinator applied the leave.
            self._restarted.add(beat.replica)
            return Heard.RESTARTED
        fresh = not was_live or before is None
        if beat.roster != self.roster and (
            fresh or before is None or before.beat.roster != beat.roster
        ):
            return Heard.ROSTER  # newly seen with another list: ranked apart (and said so)
        if fresh:
            return Heard.LIVE
        assert before is not None
        old = before.beat
        if (old.view, old.warm, old.down, old.all_down_since, old.roster) != (
            beat.view,
            beat.warm,
            beat.down,
            beat.all_down_since,
            beat.roster,
        ):
            return Heard.LIVE
        return Heard.NOTHING

    def restarts_applied(self) -> bool:
        """The coordinator applied roles without the restarted replicas: let their new
        instances join. True when there were some."""
        had = bool(self._restarted)
        self._restarted.clear()
        return had

    # --- questions --------------------------------------------------------------------
    def live(self, now: float) -> frozenset[str]:
        """The peers to rank with (same roster, heard within the timeout, not leaving, not
        held out after a restart), and this replica unless it is leaving."""
        others = {
            r
            for r, p in self._peers.items()
            if now - p.last <= self.timeout
            and not p.beat.leaving
            and p.beat.roster == self.roster
            and r not in self._restarted
        }
        return frozenset(others if self.me_leaving else others | {self.me})

    def heard_any(self, now: float) -> frozenset[str]:
        """Every replica heard within the timeout, whatever its roster (for /readyz)."""
        return frozenset(r for r, p in self._peers.items() if now - p.last <= self.timeout)

    def alive(self, replica: str, instance: str, now: float) -> bool:
        """Whether that instance of ``replica`` is live (a restarted one's old instance
        is not; a leaving one is, until its heartbeats stop)."""
        if replica == self.me:
            return instance == self.instance
        peer = self._peers.get(replica)
        return (
            peer is not None and peer.beat.instance == instance and now - peer.last <= self.timeout
        )

    def warm(self, replica: str, view: str) -> bool:
        """Whether ``replica`` last said its owned sockets were up *and* sees the world as
        this replica does (``view``): only then does it hold what this one handed it. A
        replica no longer heard counts as warm: waiting for it would wait forever."""
        peer = self._peers.get(replica)
        if peer is None:
            return True
        return peer.beat.warm and peer.beat.view == view

    def died(self, replica: str, now: float, wall_ms: int) -> int | None:
        """When (wall clock, ms; ``now`` and ``wall_ms`` are the same instant on both
        clocks) a replica no longer live was last heard, if it vanished rather than left
        (its last beat did not say it was leaving); else None."""
        peer = self._peers.get(replica)
        if peer is None or peer.beat.leaving:
            return None
        return wall_ms - int((now - peer.last) * 1000)

    def beat_of(self, replica: str) -> Beat | None:
        peer = self._peers.get(replica)
        return None if peer is None else peer.beat

    def expire(self, now: float) -> None:
        """Forget replicas not heard for long (keeps the table small)."""
        for replica in [r for r, p in self._peers.items() if now - p.last > 10 * self.timeout]:
            del self._peers[replica]
            self._restarted.discard(replica)

    def assign(self, subscribers: Iterable[str], now: float, *, standby: bool) -> Roles:
        """This replica's roles over ``subscribers`` among the live peers. With one
        replica it owns everything (and stands by for nothing)."""
        live = self.live(now)
        roles = Roles()
        if self.me not in live:
            return roles
        for subscriber in subscribers:
            ranked = ranking(live, subscriber)
            if ranked[0] == self.me:
                roles.of[subscriber] = Role.OWNER
            elif standby and len(ranked) > 1 and ranked[1] == self.me:
                roles.of[subscriber] = Role.STANDBY
        return roles
