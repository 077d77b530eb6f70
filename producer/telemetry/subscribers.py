"""The REST side's metrics, all with bounded labels (every child made at start)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

ENDPOINTS = ("authorize", "users", "history", "active")
RESULTS = ("ok", "auth", "http", "timeout", "network", "bad_json")
FILLED = ("history", "active")
LOOPS = ("discovery", "file", "backfill")


class RestMetrics:
    """``phonet_rest_requests_total{endpoint,result}``, gaps, backfilled calls, failures,
    and the REST loops' rounds that failed on a bug (see :mod:`producer.subscribers.supervise`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        counter = Counter(
            "phonet_rest_requests",
            "Phonet REST API requests by endpoint and result",
            ["endpoint", "result"],
            registry=registry,
        )
        self.requests = {(e, r): counter.labels(e, r) for e in ENDPOINTS for r in RESULTS}
        self.gaps = Counter(
            "phonet_gaps", "Gaps in a subscriber's stream, published as gap.*", registry=registry
        )
        filled = Counter(
            "phonet_backfilled_calls",
            "Calls read from the REST API and published (history: missed, active: in progress)",
            ["kind"],
            registry=registry,
        )
        self.filled = {kind: filled.labels(kind) for kind in FILLED}
        self.failures = Counter(
            "phonet_backfill_failures",
            "Backfill reads that failed (a gap is read again later, a bounded number of times)",
            registry=registry,
        )
        loop_failures = Counter(
            "phonet_rest_loop_failures",
            "Rounds of a REST loop that failed unexpectedly (a bug, logged with its"
            " traceback); the loop goes on after a backoff",
            ["loop"],
            registry=registry,
        )
        self.loop_failures = {loop: loop_failures.labels(loop) for loop in LOOPS}
