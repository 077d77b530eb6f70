"""HTTP adapter for ops: ``GET /metrics``, ``/healthz``, ``/readyz``.

A deliberately tiny HTTP/1.1 server on ``asyncio.start_server`` (no framework needed for
three read-only endpoints). :func:`respond` is pure: request line and health snapshot in,
:class:`Response` out; :class:`OpsServer` only reads the request head (bounded to 8 KiB and
5 seconds), writes the response and closes the connection.

* ``/healthz`` answers 200 whenever the event loop runs (it answers at all).
* ``/readyz`` answers 200 only when the broker is connected, at least one subscriber
  socket is up and the producer is not shutting down; else 503. Both return JSON.
* ``/metrics`` is the Prometheus exposition (OpenMetrics when the scraper asks for it).
  The text is rendered in a worker thread, snapshot included: with ten thousand sockets
  that is tens of milliseconds the loop (every frame, every confirm) does not wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

Exposition = Callable[[str], tuple[Callable[[], bytes], str]]
"""For an ``Accept`` header: a function rendering the metrics text, and its content type."""

log = logging.getLogger("producer.web.server")

MAX_HEAD_BYTES = 8192
READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class Health:
    """A snapshot of what readiness depends on."""

    amqp_connected: bool
    sockets_up: int
    sockets_total: int
    shutting_down: bool
    buffered: int = 0
    amqp_blocked: bool = False
    spool_degraded: bool = False
    version: str = ""
    replica_id: str = ""
    amqp_node: str = ""
    """The broker URL (password masked) of the current session, when connected."""
    replicas: dict[str, Any] | None = None
    """What this replica owns and stands by for, and how many replicas it hears."""
    rest: dict[str, Any] | None = None
    """Discovery and backfill status (see
    :meth:`producer.subscribers.service.RestService.status`)."""
    click2call: dict[str, Any] | None = None
    """Whether commands are consumed (see :meth:`producer.click2call.service.Click2Call.status`)."""
    history: dict[str, Any] | None = None
    """The history stream, when configured (see :mod:`producer.publish.history`)."""

    @property
    def ready(self) -> bool:
        return self.amqp_connected and self.sockets_up > 0 and not self.shutting_down


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    render: Callable[[], bytes] | None = None
    """When set, the body is ``render()``, called off the event loop."""


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _json(status: int, payload: object) -> Response:
    return Response(status, "application/json", orjson.dumps(payload) + b"\n")


def respond(method: str, target: str, accept: str, health: Health, metrics: Exposition) -> Response:
    """The response to one request. Pure: ``/metrics`` comes back with a ``render``
    function for the caller to run (off the event loop)."""
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _json(405, {"error": "only GET"})
    if path == "/healthz":
        return _json(200, {"status": "ok"})
    if path == "/readyz":
        body = {"ready": health.ready, **asdict(health)}
        return _json(200 if health.ready else 503, body)
    if path == "/metrics":
        render, content_type = metrics(accept)
        return Response(200, content_type, b"", render=render)
    return _json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})


def encode(response: Response, *, head_only: bool = False) -> bytes:
    reason = _REASONS.get(response.status, "")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + response.body


def parse_head(head: bytes) -> tuple[str, str, str] | None:
    """``(method, target, accept)`` from a request head, or None when malformed."""
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        return None
    accept = ""
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    return method, target, accept


class OpsServer:
    """Serves :func:`respond` on ``host:port``. ``health`` is called per request."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], Health],
        metrics: Exposition,
    ) -> None:
        self.host = host
        self.port = port
        self._health = health
        self._metrics = metrics
        self._scraping = asyncio.Lock()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        log.info("ops HTTP listening", extra={"host": self.host, "port": self.port})
        return self.port

    async def close(self) -> None:
        """Stop listening and wait for open requests to end (each is bounded to 5 s)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            parsed = parse_head(head[:-4])
            if parsed is None:
                response = _json(400, {"error": "bad request"})
                method = "GET"
            else:
                method, target, accept = parsed
                response = respond(method, target, accept, self._health(), self._metrics)
            if response.render is not None:
                # One scrape at a time: the snapshot is shared (and forgotten once
                # rendered), and a burst of scrapers must not occupy every core.
                async with self._scraping:
                    body = await asyncio.to_thread(response.render)
                response = Response(response.status, response.content_type, body)
            writer.write(encode(response, head_only=method == "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # slow, truncated or oversized request: just close
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
