"""The README's metrics list is exactly what the service exports, with bounded labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from producer.metrics import Metrics

README = Path(__file__).resolve().parents[2] / "README.md"


def exported() -> dict[str, set[str]]:
    metrics = Metrics()
    metrics.add_subscriber("001")
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text  # one per counter: noise nobody alerts on
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        if family.type == "info":
            name = family.name + "_info"
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        families[name] = labels
    return families


def documented() -> dict[str, set[str]]:
    section = README.read_text(encoding="utf-8").split("## Metrics and health", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(phonet_[a-z0-9_]+)` \| \w+ \|([^|]*)\|", section, re.M)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def test_readme_lists_every_metric_with_its_labels() -> None:
    assert documented() == exported()


def test_no_metric_or_label_value_can_carry_a_secret_or_be_unbounded() -> None:
    metrics = Metrics()
    text = generate_latest(metrics.registry).decode()
    # Before any subscriber is added, every labelled series is pre-created from fixed sets.
    values = set(re.findall(r'="([^"]*)"', text))
    assert values <= {
        *("call.dial", "call.bridge", "call.hangup", "error", "other", "invalid"),
        *("binary", "bad_utf8", "bad_json", "not_object", "missing_event", "event_not_string"),
        *("bad_event", "too_large", "buffer_full", "spool_full", "shutdown", "success"),
        *("pbx_error", "unknown_subscriber", "not_connected", "timeout", "expired"),
        *("click2call", "reply", "bad_header", "unencodable", "refused"),
        *("aiormq_publish", "websockets_opcode"),
        *("refused", "dns", "timeout", "tls", "auth", "vhost"),
    } | {v for v in values if re.fullmatch(r"[\d.]+|\+Inf", v)}
