"""What a standby replica keeps of the events it receives: a bounded window. Pure.

A standby holds a socket for the subscriber and reads every event the owner reads, but
publishes nothing. It keeps the last ``seconds`` of them (at most ``max_events`` per
subscriber); when it takes over, it publishes the window — whatever the dead owner had not
got confirmed is in it (an owner confirms within milliseconds, a publish timeout at worst),
and what it had confirmed comes again with the same ``message_id``: duplicates around the
takeover only, never a loss as long as the window is longer than the owner's unconfirmed
tail.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from producer.envelope import Envelope


@dataclass
class StandbyWindow:
    seconds: float
    max_events: int = 10_000
    _held: dict[str, deque[Envelope]] = field(default_factory=dict)
    dropped: int = 0

    def push(self, subscriber: str, envelope: Envelope, now: float) -> None:
        """Keep ``envelope`` (``envelope.received`` is its monotonic receive time)."""
        held = self._held.get(subscriber)
        if held is None:
            held = self._held[subscriber] = deque()
        held.append(envelope)
        self._trim(held, now)
        while len(held) > self.max_events:
            held.popleft()
            self.dropped += 1

    def take(self, subscriber: str, now: float) -> list[Envelope]:
        """The window's events, oldest first, for a takeover (the window is emptied)."""
        held = self._held.pop(subscriber, None)
        if held is None:
            return []
        self._trim(held, now)
        return list(held)

    def forget(self, subscriber: str) -> None:
        self._held.pop(subscriber, None)

    def expire(self, now: float) -> None:
        """Drop what is older than the window everywhere (called now and then)."""
        for subscriber, held in list(self._held.items()):
            self._trim(held, now)
            if not held:
                del self._held[subscriber]

    def __len__(self) -> int:
        return sum(len(h) for h in self._held.values())

    def _trim(self, held: deque[Envelope], now: float) -> None:
        while held and now - held[0].received > self.seconds:
            held.popleft()
