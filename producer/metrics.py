"""Prometheus metrics, one :class:`Metrics` per running producer (own registry).

Names follow the Prometheus naming guide (``_total`` counters, base units, ``phonet_``
prefix). Labels are bounded: ``event`` is one of the documented events or ``other``,
``subscriber`` is one of the configured subscribers, ``reason``/``result`` are fixed
enumerations. Nothing here ever carries the API key or a URL.

Sized for ten thousand sockets: socket counters are aggregates, and what is per subscriber
(``phonet_ws_connected``, and with ``PHONET_METRICS_PER_SUBSCRIBER=all`` each socket's
counts) is produced at scrape time by :class:`SocketsCollector` — no metric object per
socket — and the snapshot and the text are both made off the event loop, in the scrape's
worker thread (:mod:`producer.http`).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from producer import __version__
from producer.events import KNOWN_EVENTS, InvalidReason
from producer.replicas.metrics import ReplicaMetrics
from producer.rest.metrics import RestMetrics

if TYPE_CHECKING:
    from producer.publish.pipeline import Pipeline

# A `_created` series per counter doubles what is scraped and says nothing an operator uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

EVENT_LABELS = (*sorted(KNOWN_EVENTS), "other", "invalid")
"""``event`` label values of frames read from Phonet."""
PUBLISHED_LABELS = (*EVENT_LABELS, "click2call", "reply", "gap", "history", "active")
"""``event`` label values of what is published: frames, click2call outcomes, RPC replies,
gaps and what the REST API filled in (missed and in-progress calls)."""
CLICK2CALL_RESULTS = (
    "success",
    "pbx_error",
    "invalid",
    "unknown_subscriber",
    "forbidden",
    "number_not_allowed",
    "rate_limited",
    "not_connected",
    "timeout",
    "expired",
)
CONNECT_FAILURES = ("refused", "dns", "timeout", "tls", "auth", "vhost", "other")
SOCKET_FAILURES = ("auth", "http", "timeout", "network", "other")
PerSubscriber = Literal["connected", "all", "off"]
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SEAMS = ("aiormq_publish", "websockets_opcode")
DROP_REASONS = ("buffer_full", "spool_full", "shutdown", "unencodable", "refused")

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
            " (aiormq_publish: per session; websockets_opcode: per frame)",
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
            "Damaged spool records skipped at start (a torn tail after a crash counts once)",
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

    def watch(self, pipeline: Pipeline) -> None:
        """Read buffer depth, bytes and in-flight count when scraped, not on every event."""
        self.buffer_events.set_function(lambda: len(pipeline))
        self.buffer_bytes.set_function(lambda: pipeline.bytes)
        self.publish_inflight.set_function(lambda: pipeline.inflight)

    def watch_sockets(self, view: Callable[[], SocketsView]) -> None:
        """Socket gauges (and per-subscriber series) come from ``view`` at scrape time."""
        self.sockets.view = view

    def before_scrape(self) -> None:
        """Take the socket snapshot the next rendering shows. :func:`exposition`'s
        renderer calls it first, in its worker thread: with ten thousand sockets the
        snapshot alone is ~10 ms the event loop would otherwise wait for."""
        self.sockets.refresh()


class SocketRow(NamedTuple):
    """One socket at scrape time (a plain tuple: the collector stops tracking it)."""

    subscriber: str
    connected: bool
    flapping: bool
    connects: int
    disconnects: int
    failures: int


@dataclass(frozen=True)
class SocketsView:
    """The sockets at scrape time: per-subscriber rows, and their totals."""

    rows: list[SocketRow]
    total: int = -1
    up: int = 0
    flapping: int = 0

    def __post_init__(self) -> None:
        if self.total < 0:
            object.__setattr__(self, "total", len(self.rows))
            object.__setattr__(self, "up", sum(r.connected for r in self.rows))
            object.__setattr__(self, "flapping", sum(r.flapping for r in self.rows))


class SocketsCollector(Collector):
    """``phonet_ws_sockets``/``_up``/``_flapping`` (always) from the last snapshot
    :meth:`refresh` took, and by ``per_subscriber`` the per-subscriber block
    (:meth:`per_subscriber_text`): ``phonet_ws_connected{subscriber}`` (``connected``, the
    default) plus each socket's counts (``all``).

    The per-subscriber block is written here rather than by prometheus_client's encoders:
    with ten thousand subscribers those spend ~80 ms escaping labels and formatting floats
    each scrape; here the escaped prefix of each line is cached and a scrape is a join.
    """

    def __init__(self, per_subscriber: PerSubscriber) -> None:
        self.per_subscriber = per_subscriber
        self.view: Callable[[], SocketsView] = lambda: SocketsView([])
        self._snapshot = SocketsView([])
        self._labels: dict[str, bytes] = {}  # subscriber -> b'{subscriber="…"} '

    def refresh(self) -> None:
        self._snapshot = self.view()

    def forget(self) -> None:
        """Drop the rows once rendered, so they die young (the totals stay)."""
        view = self._snapshot
        self._snapshot = SocketsView([], view.total, view.up, view.flapping)

    def collect(self) -> Iterator[Metric]:
        view = self._snapshot
        for name, doc, value in (
            ("phonet_ws_sockets", "Subscriber sockets configured", view.total),
            ("phonet_ws_sockets_up", "Subscriber sockets open", view.up),
            (
                "phonet_ws_sockets_flapping",
                "Sockets whose recent connections did not stay up PHONET_HEALTHY_AFTER",
                view.flapping,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)

    def per_subscriber_text(self, openmetrics: bool) -> bytes:
        """The per-subscriber families in either exposition format (the same lines but for
        the counters' TYPE names)."""
        if self.per_subscriber == "off":
            return b""
        rows = self._snapshot.rows
        labels = [self._label(r.subscriber) for r in rows]
        out = [
            b"# HELP phonet_ws_connected 1 while the subscriber's socket is open\n"
            b"# TYPE phonet_ws_connected gauge\n",
            *(
                b"phonet_ws_connected" + label + (b"1.0\n" if r.connected else b"0.0\n")
                for label, r in zip(labels, rows, strict=True)
            ),
        ]
        if self.per_subscriber == "all":
            for name, doc, field in PER_SUBSCRIBER_COUNTERS:
                family = name if openmetrics else name + b"_total"
                out.append(b"# HELP " + family + b" " + doc + b"\n")
                out.append(b"# TYPE " + family + b" counter\n")
                sample = name + b"_total"
                out += (
                    sample + label + f"{float(getattr(r, field))}\n".encode()
                    for label, r in zip(labels, rows, strict=True)
                )
        return b"".join(out)

    def _label(self, subscriber: str) -> bytes:
        label = self._labels.get(subscriber)
        if label is None:
            value = subscriber.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
            label = self._labels[subscriber] = f'{{subscriber="{value}"}} '.encode()
            if len(self._labels) > 4 * max(1024, len(self._snapshot.rows)):
                self._labels.clear()  # subscribers come and go: keep the cache bounded
        return label


PER_SUBSCRIBER_COUNTERS = (
    (b"phonet_ws_subscriber_connects", b"Handshakes that succeeded, per subscriber", "connects"),
    (
        b"phonet_ws_subscriber_disconnects",
        b"Open sockets that closed, per subscriber",
        "disconnects",
    ),
    (
        b"phonet_ws_subscriber_connect_failures",
        b"Handshakes that failed, per subscriber",
        "failures",
    ),
)


def exposition(metrics: Metrics, accept: str) -> tuple[Callable[[], bytes], str]:
    """How to render ``/metrics`` for a scraper's ``Accept`` header: a function producing
    the body (meant to run off the event loop; one at a time, as the snapshot is shared)
    and the content type."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")

    def render() -> bytes:
        metrics.before_scrape()
        body = encoder(metrics.registry)
        extra = metrics.sockets.per_subscriber_text(openmetrics)
        metrics.sockets.forget()  # let the snapshot die young (see producer.gcpolicy)
        if openmetrics and body.endswith(b"# EOF\n"):
            return body[: -len(b"# EOF\n")] + extra + b"# EOF\n"
        return body + extra

    return render, content_type
