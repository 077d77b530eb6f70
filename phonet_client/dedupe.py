"""De-duplication by ``message_id``, bounded. Pure.

The producer delivers every event at least once: after a broker reconnect, a crash with a
spool, or a takeover between replicas, copies come again **with the same** ``message_id``.
A consumer that must not act twice (bill a call, send an SMS) keeps the ids it has seen:

    seen = Seen()
    if seen.first(message.message_id):
        handle(message)

Copies come within seconds of the first (a takeover replays a standby window of
``PHONET_STANDBY_WINDOW`` seconds; a reconnect republishes what was unconfirmed), so a
bounded memory of the last ids is enough: ``max_ids`` ids (100,000 by default, about 10 MB)
and, optionally, ``max_age`` seconds. Past the bound the oldest are forgotten. For
exactly-once effects across restarts keep the ids with your data instead (the call journal
example stores ``message_id`` as its primary key).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class Seen:
    """The last ``max_ids`` message ids (each for at most ``max_age`` seconds, if set)."""

    def __init__(
        self,
        max_ids: int = 100_000,
        max_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.max_ids = max_ids
        self.max_age = max_age
        self.clock = clock
        self._ids: OrderedDict[str, float] = OrderedDict()
        self.repeats = 0

    def first(self, message_id: str | None) -> bool:
        """True the first time ``message_id`` is seen (and for None: nothing to compare);
        False for a copy, counted in :attr:`repeats`."""
        if message_id is None:
            return True
        now = self.clock()
        self._expire(now)
        if message_id in self._ids:
            self.repeats += 1
            return False
        self._ids[message_id] = now
        if len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def _expire(self, now: float) -> None:
        if self.max_age is None:
            return
        ids = self._ids
        while ids:
            oldest, at = next(iter(ids.items()))
            if now - at <= self.max_age:
                break
            del ids[oldest]
