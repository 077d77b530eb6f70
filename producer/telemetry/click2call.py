"""click2call's own counters beside ``phonet_click2call_commands_total`` (in
:mod:`producer.telemetry.metrics`): retries answered from the journal, commands whose properties
could not be decoded, commands handed to another replica, and the journal's trouble."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Click2CallMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.repeated = Counter(
            "phonet_click2call_repeated",
            "Retries of an already dialed command answered again from the journal, not dialed",
            registry=r,
        )
        self.undecodable = Counter(
            "phonet_click2call_undecodable",
            "Commands whose AMQP properties could not be decoded (answered invalid, rejected)",
            registry=r,
        )
        self.handed_over = Counter(
            "phonet_click2call_handed_over",
            "Commands handed through the journal to the replica that owns their subscriber",
            registry=r,
        )
        self.replies_refused = Counter(
            "phonet_click2call_replies_refused",
            "Replies the broker kept refusing (the caller's queue rejects them): given up",
            registry=r,
        )
        self.journal_up = Gauge(
            "phonet_click2call_journal_up",
            "1 while the click2call journal (a RabbitMQ stream) is read and written",
            registry=r,
        )
