"""Helpers shared by the test suites: the repository root and the vendor's sample frame
(unit and e2e), the producer's AsyncAPI document as schemas, a consuming collector and an
ops HTTP client (integration and e2e), and log records checked for leaked secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aio_pika
import jsonschema
import orjson
import yaml
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from phonet_simulator import PhonetSimulator
from phonet_simulator.calls import VENDOR_SAMPLE
from producer.app.service import Producer
from producer.app.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
"""The repository's root (README.md, producer/, consumers_examples/)."""

SAMPLE = VENDOR_SAMPLE
"""The vendor's documented ``call.dial`` frame."""


def frame(**changes: object) -> bytes:
    """:data:`SAMPLE` as JSON bytes with ``changes`` (a value of ``...`` drops the field)."""
    data = dict(SAMPLE)
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return orjson.dumps(data)


def call(event: str = "call.dial", **changes: object) -> dict[str, object]:
    """:data:`SAMPLE` as a frame's data, with another ``event`` and ``changes``."""
    return {**SAMPLE, "event": event, **changes}


def leaked(records: list[logging.LogRecord], secrets: list[str]) -> list[str]:
    """Log records whose message, arguments, extras or traceback hold one of ``secrets``."""
    found = []
    for record in records:
        text = " ".join(
            (record.getMessage(), repr(record.args), str(record.__dict__), record.exc_text or "")
        )
        if any(secret in text for secret in secrets):
            found.append(f"{record.name} {record.levelname}: {record.getMessage()[:120]}")
    return found


@dataclass
class Received:
    """One message as a consumer saw it."""

    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    content_type: str | None
    delivery_mode: int | None
    app_id: str | None
    type: str | None
    timestamp: Any
    correlation_id: str | None = None

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Collector:
    """An exclusive queue bound to ``exchange`` with ``binding``; keeps every message."""

    connection: AbstractConnection
    exchange: str
    binding: str = "#"
    messages: list[Received] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Collector:
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await self.queue.bind(exchange, self.binding)
        await self.queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(
            Received(
                routing_key=message.routing_key or "",
                body=message.body,
                headers=dict(message.headers),
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
                app_id=message.app_id,
                type=message.type,
                timestamp=message.timestamp,
                correlation_id=message.correlation_id,
            )
        )
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        """Wait until ``predicate(messages)`` holds; AssertionError with context on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.messages):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            keys = [m.routing_key for m in self.messages[-10:]]
            raise AssertionError(
                f"timed out after {timeout}s with {len(self.messages)} messages; last: {keys}"
            ) from None
        return self.messages

    async def wait_count(self, count: int, timeout: float = 10.0) -> list[Received]:
        return await self.wait_for(lambda m: len(m) >= count, timeout)

    def uuids(self) -> set[str]:
        return {m.headers["uuid"] for m in self.messages if "uuid" in m.headers}


class RpcClient:
    """Publishes commands to a queue and collects replies on a private reply queue."""

    def __init__(self, connection: AbstractConnection, queue: str) -> None:
        self.connection = connection
        self.queue = queue
        self.replies: dict[str, asyncio.Future[Received]] = {}

    async def start(self) -> RpcClient:
        self.channel = await self.connection.channel()
        self.reply_queue = await self.channel.declare_queue("", exclusive=True, auto_delete=True)
        await self.reply_queue.consume(self._on_reply, no_ack=True)
        return self

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiter = self.replies.get(message.correlation_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(
                Received(
                    routing_key=message.routing_key or "",
                    body=message.body,
                    headers=dict(message.headers),
                    message_id=message.message_id,
                    content_type=message.content_type,
                    delivery_mode=None,
                    app_id=message.app_id,
                    type=message.type,
                    timestamp=message.timestamp,
                    correlation_id=message.correlation_id,
                )
            )

    async def send(self, body: Any, *, correlation_id: str, **properties: Any) -> None:
        """Publish one command (dict → JSON); the reply is awaited with :meth:`reply`."""
        import datetime

        loop = asyncio.get_running_loop()
        self.replies[correlation_id] = loop.create_future()
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        properties.setdefault("timestamp", datetime.datetime.now(datetime.UTC))
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                raw,
                correlation_id=correlation_id,
                reply_to=self.reply_queue.name,
                content_type="application/json",
                **properties,
            ),
            routing_key=self.queue,
        )

    async def reply(self, correlation_id: str, timeout: float = 10.0) -> Received:
        async with asyncio.timeout(timeout):
            return await self.replies[correlation_id]

    async def call(self, body: Any, timeout: float = 10.0, **properties: Any) -> Received:
        import uuid

        correlation_id = uuid.uuid4().hex
        await self.send(body, correlation_id=correlation_id, **properties)
        return await self.reply(correlation_id, timeout)


def producer_settings(
    sim: PhonetSimulator, amqp_url: str, exchange: str, **overrides: Any
) -> Settings:
    """Settings pointing at ``sim`` with test-friendly (fast) reconnect timings."""
    values: dict[str, Any] = {
        "phonet_domain": sim.domain,
        "phonet_api_key": sim.api_key,
        "phonet_api_key_file": None,
        "phonet_subscribers": "001",
        "phonet_url": sim.url,
        "phonet_rest_url": sim.rest_url,
        "amqp_url": amqp_url,
        "phonet_exchange": exchange,
        "phonet_click2call_queue": f"{exchange}.click2call",  # the janitor deletes it
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "phonet_reconnect_min_delay": 0.05,
        "phonet_reconnect_max_delay": 0.5,
        "amqp_reconnect_min_delay": 0.1,
        "amqp_reconnect_max_delay": 0.5,
        "phonet_shutdown_timeout": 5.0,
        "phonet_presence_interval": 0.075,  # replicas: gone after 0.3 s, not 2 s
    }
    values.update(overrides)
    return load_settings(**values)


async def http_get(port: int, path: str, accept: str = "") -> tuple[int, str, bytes]:
    """``GET path`` on the ops server: ``(status, content_type, body)``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
    if accept:
        head += f"Accept: {accept}\r\n"
    writer.write((head + "\r\n").encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    content_type = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("content-type")), ""
    )
    return status, content_type, body


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text exposition (0.0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or labels.items() <= sample.labels.items()):
                return float(sample.value)
    return 0.0


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms; AssertionError naming ``what`` on timeout."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or predicate}"
        ) from None


BASE_ENV = {
    k: v for k, v in os.environ.items() if not k.startswith(("PHONET_", "METRICS_", "LOG_"))
}


def service_env(sim: PhonetSimulator, amqp_url: str, exchange: str, **extra: str) -> dict[str, str]:
    return {
        **BASE_ENV,
        "PHONET_DOMAIN": sim.domain,
        "PHONET_API_KEY": sim.api_key,
        "PHONET_SUBSCRIBERS": "001,002,ivan.petrov@example.com",
        "PHONET_URL": sim.url,
        "PHONET_REST_URL": sim.rest_url,
        "AMQP_URL": amqp_url,
        "PHONET_EXCHANGE": exchange,
        "PHONET_CLICK2CALL_QUEUE": f"{exchange}.click2call",  # the janitor deletes it
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": "0",
        "PHONET_PRESENCE_INTERVAL": "0.075",
        **extra,
    }


class Service:
    """``python -m producer`` in a subprocess, with its stderr collected as it runs."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env, self.args = env, args
        self.lines: list[str] = []

    async def start(self) -> Service:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "producer",
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def json_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines if line.startswith("{")]

    async def metrics_port(self) -> int:
        def port() -> int | None:
            for entry in self.json_lines():
                if entry.get("msg") == "ops HTTP listening":
                    return int(entry["port"])
            return None

        await until(lambda: port() is not None, what="ops HTTP port in the log")
        found = port()
        assert found is not None
        return found

    async def wait(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


# --- the producer's AsyncAPI document --------------------------------------------------------

DOC_PATH = ROOT / "producer" / "asyncapi.yaml"
WORD = r"(?:[A-Za-z0-9_@+\-]|%[0-9A-F]{2})+"


@cache
def document() -> dict[str, Any]:
    """producer/asyncapi.yaml, parsed."""
    return yaml.safe_load(DOC_PATH.read_text())  # type: ignore[no-any-return]


def validator(pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at ``pointer`` (a ``#/components/...`` reference) of the
    document."""
    registry = Registry().with_resource(
        "urn:asyncapi", Resource.from_contents(document(), default_specification=DRAFT7)
    )
    return jsonschema.Draft7Validator({"$ref": f"urn:asyncapi{pointer}"}, registry=registry)


def message_schemas(
    name: str,
) -> tuple[jsonschema.Draft7Validator | None, jsonschema.Draft7Validator]:
    """The validators of message ``name``'s headers (None when it has none) and payload."""
    message = document()["components"]["messages"][name]
    headers = message.get("headers")
    payload = message["payload"]
    base = f"#/components/messages/{name}"
    return (
        validator(f"{base}/headers") if headers else None,
        validator(f"{base}/payload") if payload else jsonschema.Draft7Validator({}),
    )


def address_pattern(channel: str) -> re.Pattern[str]:
    """The channel's address with parameters as escaped routing words (event: 1+ words)."""
    address = document()["channels"][channel]["address"]
    enums = document()["channels"][channel].get("parameters", {})

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1)
        if "enum" in enums.get(name, {}):
            return "(?:" + "|".join(map(re.escape, enums[name]["enum"])) + ")"
        return rf"{WORD}(?:\.{WORD})*" if name == "event" else WORD

    return re.compile(re.sub(r"\\\{(\w+)\\\}", parameter, re.escape(address)))


def channel_of(routing_key: str) -> str:
    for channel in ("invalidFrames", "click2callOutcomes", "gaps", "historyCalls", "activeCalls"):
        if address_pattern(channel).fullmatch(routing_key):
            return channel
    return "callEvents"


MESSAGE_OF = {
    "callEvents": "callEvent",
    "invalidFrames": "invalidFrame",
    "click2callOutcomes": "click2callOutcome",
    "gaps": "gap",
    "historyCalls": "historyCall",
    "activeCalls": "activeCall",
}


def check(message: Received, name: str) -> None:
    """``message`` (as a consumer received it) is a valid ``name`` of the document."""
    headers, payload = message_schemas(name)
    if headers is not None:
        errors = [e.message for e in headers.iter_errors(message.headers)]
        assert errors == [], (name, message.routing_key, message.headers, errors)
    if name != "invalidFrame":
        data = orjson.loads(message.body)
        errors = [e.message for e in payload.iter_errors(data)]
        assert errors == [], (name, message.routing_key, data, errors)
    assert message.content_type == "application/json"
    assert message.message_id


__all__ = ["Collector", "Producer", "Received", "http_get", "metric_value", "producer_settings"]
