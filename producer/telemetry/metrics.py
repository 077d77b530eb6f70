"""Prometheus metrics, one :class:`Metrics` per running producer (own registry).

Names follow the Prometheus naming guide (``_total`` counters, base units, ``phonet_``
prefix). Labels are bounded: ``event`` is one of the documented events or ``other``,
``subscriber`` is one of the configured subscribers, ``reason``/``result`` are fixed
enumerations. Nothing here ever carries the API key or a URL.

Sized for ten thousand sockets: socket counters are aggregates, and what is per subscriber
(``phonet_ws_connected``, and with ``PHONET_METRICS_PER_SUBSCRIBER=all`` each socket's
counts) is produced at scrape time by
:class:`~producer.telemetry.exposition.SocketsCollector` — no metric object per socket — and the
snapshot and the text are both made off the event loop, in the scrape's worker thread
(:mod:`producer.telemetry.exposition`, :mod:`producer.web.server`).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from phonet_client.results import Result
from producer import __version__
from producer.core.events import KNOWN_EVENTS, InvalidReason
from producer.telemetry.click2call import Click2CallMetrics
from producer.telemetry.exposition import PerSubscriber, SocketsCollector, SocketsView
from producer.telemetry.replicas import ReplicaMetrics
from producer.telemetry.subscribers import RestMetrics


class Buffered(Protocol):
    """What the buffer gauges read at scrape time (the publish pipeline)."""

    @property
    def bytes(self) -> int: ...

    @property
    def inflight(self) -> int: ...

    def __len__(self) -> int: ...


# A `_created` series per counter doubles what is scraped and says nothing an operator uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

EVENT_LABELS = (*sorted(KNOWN_EVENTS), "other", "invalid")
"""``event`` label values of frames read from Phonet."""
PUBLISHED_LABELS = (*EVENT_LABELS, "click2call", "gap", "history", "active")
"""``event`` label values of what the event pipeline publishes: frames, click2call outcomes,
gaps and what the REST API filled in (missed and in-progress calls). click2call replies are
published over the command connection, not counted here."""
CLICK2CALL_RESULTS = tuple(result.value for result in Result)
"""``result`` label values: the documented results (:mod:`phonet_client.results`)."""
CONNECT_FAILURES = ("refused", "dns", "timeout", "tls", "auth", "vhost", "other")
SOCKET_FAILURES = ("auth", "http", "timeout", "network", "other")
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SEAMS = ("aiormq_publish", "websockets_opcode", "pamqp_header")
DROP_REASONS = ("buffer_full", "spool_full", "shutdown", "unencodable", "refused", "obsolete")

# Receive-to-confirm latency on a local broker is sub-millisecond to tens of ms; the
# tail during an outage is seconds to minutes. 2 ms is a bound because it is the target
# (p99 at 500 events/s): a bucket on the objective makes it readable.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
COMMAND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """All metrics of one producer. Create one per process (or per test)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        per_subscriber: PerSubscriber = "connected",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sockets = SocketsCollector(per_subscriber)
        r.register(self.sockets)
        self.rest = RestMetrics(r)
        self.replicas = ReplicaMetrics(r)
        self.build_info = Info("phonet_build", "Version of phonet-producer", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

        self.ws_connects = Counter(
            "phonet_ws_connects",
            "Successful socket handshakes (the first and every reconnect), all sockets",
            registry=r,
        )
        self.ws_reconnects = Counter(
            "phonet_ws_reconnects",
            "Connection attempts after a drop or a failed attempt, all sockets",
            registry=r,
        )
        self.ws_disconnects = Counter(
            "phonet_ws_disconnects",
            "Sockets closed or failed after being open, all sockets",
            registry=r,
        )
        self.ws_connect_failures = Counter(
            "phonet_ws_connect_failures",
            "Handshakes that failed, by reason (auth: HTTP 401/403, a bad key or domain)",
            ["reason"],
            registry=r,
        )
        self.ws_failures = {k: self.ws_connect_failures.labels(k) for k in SOCKET_FAILURES}
        self.loop_lag = Histogram(
            "phonet_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms (stalls delay every frame)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.amqp_connected = Gauge(
            "phonet_amqp_connected", "1 while the broker connection is open", registry=r
        )
        self.amqp_connects = Counter(
            "phonet_amqp_connects", "Broker connections opened", registry=r
        )
        self.amqp_reconnects = Counter(
            "phonet_amqp_reconnects",
            "Broker connection attempts after a loss or failure",
            registry=r,
        )
        self.amqp_connect_failures = Counter(
            "phonet_amqp_connect_failures",
            "Broker connection attempts that failed, by reason",
            ["reason"],
            registry=r,
        )
        self.amqp_blocked = Gauge(
            "phonet_amqp_blocked",
            "1 while the broker blocks publishing (a memory or disk alarm)",
            registry=r,
        )
        self.events_received = Counter(
            "phonet_events_received", "Frames read from Phonet sockets", ["event"], registry=r
        )
        self.events_published = Counter(
            "phonet_events_published",
            "Messages confirmed by the broker",
            ["event"],
            registry=r,
        )
        self.events_invalid = Counter(
            "phonet_events_invalid",
            "Frames that are not usable events (published under invalid.*)",
            ["reason"],
            registry=r,
        )
        self.events_returned = Counter(
            "phonet_events_returned",
            "Messages the broker returned as unroutable (no queue bound for the key)",
            ["event"],
            registry=r,
        )
        self.returns_unmatched = Counter(
            "phonet_events_returned_unmatched",
            "Returns the broker sent for no publish still awaited (a channel already given"
            " up); not counted as returned",
            registry=r,
        )
        self.events_dropped = Counter(
            "phonet_events_dropped",
            "Messages dropped unpublished (buffer or spool full, shutdown without broker)",
            ["reason"],
            registry=r,
        )
        self.publish_retries = Counter(
            "phonet_publish_retries",
            "Publishes sent again after a nack or a lost connection",
            registry=r,
        )
        self.library_fallbacks = Counter(
            "phonet_library_fallbacks",
            "Times a seam over a library's internals fell back to its public API"
            " (aiormq_publish: per session; websockets_opcode: per frame; pamqp_header: at"
            " start)",
            ["seam"],
            registry=r,
        )
        self.buffer_events = Gauge(
            "phonet_buffer_events", "Messages received and not yet confirmed", registry=r
        )
        self.buffer_bytes = Gauge(
            "phonet_buffer_bytes",
            "Approximate memory held by messages not yet confirmed",
            registry=r,
        )
        self.publish_inflight = Gauge(
            "phonet_publish_inflight", "Publishes awaiting a broker confirmation", registry=r
        )
        self.spool_bytes = Gauge(
            "phonet_spool_bytes", "Bytes of the disk spool (0 without PHONET_SPOOL_DIR)", registry=r
        )
        self.spool_degraded = Gauge(
            "phonet_spool_degraded",
            "1 while the spool cannot write (disk full or failing): events stay in memory",
            registry=r,
        )
        self.spool_recovered = Counter(
            "phonet_spool_recovered_events",
            "Unconfirmed events loaded from the spool at start",
            registry=r,
        )
        self.spool_damaged = Counter(
            "phonet_spool_damaged_records",
            "Damaged spool regions skipped at start (a run of bad bytes, or a torn tail,"
            " counts once)",
            registry=r,
        )
        self.publish_latency = Histogram(
            "phonet_event_publish_latency_seconds",
            "From reading a frame to the broker's confirmation",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.click2call_commands = Counter(
            "phonet_click2call_commands",
            "click2call commands by outcome",
            ["result"],
            registry=r,
        )
        self.click2call_latency = Histogram(
            "phonet_click2call_latency_seconds",
            "From taking a command off the queue to the PBX's answer",
            buckets=COMMAND_BUCKETS,
            registry=r,
        )
        self.commands = Click2CallMetrics(r)
        # Pre-create label sets so dashboards see zeros instead of missing series.
        # Label children looked up once: .labels() costs more than .inc() on the hot path.
        self.fallbacks = {seam: self.library_fallbacks.labels(seam) for seam in SEAMS}
        self.received = {label: self.events_received.labels(label) for label in EVENT_LABELS}
        self.published = {label: self.events_published.labels(label) for label in PUBLISHED_LABELS}
        for label in PUBLISHED_LABELS:
            self.events_returned.labels(label)
        for reason in InvalidReason:
            self.events_invalid.labels(reason.value)
        for drop in DROP_REASONS:
            self.events_dropped.labels(drop)
        for result in CLICK2CALL_RESULTS:
            self.click2call_commands.labels(result)
        for kind in CONNECT_FAILURES:
            self.amqp_connect_failures.labels(kind)
        self.amqp_connected.set(0)

    def watch(self, pipeline: Buffered) -> None:
        """Read buffer depth, bytes and in-flight count when scraped, not on every event."""
        self.buffer_events.set_function(lambda: len(pipeline))
        self.buffer_bytes.set_function(lambda: pipeline.bytes)
        self.publish_inflight.set_function(lambda: pipeline.inflight)

    def watch_sockets(self, view: Callable[[], SocketsView]) -> None:
        """Socket gauges (and per-subscriber series) come from ``view`` at scrape time."""
        self.sockets.view = view

    def before_scrape(self) -> None:
        """Take the socket snapshot the next rendering shows. The renderer of
        :func:`producer.telemetry.exposition.exposition` calls it first, in its worker thread: with
        ten thousand sockets the snapshot alone is ~10 ms the event loop would otherwise
        wait for."""
        self.sockets.refresh()
