"""The README's metrics list is exactly what the service exports, with bounded labels."""

from __future__ import annotations

import re

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from producer.telemetry.exposition import SocketRow, SocketsView, exposition
from producer.telemetry.metrics import Metrics
from tests.support import ROOT

README = ROOT / "README.md"


def exported() -> dict[str, set[str]]:
    metrics = Metrics(per_subscriber="all")
    metrics.watch_sockets(lambda: SocketsView([SocketRow("001", True, False, 1, 0, 0)]))
    metrics.before_scrape()
    text = exposition(metrics, "")[0]().decode()
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
        *("click2call", "bad_header", "unencodable", "refused", "obsolete"),
        *("aiormq_publish", "websockets_opcode", "pamqp_header", "unknown"),
        *("refused", "dns", "timeout", "tls", "auth", "vhost", "http", "network"),
        *("forbidden", "number_not_allowed", "rate_limited", "gap", "history", "active"),
        *("authorize", "users", "ok", "bad_json"),
        *("discovery", "file", "backfill"),
    } | {v for v in values if re.fullmatch(r"[\d.]+|\+Inf", v)}


def scrape(per_subscriber: str, rows: list[SocketRow], accept: str = "") -> str:
    metrics = Metrics(per_subscriber=per_subscriber)  # type: ignore[arg-type]
    metrics.watch_sockets(lambda: SocketsView(rows))
    metrics.before_scrape()
    return exposition(metrics, accept)[0]().decode()


ROWS = [
    SocketRow("001", connected=True, flapping=False, connects=3, disconnects=2, failures=0),
    SocketRow("002", connected=True, flapping=True, connects=9, disconnects=8, failures=4),
    SocketRow("003", connected=False, flapping=True, connects=0, disconnects=0, failures=7),
]


@pytest.mark.parametrize(
    ("mode", "series_per_subscriber"),
    [
        pytest.param("off", 0, id="off"),
        pytest.param("connected", 1, id="connected"),
        pytest.param("all", 4, id="all"),
    ],
)
def test_per_subscriber_series_follow_the_setting(mode: str, series_per_subscriber: int) -> None:
    text = scrape(mode, ROWS)
    for row in ROWS:
        assert text.count(f'subscriber="{row.subscriber}"') == series_per_subscriber
    assert "phonet_ws_sockets 3.0" in text
    assert "phonet_ws_sockets_up 2.0" in text
    assert "phonet_ws_sockets_flapping 2.0" in text


def test_each_rendering_takes_its_own_snapshot() -> None:
    """The snapshot is taken by the renderer (in its thread, off the event loop), so a
    scrape shows the sockets as they are when it runs, and nothing of an earlier one."""
    rows = list(ROWS)
    metrics = Metrics()
    metrics.watch_sockets(lambda: SocketsView(list(rows)))
    render = exposition(metrics, "")[0]
    assert 'phonet_ws_connected{subscriber="003"} 0.0' in render().decode()
    rows.pop()
    text = render().decode()
    assert 'subscriber="003"' not in text
    assert "phonet_ws_sockets 2.0" in text


def test_ten_thousand_subscribers_fit_a_small_scrape() -> None:
    rows = [SocketRow(f"agent{i:05d}@example.com", True, False, 1, 0, 0) for i in range(10_000)]
    assert len(scrape("connected", rows).encode()) < 1_000_000


@pytest.mark.parametrize(
    "accept",
    [
        pytest.param("", id="text"),
        pytest.param("application/openmetrics-text; version=1.0.0", id="openmetrics"),
    ],
)
def test_the_hand_written_block_parses_as_the_library_would_write_it(accept: str) -> None:
    """The per-subscriber block is written without prometheus_client's encoders: a
    parser reads the same families, values and escaped labels as from the library."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

    rows = [*ROWS, SocketRow('odd "name"\\x', True, False, 5, 4, 3)]
    text = scrape("all", rows, accept)
    parse = om if accept else text_string_to_metric_families
    families = {f.name: f for f in parse(text)}
    connected = {s.labels["subscriber"]: s.value for s in families["phonet_ws_connected"].samples}
    assert connected == {"001": 1.0, "002": 1.0, "003": 0.0, 'odd "name"\\x': 1.0}
    connects = families["phonet_ws_subscriber_connects"]
    assert connects.type == "counter"
    assert {s.labels["subscriber"]: s.value for s in connects.samples} == {
        "001": 3.0,
        "002": 9.0,
        "003": 0.0,
        'odd "name"\\x': 5.0,
    }
    if accept:
        assert text.endswith("# EOF\n")
