"""A replayable call history: a RabbitMQ stream bound to every event (``PHONET_HISTORY_STREAM``).

A queue only holds what arrived while it existed; a stream keeps every message for its
retention (``PHONET_HISTORY_MAX_AGE``, ``PHONET_HISTORY_MAX_BYTES``, whichever comes first)
and lets any number of readers start from a point in time or an offset, each at its own
pace, without taking anything from the others. The producer declares it (``x-queue-type:
stream``) and binds it to ``#`` on the events exchange, in every broker session: the
broker copies each event there as it routes it, and a publish confirmed is a publish the
stream holds (so every event is routed somewhere: ``phonet_events_returned_total`` stays 0
while the stream is bound). Consumers read it with
:class:`phonet_client.history.History` over plain AMQP 0-9-1 (RabbitMQ 3.9 or later; no
stream plugin needed).

A broker without streams (RabbitMQ before 3.9), or a queue of that name that is not a
stream, is said in one line at the first session (``/readyz`` shows it under
``history``): events flow on regardless, the history is just not kept.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractConnection

from producer.broker.topology import Queue, declare_queue
from producer.telemetry.logs import safe_error

log = logging.getLogger("producer.publish.history")


@dataclass
class HistoryStream:
    """Session hook: declare the stream, bind it to every event, hold until the session
    ends. Never ends the session: a failure is told (``error``) and events flow on.

    Cancellation (the session ended) propagates."""

    stream: Queue
    error: str | None = None
    declared: bool = False

    @property
    def name(self) -> str:
        return self.stream.name

    async def session(self, connection: AbstractConnection) -> None:
        try:
            await self._declare(connection)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never end the event session for the history's sake
            reason = safe_error(exc)
            self.declared = False
            self.error = (
                f"PHONET_HISTORY_STREAM: cannot keep the call history in stream {self.name!r}"
                f" ({reason}); it needs RabbitMQ 3.9 or later with streams, and no other queue"
                " of that name (nor the same stream declared with other retention settings:"
                " delete it, or set retention by policy). Events are published as usual."
            )
            log.error("%s", self.error)
        await asyncio.Event().wait()  # hold the session hook until it is cancelled

    async def _declare(self, connection: AbstractConnection) -> None:
        channel, _ = await declare_queue(connection, self.stream)
        if not self.declared:
            log.info(
                "call history kept in a stream",
                extra={"stream": self.name, "arguments": dict(self.stream.arguments)},
            )
        self.declared, self.error = True, None
        await channel.close()

    def status(self) -> dict[str, Any]:
        """For ``/readyz``."""
        return {"stream": self.name, "declared": self.declared, "error": self.error}
