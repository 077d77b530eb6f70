"""What happens to each frame a socket reads: the per-frame routing decision.

:func:`route` is the decision, pure: a frame is the PBX's answer to a click2call command
(taken by click2call, not published), held by a standby (kept in its window, not
published), or published (and, when it is not a valid event, also counted and logged as
invalid). :class:`Frames` is the thin part that runs in the socket's task: it parses,
asks the features, wraps the envelope and does what :func:`route` says — synchronously, so
a frame is buffered before the next one is read and order per socket holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum

from producer.core.envelope import Envelope, event_envelope
from producer.core.events import CallEvent, InvalidFrame, InvalidReason, metric_event, parse_frame
from producer.telemetry.logs import BurstLog, trimmed
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer")


class Route(Enum):
    ANSWER = "answer"
    """The PBX's answer to a command: click2call took it."""
    KEEP = "keep"
    """This replica stands by for the subscriber: kept in the window, not published."""
    PUBLISH = "publish"
    PUBLISH_INVALID = "publish_invalid"
    """Published under ``invalid.``, counted and logged (trimmed)."""


def route(parsed: CallEvent | InvalidFrame, *, answer: bool, publishes: bool) -> Route:
    """Where one parsed frame goes. ``answer``: click2call recognised it as the answer to
    one of its commands; ``publishes``: this replica publishes the subscriber."""
    if answer:
        return Route.ANSWER
    if not publishes:
        return Route.KEEP
    return Route.PUBLISH if isinstance(parsed, CallEvent) else Route.PUBLISH_INVALID


class Frames:
    """The frame handler every socket calls (see the module docstring). Never raises."""

    def __init__(
        self,
        exchange: str,
        metrics: Metrics,
        *,
        offer: Callable[[str, int, CallEvent], bool],
        ended: Callable[[str, str], None],
        publishes: Callable[[str], bool],
        keep: Callable[[str, Envelope], None],
        publish: Callable[[Envelope], None],
        max_frame_bytes: int,
    ) -> None:
        """``offer``: click2call's look at an event (True: its answer); ``ended``: a call
        ended (backfill must not repeat it); ``keep``: the standby window."""
        self.exchange = exchange
        self.metrics = metrics
        self.offer, self.ended, self.publishes = offer, ended, publishes
        self.keep, self.publish = keep, publish
        self.max_frame_bytes = max_frame_bytes
        self._invalid_log = BurstLog(log)

    def on_frame(
        self, subscriber: str, connection: int, payload: bytes, is_text: bool, received: float
    ) -> None:
        """Parse one frame and buffer (or keep) its envelope."""
        parsed = parse_frame(payload, is_text=is_text)
        answer = False
        if isinstance(parsed, CallEvent):
            answer = self.offer(subscriber, connection, parsed)
            if not answer:
                if parsed.event == "call.hangup" and parsed.uuid is not None:
                    self.ended(subscriber, parsed.uuid)
                self.metrics.received[metric_event(parsed.event)].inc()
        else:
            self.metrics.received["invalid"].inc()
        where = route(parsed, answer=answer, publishes=self.publishes(subscriber))
        if where is Route.ANSWER:
            return
        envelope = event_envelope(
            self.exchange,
            subscriber,
            parsed,
            payload,
            received=received,
            wall_ms=time.time_ns() // 1_000_000,
        )
        if where is Route.KEEP:
            self.keep(subscriber, envelope)
            return
        if where is Route.PUBLISH_INVALID:
            self._invalid(subscriber, envelope, payload)
        self.publish(envelope)

    def _invalid(self, subscriber: str, envelope: Envelope, payload: bytes) -> None:
        reason = envelope.headers["invalid_reason"]
        self.metrics.events_invalid.labels(reason).inc()
        self._invalid_log(
            logging.WARNING,
            "invalid frame (%s: %s), published as %s: %s",
            reason,
            envelope.headers["invalid_detail"],
            envelope.routing_key,
            trimmed(payload),
            extra={"subscriber": subscriber},
        )

    def too_large(self, subscriber: str) -> None:
        """A frame over PHONET_MAX_FRAME_BYTES closed the socket: counted, not kept."""
        self.metrics.events_invalid.labels(InvalidReason.TOO_LARGE.value).inc()
        log.warning(
            "frame larger than PHONET_MAX_FRAME_BYTES=%d; socket closed, frame not kept",
            self.max_frame_bytes,
            extra={"subscriber": subscriber},
        )
