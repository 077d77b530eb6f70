"""The ops HTTP layer without sockets: request heads and responses."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder

from producer.web.server import Exposition, Health, encode, parse_head, respond

UP = Health(amqp_connected=True, sockets_up=1, sockets_total=2, shutting_down=False)


def registry() -> Exposition:
    r = CollectorRegistry()
    Counter("demo_things", "things", registry=r).inc(3)

    def render(accept: str) -> tuple[Callable[[], bytes], str]:
        encoder, content_type = choose_encoder(accept)
        return lambda: encoder(r), content_type

    return render


@pytest.mark.parametrize(
    ("health", "status"),
    [
        pytest.param(UP, 200, id="ready"),
        pytest.param(Health(False, 1, 2, False), 503, id="broker-down"),
        pytest.param(Health(True, 0, 2, False), 503, id="no-socket-up"),
        pytest.param(Health(True, 2, 2, True), 503, id="shutting-down"),
        pytest.param(Health(True, 0, 0, False), 503, id="no-subscribers"),
    ],
)
def test_readyz(health: Health, status: int) -> None:
    response = respond("GET", "/readyz", "", health, registry())
    assert response.status == status
    body = orjson.loads(response.body)
    assert body["ready"] is (status == 200)
    assert body["amqp_connected"] is health.amqp_connected
    assert body["sockets_up"] == health.sockets_up


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        pytest.param("GET", "/healthz", 200, id="healthz"),
        pytest.param("GET", "/healthz?verbose=1", 200, id="query-ignored"),
        pytest.param("HEAD", "/healthz", 200, id="head"),
        pytest.param("POST", "/healthz", 405, id="post"),
        pytest.param("GET", "/", 404, id="root"),
        pytest.param("GET", "/metricsx", 404, id="near-miss"),
    ],
)
def test_routes(method: str, target: str, status: int) -> None:
    assert respond(method, target, "", UP, registry()).status == status


@pytest.mark.parametrize(
    ("accept", "content_type", "needle"),
    [
        pytest.param("", "text/plain", b"demo_things_total 3.0", id="prometheus-text"),
        pytest.param(
            "application/openmetrics-text; version=1.0.0",
            "application/openmetrics-text",
            b"# EOF",
            id="openmetrics",
        ),
    ],
)
def test_metrics_negotiation(accept: str, content_type: str, needle: bytes) -> None:
    response = respond("GET", "/metrics", accept, UP, registry())
    assert response.status == 200
    assert response.content_type.startswith(content_type)
    assert response.render is not None  # rendered off the event loop
    assert needle in response.render()


@pytest.mark.parametrize(
    ("head", "parsed"),
    [
        pytest.param(b"GET /readyz HTTP/1.1\r\nHost: x", ("GET", "/readyz", ""), id="simple"),
        pytest.param(
            b"GET /metrics HTTP/1.0\r\naccept: text/plain",
            ("GET", "/metrics", "text/plain"),
            id="accept-any-case",
        ),
        pytest.param(b"GET /x", None, id="no-version"),
        pytest.param(b"GET x HTTP/1.1", None, id="not-a-path"),
        pytest.param(b"GET /x SPDY/3", None, id="not-http"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"GET  /x HTTP/1.1", None, id="double-space"),
    ],
)
def test_parse_head(head: bytes, parsed: tuple[str, str, str] | None) -> None:
    assert parse_head(head) == parsed


def test_encode_head_only_has_length_of_body() -> None:
    response = respond("GET", "/healthz", "", UP, registry())
    raw = encode(response, head_only=True)
    assert raw.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(response.body)}".encode() in raw
    assert encode(response).endswith(response.body)
