"""Reconnect pacing: per-link backoff, and a shared handshake budget. Sans-I/O.

:class:`Backoff` decides how long one link waits before its next attempt; the socket and
broker adapters do the waiting. The policy, in the spirit of ``websockets.client.backoff``:

* the first retry after a healthy session is immediate (``initial``, 0 for sockets): an
  isolated drop costs only the reconnect itself, not a random wait during which calls go
  unseen;
* each following failure doubles the base delay from ``min_delay`` up to ``max_delay``,
  and waits a random value in ``[base/2, base]`` ("equal jitter");
* a connection that stayed up at least ``healthy_after`` seconds resets the sequence; one
  that dropped sooner does not, so a server that accepts and at once closes is retried
  with growing delays instead of in a hot loop;
* an authentication refusal waits at least ``auth_delay``.

What a storm needs — ten thousand sockets dropped at once — is not a delay for everyone but
a bound on what reaches the PBX together: :class:`TokenBucket` paces handshakes to a rate
(with a burst), and the socket adapter also bounds how many run at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SHARED = random.Random()
"""One generator for every link (its state is 2.5 KB: one each adds up at 10,000 sockets)."""


@dataclass(slots=True)
class Backoff:
    """Delay policy for one reconnecting link. Not thread-safe; one per link."""

    min_delay: float = 1.0
    max_delay: float = 60.0
    initial: float = 0.0
    healthy_after: float = 10.0
    auth_delay: float = 60.0
    factor: float = 2.0
    rng: random.Random = field(default=_SHARED)
    failures: int = 0

    def next_delay(self, *, auth_failed: bool = False) -> float:
        """Seconds to wait before the next attempt; counts this as one more failure."""
        if self.failures == 0:
            delay = self.rng.uniform(0.0, self.initial) if self.initial else 0.0
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

    @property
    def unsettled(self) -> bool:
        """Its recent connections did not stay up (or did not open): a flapping link."""
        return self.failures >= 2


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` saved, full at first use. Two ways to
    spend: :meth:`take` reserves the next token and says how long to wait for it (0 when
    one is available now), so callers are served in order and never more than ``rate`` a
    second on average (the handshake gate); :meth:`take_if_any` spends one only when one
    is there (a rate limit: refused, not delayed)."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.updated is None:  # first use: a full bucket
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now

    def take(self, now: float) -> float:
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take_if_any(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
