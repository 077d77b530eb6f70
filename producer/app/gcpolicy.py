"""When to freeze the garbage collector's view of the heap, and when to thaw it. Pure.

With ten thousand sockets the heap holds close to a million container objects that live as
long as their sockets. CPython's full (generation 2) collection walks all of them — 300 to
500 ms on the development machine, every time long-lived objects grew by a quarter — and
the event loop, every frame and every confirm, waits meanwhile. ``gc.freeze()`` moves every
live object out of the collector's sight (in constant time): later collections see only
what is new, and cost milliseconds.

What freezing costs: a frozen object that becomes cyclic garbage is never collected. A
closed socket used to leave such cycles (websockets' protocol and the error that ended its
parser; asyncio's transport and a bound method of itself): freezing for good leaked a few
KB with every reconnect — the "memory that grows after a reconnect storm and is not given
back". :meth:`producer.phonet.PhonetConnection.release` now breaks them, so a dead socket
is freed by reference counting, frozen or not; what is left for the policy is a safety
net for cycles nobody knows of:

* **freeze** once the sockets have been stable (no socket opened or closed) for
  ``stable_after`` seconds; while they keep opening (a start, the end of a storm) after
  every ``freeze_every`` opened, so what new connections allocate leaves the collector's
  sight in batches instead of making each full pass longer; and every ``refreeze_after``
  seconds, for what accumulates steadily (timers and futures that live one keepalive:
  thousands a second at 10,000 sockets). Each freeze is preceded by a young collection
  (generations 0 and 1), so no young cyclic garbage is frozen, and that collection is
  small because it comes often: the allocation counter that should trigger it does not
  see keepalive objects (each new one is offset by an old one freed), so left alone they
  piled up to ~60,000 and a young pass took 25 ms every keepalive round at 10,000 sockets.
  Freezing takes constant time; what is frozen and freed by reference counting (nearly
  everything; measured: a full pass after three idle minutes at 10,000 sockets, or after
  a minute of 2,000 events a second, collected nothing) is freed as usual;
* **thaw, collect and freeze again** (``gc.unfreeze()``, ``gc.collect()``,
  ``gc.freeze()``: one full pass, 0.3–0.5 s at 10,000 sockets) once ``thaw_after``
  sockets closed since the last time and the sockets are stable again — after a storm, or
  once isolated drops have added up — so what they left behind is reclaimed (or after
  ``thaw_anyway_after`` seconds, for sockets that never let the set settle); and, as a
  safety net for cyclic garbage that does not come from sockets (an object frozen while
  alive that later ends up in a cycle), once the process's memory (its RSS) has grown by
  half (``grow_factor``) since it was last measured settled. Legitimate growth (more
  sockets, events buffered through a broker outage) costs at most one such pass per 50%
  growth. (RSS, not ``gc.get_freeze_count()``: that walks the frozen list, ~70 ms at
  10,000 sockets.)

Besides that full pass, the service pays one young collection a second (the one before
each freeze, ~5 ms at 10,000 sockets).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class GcAction(Enum):
    FREEZE = "freeze"
    THAW = "thaw"  # unfreeze, collect, freeze


@dataclass
class GcPolicy:
    stable_after: float = 10.0
    freeze_every: int = 500
    refreeze_after: float = 1.0
    thaw_after: int = 1000
    thaw_anyway_after: float = 600.0
    grow_factor: float = 1.5
    closes: int = 0
    opens: int = 0
    last_change: float | None = None  # None: nothing seen yet (the start counts as one)
    frozen_at: float | None = None
    thawed_at: float = 0.0
    baseline: int = 0
    """The memory when the heap was last measured settled (0: not measured yet)."""

    def socket_changed(self, now: float, *, closed: bool) -> None:
        """A socket opened or closed."""
        self.last_change = now
        if closed:
            self.closes += 1
        else:
            self.opens += 1

    def decide(self, now: float, memory: int = 0) -> GcAction | None:
        """What to do now, if anything; the caller does it. ``memory``: the process's
        resident memory now, in any unit (0: unknown, no growth check)."""
        if self.last_change is None:
            self.last_change = now
        stable = now - self.last_change >= self.stable_after
        restless = now - self.thawed_at >= self.thaw_anyway_after  # sockets never settle
        if stable and self.frozen_at is not None and not self.baseline:
            self.baseline = memory
        grown = self.baseline > 0 and memory > self.grow_factor * self.baseline
        if (self.closes >= self.thaw_after or grown) and (stable or restless):
            return self._did(GcAction.THAW, now)
        first = self.frozen_at is None and stable
        due = self.frozen_at is not None and now - self.frozen_at >= self.refreeze_after
        if first or due or self.opens >= self.freeze_every:
            return self._did(GcAction.FREEZE, now)
        return None

    def _did(self, action: GcAction, now: float) -> GcAction:
        self.opens = 0
        if action is GcAction.THAW:
            self.closes, self.thawed_at, self.baseline = 0, now, 0
        self.frozen_at = now
        return action
