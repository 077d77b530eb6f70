"""Several replicas, one owner per subscriber: the adapter between presence, the pool and
the publisher. The decisions are pure (:mod:`.membership`, :mod:`.standby`).

* The sockets held are the subscribers this replica owns or stands by for, plus those it
  handed over less than ``grace`` seconds ago (it keeps publishing them meanwhile, so the
  new owner's socket is up first: duplicates, never a gap).
* A frame of an owned (or handing-over) subscriber is published as always; a standby
  subscriber's goes to the :class:`~.standby.StandbyWindow`.
* Taking over (the owner vanished or left): the window is published, then the frames.
* Leaving (SIGTERM): :meth:`Coordinator.leave` announces it in the heartbeat; the others
  take over at once (a standby's socket is already up), and this replica keeps reading for
  ``grace`` seconds (bounded by the shutdown budget) before it closes its sockets.

With one replica: it owns every subscriber, stands by for none, and nothing changes.
Roles are recomputed in one task at a time (:meth:`changed` only schedules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from producer.envelope import Envelope
from producer.replicas.membership import Membership, Role, Roles, ranking
from producer.replicas.metrics import ReplicaMetrics
from producer.replicas.presence import Presence
from producer.replicas.standby import StandbyWindow

log = logging.getLogger("producer.replicas")

Hold = Callable[[list[str]], Awaitable[None]]
HANDOVER_CAP = 120.0
"""Seconds a handover waits beyond the grace for the new owner to say it is warm."""


class Coordinator:
    """Roles of this replica over the configured subscribers."""

    def __init__(
        self,
        me: str,
        exchange: str,
        *,
        hold: Hold,
        publish: Callable[[Envelope], None],
        metrics: ReplicaMetrics,
        standby: bool,
        window: float,
        grace: float,
        interval: float,
        timeout: float,
    ) -> None:
        self.membership = Membership(me, timeout)
        self.presence = Presence(exchange, self.membership, self.changed, interval=interval)
        self.window = StandbyWindow(window)
        self.hot = standby
        self.grace = grace
        self.hold = hold
        self.publish = publish
        self.metrics = metrics
        self.universe: tuple[str, ...] = ()
        self.roles = Roles()
        self._handing: dict[str, tuple[float, str]] = {}
        """Subscriber → (publish at least until, monotonic; the new owner): kept until the
        new owner says its sockets are up (at most HANDOVER_CAP more)."""
        self._recompute = True
        self._live: frozenset[str] = frozenset()
        self._assigned = False
        self._first_roles = asyncio.Event()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._started = 0.0
        self.startup_limit = max(3.0, 2 * timeout)
        """Without a broker session at start, act alone after this long."""

    # --- the app's questions (hot path: plain lookups) ----------------------------------
    def publishes(self, subscriber: str) -> bool:
        role = self.roles.of.get(subscriber)
        return role is Role.OWNER or subscriber in self._handing

    def owns(self, subscriber: str) -> bool:
        return self.roles.of.get(subscriber) is Role.OWNER

    @property
    def handing_over(self) -> int:
        """Subscribers handed over and still published here (until the new owner is up)."""
        return len(self._handing)

    @property
    def assigned(self) -> bool:
        """True once the first roles were applied (before, this replica holds nothing)."""
        return self._assigned

    async def wait_assigned(self) -> None:
        """Return once the first roles are applied. Cancellation propagates."""
        await self._first_roles.wait()

    def keep(self, subscriber: str, envelope: Envelope) -> None:
        """A standby subscriber's event: into the window, unpublished."""
        self.window.push(subscriber, envelope, envelope.received)

    # --- lifecycle --------------------------------------------------------------------
    def start(self, universe: Iterable[str]) -> None:
        """Begin: the first roles come once the others could be heard (one presence
        timeout after the broker session opened), or alone after ``startup_limit``."""
        self.universe = tuple(universe)
        self._started = _now()
        self._task = asyncio.create_task(self._run(), name="replicas")
        self.changed()

    async def set_universe(self, universe: Iterable[str]) -> None:
        self.universe = tuple(universe)
        self.changed()
        await self.settled()

    def changed(self) -> None:
        """The live set or the subscribers may have changed: recompute soon."""
        self._settled.clear()
        self._recompute = True
        self._dirty.set()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until the last change is applied (bounded)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._settled.wait()

    async def leave(self, budget: float) -> None:
        """SIGTERM: say so, and keep reading (and publishing) until the replicas taking
        over say their sockets are up, or ``budget`` seconds."""
        self.membership.me_leaving = True
        self.changed()
        await self.presence.beat()
        if budget <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await self.settled(budget)  # every subscriber is being handed over
                # Give the others a heartbeat or two to hear it and take over.
                await asyncio.sleep(2 * self.presence.interval)
                while self._handing and self.presence.connected:
                    if all(self.membership.warm(o) for _, o in self._handing.values()):
                        return
                    await asyncio.sleep(self.presence.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    # --- the work ---------------------------------------------------------------------
    async def _run(self) -> None:
        """Until cancelled: apply changes when something changed; otherwise, twice a
        second, only end handovers and age the window (cheap at 10,000 subscribers)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._apply()
            except Exception:  # keep coordinating: a bug must not freeze the roles
                log.exception("applying replica roles failed")
            if self._assigned or not self.universe:
                self._settled.set()

    def _ready(self, now: float) -> bool:
        """Heard long enough to know the others: one timeout into the current session
        (also after a reconnect, when the old heartbeats are stale)."""
        presence = self.presence
        if presence.connected:
            return now - presence.since >= self.membership.timeout
        return not self._assigned and now - self._started >= self.startup_limit

    async def _apply(self) -> None:
        now = _now()
        live = self.membership.live(now)
        if self._ready(now) and (self._recompute or live != self._live):
            # Without a session, or just after one opened, nobody is heard (yet): the last
            # roles stay rather than this replica taking every subscriber; alone at start
            # (no broker), it acts alone after startup_limit.
            self._recompute, self._live = False, live
            before, self.roles = (
                self.roles,
                self.membership.assign(self.universe, now, standby=self.hot),
            )
            self._assigned = True
            self._first_roles.set()
            taken, handed = self.roles.changes(before)
            for subscriber in sorted(taken):
                replay = self.window.take(subscriber, now)
                for envelope in replay:
                    self.publish(envelope)
                self.metrics.takeovers.inc()
                self.metrics.replayed.inc(len(replay))
            universe = set(self.universe)
            for subscriber in handed & universe:  # a removed subscriber is just closed
                ranked = ranking(live, subscriber)
                self._handing[subscriber] = (now + self.grace, ranked[0] if ranked else "")
            owned, standby = self.roles.owned, self.roles.standby
            for subscriber in owned:
                self.window.forget(subscriber)
            self.metrics.owned.set(len(owned))
            self.metrics.standby.set(len(standby))
            if taken or handed or before.of.keys() != self.roles.of.keys():
                log.info(
                    "replica roles",
                    extra={
                        "replicas": len(live),
                        "owned": len(self.roles.owned),
                        "standby": len(self.roles.standby),
                        "taken_over": len(taken),
                        "handed_over": len(handed),
                    },
                )
            await self._hold()
        ended = [
            s
            for s, (until, owner) in self._handing.items()
            if self.owns(s)
            or (now >= until and self.membership.warm(owner))
            or now >= until + HANDOVER_CAP
        ]
        for subscriber in ended:
            del self._handing[subscriber]
        if ended:
            await self._hold()
        self.window.expire(now)
        self.metrics.replicas.set(len(live))

    async def _hold(self) -> None:
        """The sockets to hold: owned first (they open first), then standby, then those
        still being handed over."""
        owned, standby = self.roles.owned, self.roles.standby
        order = [s for s in self.universe if s in owned]
        order += [s for s in self.universe if s in standby]
        order += [s for s in self._handing if s not in owned and s not in standby]
        await self.hold(order)


def _now() -> float:
    return asyncio.get_running_loop().time()
