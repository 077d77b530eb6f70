"""Reconnect delays: exponential backoff with jitter, reset only after a healthy session.

Sans-I/O: :class:`Backoff` decides how long to wait; the socket and broker adapters do the
waiting. The policy, in the spirit of ``websockets.client.backoff``:

* the first retry after a healthy session waits a random ``0..initial`` seconds, so two
  thousand sockets dropped at once by the PBX come back spread over that window, not in
  one thundering herd;
* each following failure doubles the base delay from ``min_delay`` up to ``max_delay``,
  and waits a random value in ``[base/2, base]`` ("equal jitter");
* a connection that stayed up at least ``healthy_after`` seconds resets the sequence; one
  that dropped sooner does not, so a server that accepts and at once closes is retried
  with growing delays instead of in a hot loop;
* an authentication refusal waits at least ``auth_delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay policy for one reconnecting link. Not thread-safe; one per link."""

    min_delay: float = 1.0
    max_delay: float = 60.0
    initial: float = 5.0
    healthy_after: float = 10.0
    auth_delay: float = 60.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self, *, auth_failed: bool = False) -> float:
        """Seconds to wait before the next attempt; counts this as one more failure."""
        if self.failures == 0:
            delay = self.rng.uniform(0.0, self.initial)
        else:
            base = min(self.max_delay, self.min_delay * self.factor ** (self.failures - 1))
            delay = self.rng.uniform(base / 2, base)
        self.failures += 1
        if auth_failed:
            delay = max(delay, self.auth_delay)
        return delay

    def session_ended(self, lasted: float) -> None:
        """Report how long the last connection stayed open; long enough resets the policy."""
        if lasted >= self.healthy_after:
            self.failures = 0

    def reset(self) -> None:
        self.failures = 0
