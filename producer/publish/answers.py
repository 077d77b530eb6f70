"""How the publish pipeline takes the broker's answers other than a plain ack. Pure.

**Returns** (:class:`FlightsById`). A ``basic.return`` (the message was ``mandatory`` and no
queue took it) names the message id, not the delivery tag. The broker sends it before that
message's ack, and returns and acks come in publish order, so a return belongs to the
*oldest* message in flight with that id. Ids repeat: the PBX repeats frames, and a repeated
frame gets the same id (consumers de-duplicate on it), so two copies can be in flight at
once; each return then completes exactly one of them, oldest first.
"""

from __future__ import annotations

from collections import deque


class FlightsById:
    """The sequence numbers in flight per message id, in the order they were sent."""

    def __init__(self) -> None:
        self._by_id: dict[str, deque[int]] = {}

    def sent(self, message_id: str, seq: int) -> None:
        flights = self._by_id.get(message_id)
        if flights is None:
            self._by_id[message_id] = deque((seq,))
        else:
            flights.append(seq)

    def landed(self, message_id: str, seq: int) -> None:
        """``seq`` is no longer in flight (answered, lost with its session, or dropped)."""
        flights = self._by_id[message_id]
        if flights[0] == seq:  # nearly always: one per id, answered in order
            flights.popleft()
        else:
            flights.remove(seq)
        if not flights:
            del self._by_id[message_id]

    def oldest(self, message_id: str) -> int | None:
        """What a return of ``message_id`` belongs to, or None when nothing is in flight
        with that id."""
        flights = self._by_id.get(message_id)
        return flights[0] if flights else None

    def __len__(self) -> int:
        return sum(len(flights) for flights in self._by_id.values())
