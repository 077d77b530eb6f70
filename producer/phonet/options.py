"""What every socket of a producer shares: connection options (one SSL context) and the
handshake gate that spreads a reconnect storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from producer.core.pacing import Backoff, TokenBucket


@dataclass(frozen=True)
class SocketOptions:
    """Connection parameters shared by every socket of a producer."""

    open_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    max_frame_bytes: int = 1_048_576
    max_queue: int = 16
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    healthy_after: float = 10.0
    auth_retry_delay: float = 60.0
    ssl: ssl.SSLContext | None = field(default=None, compare=False)
    """One context for every ``wss://`` socket (a context per socket costs ~0.5 MB each)."""
    tls: dict[str, Any] = field(default_factory=dict, compare=False, init=False)
    """The ``ssl`` argument for websockets, once for all sockets (it refuses one for ws://)."""

    def __post_init__(self) -> None:
        if self.ssl is not None:
            object.__setattr__(self, "tls", {"ssl": self.ssl})

    def backoff(self) -> Backoff:
        return Backoff(
            min_delay=self.reconnect_min,
            max_delay=self.reconnect_max,
            healthy_after=self.healthy_after,
            auth_delay=self.auth_retry_delay,
        )


class HandshakeGate:
    """What keeps a reconnect storm from being a thundering herd: at most ``concurrency``
    handshakes in progress, started at most ``rate`` a second (a burst of ``concurrency``).

    An isolated reconnect passes at once. Waiting is FIFO; cancellation while waiting
    gives the place up.
    """

    def __init__(self, concurrency: int, rate: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(rate=rate, burst=float(concurrency))
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            delay = self._bucket.take(asyncio.get_running_loop().time())
            if delay > 0:
                await asyncio.sleep(delay)
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
