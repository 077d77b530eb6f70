"""The replicas' metrics: what this replica owns, stands by for, hears, and took over."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ReplicaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.owned = Gauge("phonet_subscribers_owned", "Subscribers this replica owns", registry=r)
        self.standby = Gauge(
            "phonet_subscribers_standby", "Subscribers this replica stands by for", registry=r
        )
        self.replicas = Gauge(
            "phonet_replicas_seen", "Live replicas this one hears (itself included)", registry=r
        )
        self.takeovers = Counter(
            "phonet_takeovers",
            "Subscribers taken over from a vanished or leaving owner",
            registry=r,
        )
        self.replayed = Counter(
            "phonet_standby_replayed",
            "Events published from a standby window at a takeover (duplicates around it)",
            registry=registry,
        )
        self.window_dropped = Counter(
            "phonet_standby_dropped",
            "Events a standby window let go early to stay within its bounds (bytes, count):"
            " a takeover at that moment could miss them",
            registry=r,
        )
