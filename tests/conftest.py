"""Shared fixtures. The broker comes from AMQP_URL when set, else from testcontainers
(a throwaway RabbitMQ in Docker), else the local default — so the same suite runs in CI,
on this machine (no Docker engine) and on a laptop with Docker."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest

from producer.amqp import open_connection
from producer.config import DEFAULT_AMQP_URL

log = logging.getLogger("tests")


def _testcontainers_url() -> tuple[str, object] | None:
    try:
        try:
            from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError:  # older testcontainers
            from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[no-redef]
        container = RabbitMqContainer("rabbitmq:3.13-alpine")
        container.start()
    except Exception as exc:  # docker.errors.DockerException when no engine runs
        log.info("testcontainers unavailable (%s); using the local broker", type(exc).__name__)
        return None
    host = container.get_container_host_ip()
    port = container.get_exposed_port(container.port)
    return f"amqp://{container.username}:{container.password}@{host}:{port}/", container


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A reachable RabbitMQ: AMQP_URL, else testcontainers, else the local default."""
    url = os.environ.get("AMQP_URL")
    if url:
        yield url
        return
    started = _testcontainers_url()
    if started is None:
        yield DEFAULT_AMQP_URL
        return
    url, container = started
    try:
        yield url
    finally:
        container.stop()  # type: ignore[attr-defined]


@pytest.fixture
def exchange_name() -> str:
    """A fresh exchange per test, so tests never see each other's messages."""
    return f"test.events.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def amqp(amqp_url: str, exchange_name: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A test-side broker connection; deletes the test's exchange afterwards."""
    connection = await open_connection(amqp_url, timeout=10, name="phonet-producer tests")
    try:
        yield connection
    finally:
        if not connection.is_closed:
            channel = await connection.channel()
            await channel.exchange_delete(exchange_name)
            await connection.close()
