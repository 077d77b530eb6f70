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
from producer.replicas.membership import Membership, Role, Roles
from producer.replicas.metrics import ReplicaMetrics
from producer.replicas.presence import Presence
from producer.replicas.standby import StandbyWindow

log = logging.getLogger("producer.replicas")

Hold = Callable[[set[str]], Awaitable[None]]


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
        self._handing: dict[str, float] = {}  # subscriber → publish until (monotonic)
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
        self._dirty.set()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until the last change is applied (bounded)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._settled.wait()

    async def leave(self, budget: float) -> None:
        """SIGTERM: say so, let the others take over, keep reading ``budget`` seconds."""
        self.membership.me_leaving = True
        await self.presence.beat()
        if len(self.membership.live(_now()) | {self.membership.me}) > 1 and budget > 0:
            await asyncio.sleep(budget)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    # --- the work ---------------------------------------------------------------------
    async def _run(self) -> None:
        """Until cancelled: apply changes, and expire handovers and the window."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._apply()
            except Exception:  # keep coordinating: a bug must not freeze the roles
                log.exception("applying replica roles failed")
            if self.roles.of or not self.universe:
                self._settled.set()

    def _ready(self, now: float) -> bool:
        presence = self.presence
        if presence.connected and now - presence.since >= self.membership.timeout:
            return True
        return now - self._started >= self.startup_limit

    async def _apply(self) -> None:
        now = _now()
        live = self.membership.live(now)
        if not self.roles.of and not self._ready(now):
            return  # listening for the other replicas before taking anything
        if self.presence.connected or not self.roles.of:
            # Without a broker session nobody is heard: keep the last roles rather than
            # take every subscriber (the first assignment, alone, is the exception).
            self.presence.remember(live)
            before, self.roles = (
                self.roles,
                self.membership.assign(self.universe, now, standby=self.hot),
            )
            taken, handed = self.roles.changes(before)
            for subscriber in sorted(taken):
                replay = self.window.take(subscriber, now)
                for envelope in replay:
                    self.publish(envelope)
                self.metrics.takeovers.inc()
                self.metrics.replayed.inc(len(replay))
            for subscriber in handed:
                self._handing[subscriber] = now + self.grace
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
        for subscriber, until in list(self._handing.items()):
            if now >= until or self.owns(subscriber):
                del self._handing[subscriber]
        for subscriber in self.roles.owned:
            self.window.forget(subscriber)
        self.window.expire(now)
        self.metrics.owned.set(len(self.roles.owned))
        self.metrics.standby.set(len(self.roles.standby))
        self.metrics.replicas.set(len(live))
        await self.hold(set(self.roles.of) | set(self._handing))


def _now() -> float:
    return asyncio.get_running_loop().time()
