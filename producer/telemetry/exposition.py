"""How ``/metrics`` is written: the socket families from a snapshot, the per-subscriber
block by hand, the rest by prometheus_client — all of it in the scrape's worker thread.

With ten thousand subscribers prometheus_client's encoders spent ~80 ms escaping labels
and formatting floats each scrape; here the escaped prefix of each line is cached and a
scrape is a join. The snapshot is taken by the renderer itself (see
:meth:`producer.phonet.pool.SocketPool.view` for why that is safe off the loop), so the
event loop does none of this work. Renders must not overlap (the snapshot is shared):
:class:`producer.web.server.OpsServer` runs one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

PerSubscriber = Literal["connected", "all", "off"]


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
                "Sockets whose recent connections did not stay up half PHONET_PING_INTERVAL",
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


class Scraped(Protocol):
    """What a scrape renders: a registry, the sockets' collector, and the work to do
    before (:class:`~producer.telemetry.metrics.Metrics`)."""

    registry: CollectorRegistry
    sockets: SocketsCollector

    def before_scrape(self) -> None: ...


def exposition(metrics: Scraped, accept: str) -> tuple[Callable[[], bytes], str]:
    """How to render ``/metrics`` for a scraper's ``Accept`` header: a function producing
    the body (meant to run off the event loop; one at a time, as the snapshot is shared)
    and the content type."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")

    def render() -> bytes:
        metrics.before_scrape()
        body = encoder(metrics.registry)
        extra = metrics.sockets.per_subscriber_text(openmetrics)
        metrics.sockets.forget()  # let the snapshot die young (see producer.app.gcpolicy)
        if openmetrics and body.endswith(b"# EOF\n"):
            return body[: -len(b"# EOF\n")] + extra + b"# EOF\n"
        return body + extra

    return render, content_type
