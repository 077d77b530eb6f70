"""Which replica owns which subscriber, and who stands by. Pure: clocks passed in.

Replicas that share ``PHONET_EXCHANGE`` on one broker hear each other's heartbeats (see
:mod:`producer.replicas.presence`); :class:`Membership` keeps the live set — a replica not
heard for ``timeout`` seconds is gone, one that says it is leaving is gone at once — and
ranks, for each subscriber, the live replicas by rendezvous (highest-random-weight)
hashing: the first *owns* it (holds its socket and publishes its events), the second
*stands by* (holds a socket too, keeps a window of what it receives, publishes nothing).
A replica joining or leaving moves only the subscribers it gains or held: about 1/N.

:meth:`Membership.assign` turns the ranking into this replica's roles, and
:class:`Roles.changes` says what changed since the last assignment: the subscribers taken
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


class Membership:
    """The live replicas, as heard. ``me`` is always live (unless it is leaving)."""

    def __init__(self, me: str, timeout: float) -> None:
        self.me = me
        self.timeout = timeout
        self._last: dict[str, float] = {}
        self._warm: dict[str, bool] = {}
        self.me_leaving = False

    def heard(self, replica: str, now: float, *, leaving: bool = False, warm: bool = True) -> bool:
        """A heartbeat from ``replica`` (``warm``: every socket it holds is up). True when
        the live set changed."""
        if replica == self.me:
            return False
        was = self.live(now)
        if leaving:
            self._last.pop(replica, None)
            self._warm.pop(replica, None)
        else:
            self._last[replica] = now
            self._warm[replica] = warm
        return self.live(now) != was

    def warm(self, replica: str) -> bool:
        """Whether ``replica`` last said all its sockets were up (a replica no longer
        heard counts as warm: waiting for it would wait forever)."""
        return self._warm.get(replica, True)

    def live(self, now: float) -> frozenset[str]:
        others = {r for r, t in self._last.items() if now - t <= self.timeout}
        return frozenset(others if self.me_leaving else others | {self.me})

    def expire(self, now: float) -> None:
        """Forget replicas not heard for long (keeps the table small)."""
        for replica in [r for r, t in self._last.items() if now - t > 10 * self.timeout]:
            del self._last[replica]
            self._warm.pop(replica, None)

    def assign(self, subscribers: Iterable[str], now: float, *, standby: bool) -> Roles:
        """This replica's roles over ``subscribers`` among the live replicas. With one
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
