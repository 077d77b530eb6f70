"""Every exchange, queue and binding the service uses, made from the settings in one place.

The values are :mod:`producer.broker.topology`'s; each feature declares its own part with
that module's declarer when its session starts. Read this file to know what the service
creates on a broker (the README's permission lines grant exactly these names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producer.app.settings import Settings
from producer.broker.topology import Binding, Exchange, Queue
from producer.click2call.journal import HORIZON


@dataclass(frozen=True)
class Topology:
    events: Exchange
    """The topic exchange every event is published to (durable)."""
    presence: Exchange
    """The replicas' heartbeats (fanout, not durable: a beat is worth nothing later)."""
    commands: Queue
    """The click2call command queue: commands older than the max age are dropped by the
    broker (never dialed late); quorum and a dead-letter exchange when configured. One that
    exists with other arguments is used as it is (warned)."""
    journal: Queue
    """The click2call journal, a stream: what was dialed and answered, kept twice the
    journal's horizon in small segments (a stream deletes whole segments)."""
    history: Queue | None
    """The call history, a stream bound to every event (PHONET_HISTORY_STREAM), or None."""


def topology(settings: Settings) -> Topology:
    publish, click2call = settings.publish, settings.click2call
    events = publish.phonet_exchange
    queue = click2call.phonet_click2call_queue
    commands: dict[str, Any] = {"x-message-ttl": int(click2call.phonet_click2call_max_age * 1000)}
    if click2call.phonet_click2call_queue_type == "quorum":
        commands["x-queue-type"] = "quorum"
    if click2call.phonet_click2call_dead_letter_exchange:
        commands["x-dead-letter-exchange"] = click2call.phonet_click2call_dead_letter_exchange
    history = None
    if publish.phonet_history_stream:
        max_bytes = publish.phonet_history_max_bytes
        history = Queue(
            publish.phonet_history_stream,
            "history stream",
            arguments={
                "x-queue-type": "stream",
                # RabbitMQ reads the age as <n>s.
                "x-max-age": f"{max(1, int(publish.phonet_history_max_age))}s",
                "x-max-length-bytes": max_bytes,
                # Retention drops whole segments: keep each small beside the total.
                "x-stream-max-segment-size-bytes": max(
                    1024 * 1024, min(max_bytes // 20, 500_000_000)
                ),
            },
            bindings=(Binding(events, "#"),),
        )
    return Topology(
        events=Exchange(events, "topic"),
        presence=Exchange(f"{events}.presence", "fanout", durable=False),
        commands=Queue(queue, "click2call queue", arguments=commands, keep_existing=True),
        journal=Queue(
            f"{queue}.journal",
            "click2call journal",
            arguments={
                "x-queue-type": "stream",
                "x-max-age": f"{max(1, int(2 * HORIZON // 60))}m",
                "x-stream-max-segment-size-bytes": 2_000_000,
                "x-max-length-bytes": 200_000_000,
            },
            keep_existing=True,
        ),
        history=history,
    )
