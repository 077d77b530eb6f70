"""Several replicas, one owner per subscriber: the adapter between presence, the pool and
the publisher. The decisions are pure (:mod:`.membership`, :mod:`.standby`, :mod:`.cover`).

* The sockets held are the subscribers this replica owns or stands by for, plus those it
  handed over or stood by for lately (:mod:`.handover`: kept until the new owner is warm).
* A newly owned subscriber whose socket is not up yet is reported down until it is.
* A frame of an owned (handing-over, covered) subscriber is published; a standby
  subscriber's goes to the :class:`~.standby.StandbyWindow`, published at a takeover, when
  covering for the owner's socket (:mod:`.cover`), or after the owner's death.
* Leaving (SIGTERM): :meth:`Coordinator.leave` announces it; the others take over at once,
  and this replica keeps reading until they are warm (bounded) before it closes sockets.

Alone, it owns every subscriber. Roles are recomputed in one task (:meth:`changed`
schedules)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

from producer.broker.topology import Exchange
from producer.core.clock import now as _now
from producer.core.envelope import Envelope
from producer.replicas.cover import MARGIN_MS, Cover, DownBook, orphaned_by
from producer.replicas.handover import Handovers
from producer.replicas.membership import Beat, Heard, Membership, Roles, digest, owner_in, ranking
from producer.replicas.presence import Presence
from producer.replicas.standby import StandbyWindow
from producer.telemetry.logs import BurstLog
from producer.telemetry.replicas import ReplicaMetrics

log = logging.getLogger("producer.replicas")

Hold = Callable[[list[str]], Awaitable[None]]
Owner = tuple[str, str]


class Coordinator:
    """Roles of this replica over the configured subscribers."""

    def __init__(
        self,
        me: str,
        presence: Exchange,
        *,
        hold: Hold,
        publish: Callable[[Envelope], None],
        metrics: ReplicaMetrics,
        standby: bool,
        window: float,
        window_bytes: int,
        grace: float,
        interval: float,
        timeout: float,
        settings: str,
        all_up: Callable[[], bool] = lambda: True,
        is_up: Callable[[str], bool] = lambda _subscriber: True,
        on_roster_mismatch: Callable[[], None] = lambda: None,
    ) -> None:
        self.instance = secrets.token_hex(6)
        self.membership = Membership(
            me, timeout, instance=self.instance, settings=settings, interval=interval
        )
        self.presence = Presence(
            presence, interval=interval, timeout=timeout, beat=self._beat, on_beat=self._heard
        )
        self.window = StandbyWindow(window, max_bytes=window_bytes)
        self.hot = standby
        self.hold = hold
        self.publish = publish
        self.metrics = metrics
        self.all_up = all_up
        self.is_up = is_up
        self.on_roster_mismatch = on_roster_mismatch
        self.universe: tuple[str, ...] = ()
        self.roles = Roles()
        self.view = ""
        self.downs = DownBook()
        # A vanished replica's unconfirmed events go back to about a heartbeat before
        # its last one (plus clock margins).
        self.cover = Cover(lookback_ms=int(interval * 1000) + MARGIN_MS)
        self._owned: set[str] = set()
        self._standby: set[str] = set()
        self.handovers = Handovers(grace)
        self._recompute = True
        self._live: frozenset[str] = frozenset()
        self._older_live: frozenset[str] = frozenset()  # its owners may still hand over
        self._assigned = False
        self._held_applied = False
        self._first_roles = asyncio.Event()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._started = 0.0
        self._logs = {k: BurstLog(log, interval=300.0) for k in ("twin", "foreign", "roster")}
        self._dropped_seen = 0
        self.busy: Callable[[str], bool] = lambda _subscriber: False
        """A click2call command is on that subscriber's line (a handover waits for it)."""
        self.startup_limit = max(3.0, 2 * timeout)
        """Without a broker session at start, act alone after this long."""

    # --- the app's questions (hot path: plain lookups) ----------------------------------
    def publishes(self, subscriber: str) -> bool:
        return (
            subscriber in self._owned
            or subscriber in self.handovers.handing
            or subscriber in self.cover.covering
        )

    def owns(self, subscriber: str) -> bool:
        return subscriber in self._owned

    @property
    def me(self) -> Owner:
        return self.membership.me, self.instance

    def alive(self, owner: Owner) -> bool:
        return self.membership.alive(owner[0], owner[1], _now())

    @property
    def handing_over(self) -> int:
        """Subscribers handed over and still held here (published, or kept in the window
        for a former standby), until the new owner is warm."""
        return len(self.handovers)

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

    def socket_state(self, subscriber: str, up: bool, since_ms: int) -> None:
        """An owned subscriber's socket went down (since ``since_ms``: when it was last
        known good) or came back (``since_ms`` is now): told in the next heartbeat."""
        if subscriber not in self._owned:
            return
        if up:
            self.downs.up(subscriber, since_ms)
        else:
            self.downs.down(subscriber, since_ms)

    # --- lifecycle --------------------------------------------------------------------
    def start(self, universe: Iterable[str]) -> None:
        """Begin: the first roles come once the others could be heard (one presence
        timeout after the broker session opened), or alone after ``startup_limit``."""
        self._set_universe(universe)
        self._started = _now()
        self._task = asyncio.create_task(self._run(), name="replicas")
        self.changed()

    async def set_universe(self, universe: Iterable[str]) -> None:
        self._set_universe(universe)
        self.changed()
        await self.settled()

    def _set_universe(self, universe: Iterable[str]) -> None:
        self.universe = tuple(universe)
        self.membership.roster = digest(sorted(self.universe))

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
        over say they are warm, or ``budget`` seconds."""
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
                while self.handovers.handing and self.presence.connected:
                    if all(self._warm(o) for o in self.handovers.owners()):
                        return
                    await asyncio.sleep(self.presence.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    # --- heartbeats -------------------------------------------------------------------
    def _beat(self) -> Beat:
        downs, all_since = self.downs.report()
        return Beat(
            replica=self.membership.me,
            instance=self.instance,
            settings=self.membership.settings,
            roster=self.membership.roster,
            view=self.view,
            leaving=self.membership.me_leaving,
            warm=self._assigned and self._held_applied and self.all_up(),
            down=downs,
            all_down_since=all_since,
        )

    def _heard(self, beat: Beat) -> None:
        now = _now()
        heard = self.membership.heard(beat, now)
        if heard is Heard.TWIN:
            self._logs["twin"](
                logging.ERROR,
                "another replica uses PHONET_REPLICA_ID %r: both act as one (give each its"
                " own id; the default is unique per process, and per pod in Kubernetes)",
                beat.replica,
            )
            return
        if heard is Heard.FOREIGN:
            self._logs["foreign"](
                logging.ERROR,
                "a producer with other settings (PBX domain, exchange, command queue or"
                " standby mode) or another protocol version heartbeats on %s: ignored, each"
                " acts alone (give it its own PHONET_EXCHANGE)",
                self.presence.exchange,
                extra={"replica": beat.replica},
            )
            return
        if heard is Heard.ROSTER:
            self._logs["roster"](
                logging.WARNING,
                "replica %s has another subscriber list: each holds its own until they"
                " agree (duplicates meanwhile, no subscriber unheld); looking again",
                beat.replica,
            )
            self.on_roster_mismatch()
        if heard is not Heard.NOTHING:
            self.changed()
        if beat.down or beat.all_down_since is not None or self.cover.covering:
            self._cover(beat)

    def _cover(self, beat: Beat) -> None:
        """The owner's report of its down sockets: cover for it (see :mod:`.cover`)."""
        if beat.replica not in self._live:
            return
        standby_for = [s for s in self._standby if ranking(self._live, s)[0] == beat.replica]
        replays = self.cover.heard(
            beat.replica, beat.down, beat.all_down_since, standby_for, time.time_ns() // 10**6
        )
        for replay in replays:
            for envelope in self.window.between(replay.subscriber, replay.from_ms, replay.to_ms):
                self.publish(envelope)
                self.metrics.replayed.inc()

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
            await self._assign(now, live)
            if self.membership.restarts_applied():
                self.changed()  # the restarted replicas join again, as new instances
        if self.handovers.end(
            now,
            lambda s: s in self._owned,
            lambda s: s in self._owned or s in self._standby,
            self._warm,
            self.busy,
        ):
            await self._hold()
        self.window.expire(now)
        self.membership.expire(now)
        self.metrics.replicas.set(len(live))
        if self.window.dropped != self._dropped_seen:
            self.metrics.window_dropped.inc(self.window.dropped - self._dropped_seen)
            self._dropped_seen = self.window.dropped

    async def _assign(self, now: float, live: frozenset[str]) -> None:
        # Without a session, or just after one opened, nobody is heard (yet): the last
        # roles stay rather than this replica taking every subscriber; alone at start
        # (no broker), it acts alone after startup_limit.
        gone, before_live = self._live - live, self._live
        older_live = self._older_live  # the view before `before_live`
        if live != before_live:  # a recompute in the same view keeps the older one
            self._older_live = before_live
        self._recompute, self._live = False, live
        self.view = digest([*sorted(live), self.membership.roster])
        before, self.roles = (
            self.roles,
            self.membership.assign(self.universe, now, standby=self.hot),
        )
        self._owned, self._standby = self.roles.owned, self.roles.standby
        self._assigned, self._held_applied = True, False
        self._first_roles.set()
        wall_ms = time.time_ns() // 1_000_000
        died = {r: t for r in gone if (t := self.membership.died(r, now, wall_ms)) is not None}
        for owner in gone:
            self.cover.gone(owner, died.get(owner))
        taken, handed = self.roles.changes(before)
        for subscriber in sorted(taken):
            self.cover.forget(subscriber)
            replay = self.window.take(subscriber, now)
            for envelope in replay:
                self.publish(envelope)
            self.metrics.takeovers.inc()
            self.metrics.replayed.inc(len(replay))
        universe = set(self.universe)
        handed &= universe  # a removed subscriber is just closed
        stepped = (before.standby - self._standby - self._owned) & universe
        self.handovers.start(handed, stepped, now, lambda s: owner_in(live, s))
        self.downs.keep_only(self._owned)  # handed over, or no longer in the list
        now_ms = time.time_ns() // 1_000_000
        for subscriber in self._owned - before.owned:
            if not self.is_up(subscriber):  # covered by its standby until it is up
                self.downs.down(subscriber, now_ms)
        self._replay_after_deaths(died, (before_live, older_live), taken)
        for subscriber in self._owned:
            self.window.forget(subscriber)
        self.metrics.owned.set(len(self._owned))
        self.metrics.standby.set(len(self._standby))
        if taken or handed or before.of.keys() != self.roles.of.keys():
            log.info(
                "replica roles",
                extra={
                    "replicas": len(live),
                    "owned": len(self._owned),
                    "standby": len(self._standby),
                    "taken_over": len(taken),
                    "handed_over": len(handed),
                },
            )
        await self._hold()
        self._held_applied = True

    def _replay_after_deaths(
        self, died: dict[str, int], views: tuple[frozenset[str], ...], taken: set[str]
    ) -> None:
        """:func:`.cover.orphaned_by` (``died``: replica → when last heard, wall ms), in
        this view and the one before."""
        if not died:
            return
        kept = (self._standby | set(self.handovers.stepping)) - self._owned - taken
        since_ms = min(died.values()) - self.cover.lookback_ms
        for subscriber in orphaned_by(set(died), views, kept):
            replay = self.window.between(subscriber, since_ms, None)
            for envelope in replay:
                self.publish(envelope)
            self.metrics.replayed.inc(len(replay))

    def _warm(self, owner: str) -> bool:
        return self.membership.warm(owner, self.view)

    async def _hold(self) -> None:
        """The sockets to hold: owned first (they open first), then standby, then those
        still being handed over."""
        owned, standby = self._owned, self._standby
        order = [s for s in self.universe if s in owned]
        order += [s for s in self.universe if s in standby]
        order += [s for s in self.handovers.held() if s not in owned and s not in standby]
        await self.hold(order)
