"""How the publish pipeline takes the broker's answers other than a plain ack. Pure.

**Returns** (:class:`FlightsById`). A ``basic.return`` (the message was ``mandatory`` and no
queue took it) names the message id, not the delivery tag. The broker sends it before that
message's ack, and returns and acks come in publish order, so a return belongs to the
*oldest* message in flight with that id. Ids repeat: the PBX repeats frames, and a repeated
frame gets the same id (consumers de-duplicate on it), so two copies can be in flight at
once; each return then completes exactly one of them, oldest first.

**Replies** (:class:`ReplyFate`). A click2call reply (``kind == "reply"``) goes through
the default exchange to the queue its caller named in ``reply_to``, and is only useful
while that caller waits. The caller also chooses the queue: one declared
``x-max-length: 0, x-overflow: reject-publish`` makes the broker nack every reply. Events
are retried until confirmed, with a pause that stops all sending (the pause is for a full
*events* queue, which a consumer will drain); a reply treated that way would be retried
forever, stall every event behind each pause, and come back from the spool after a
restart to do it again. So a reply has its own fate:

* a nack sends it again at once, before anything newer, and pauses nothing;
* at its :data:`REPLY_NACKS`-th nack it is dropped (``reply_nacked``). Attempts, not time,
  bound the retries: a nack is the queue's immediate answer, so retrying for a while would
  either hammer the queue or need a timer per reply, for a caller who stops waiting anyway;
* a reply still held ``max_age`` seconds after it was made is dropped before it is sent
  (``reply_expired``): after a broker outage, and after a restart (replies recovered from
  the spool) — the age is counted from the reply's wall-clock ``timestamp``, since a
  recovered envelope's monotonic ``received`` is the time it was read back.

Outcome events (``kind == "outcome"``) are not replies: they go to the events exchange for
dashboards and audit, are still worth having late, and share the events' fate.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Container

from producer.envelope import Envelope

REPLY_NACKS = 3
"""Nacks after which a reply is dropped (it was sent this many times)."""
REPLY_MAX_AGE = 60.0
"""Default seconds a reply may wait: ``PHONET_CLICK2CALL_MAX_AGE``'s default, the age past
which the service no longer dials a command, so its caller has given up on it."""


REPLY = "reply"
"""The ``kind`` of an RPC reply envelope (:func:`producer.envelope.reply_envelope`)."""


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


class ReplyFate:
    """Nack counts and deadlines of the replies a pipeline holds (by ``seq``)."""

    def __init__(self, max_age: float = REPLY_MAX_AGE) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self.max_age = max_age
        self._nacks: dict[int, int] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap of (wall deadline, seq)

    def held(self, envelope: Envelope) -> None:
        """A reply is held from now on (new, or recovered from the spool)."""
        heapq.heappush(self._deadlines, (envelope.timestamp + self.max_age, envelope.seq))

    def nacked(self, seq: int) -> bool:
        """The broker nacked reply ``seq``; True when that was its last chance."""
        nacks = self._nacks.get(seq, 0) + 1
        if nacks >= REPLY_NACKS:
            self._nacks.pop(seq, None)
            return True
        self._nacks[seq] = nacks
        return False

    def forget(self, seq: int) -> None:
        """``seq`` is done or dropped (its deadline entry goes when it is due)."""
        self._nacks.pop(seq, None)

    def overdue(self, wall: float, in_flight: Container[int]) -> list[int]:
        """Replies whose deadline is before ``wall`` (seconds since the epoch), oldest
        first, except those ``in_flight`` (judged again on the next call, once back).
        May name replies already gone: the caller skips them."""
        heap = self._deadlines
        due: list[tuple[float, int]] = []
        flying: list[tuple[float, int]] = []
        while heap and heap[0][0] < wall:
            item = heapq.heappop(heap)
            (flying if item[1] in in_flight else due).append(item)
        for item in flying:
            heapq.heappush(heap, item)
        return [seq for _, seq in due]
