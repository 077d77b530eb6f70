"""Returned messages: which publish a ``basic.return`` completes. Pure.

A ``basic.return`` (the message was ``mandatory`` and no queue took it) names the message
id, not the delivery tag. The broker sends it before that message's ack, and returns and
acks come in publish order, so a return belongs to the *oldest* message in flight with
that id. Ids repeat: the PBX repeats frames, and a repeated frame gets the same id
(consumers de-duplicate on it), so two copies can be in flight at once; each return then
completes exactly one of them, oldest first.

This serves the events connection's pipeline (:mod:`producer.publish.pipeline`);
click2call replies are published over the command connection
(:mod:`producer.click2call.answers`).
"""

from __future__ import annotations

from collections import deque


class FlightsById:
    """The sequence numbers in flight per message id, in the order they were sent.

    One seq per id is the rule (a repeat is the exception), so a lone seq is kept as an
    int and only repeats get a deque: this runs for every message sent and answered.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, int | deque[int]] = {}

    def sent(self, message_id: str, seq: int) -> None:
        flights = self._by_id.setdefault(message_id, seq)
        if flights == seq:
            return
        if isinstance(flights, int):
            self._by_id[message_id] = deque((flights, seq))
        else:
            flights.append(seq)

    def landed(self, message_id: str, seq: int) -> None:
        """``seq`` is no longer in flight (answered, lost with its session, or dropped)."""
        flights = self._by_id[message_id]
        if isinstance(flights, int):
            del self._by_id[message_id]
            return
        if flights[0] == seq:  # answered in order
            flights.popleft()
        else:
            flights.remove(seq)
        if len(flights) == 1:
            self._by_id[message_id] = flights[0]

    def oldest(self, message_id: str) -> int | None:
        """What a return of ``message_id`` belongs to, or None when nothing is in flight
        with that id."""
        flights = self._by_id.get(message_id)
        return flights if flights is None or isinstance(flights, int) else flights[0]

    def __len__(self) -> int:
        return sum(1 if isinstance(f, int) else len(f) for f in self._by_id.values())
