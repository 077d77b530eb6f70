"""Fixtures for end-to-end tests: simulator, running producers and a collecting consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator, Quirks
from producer.app.service import Producer
from tests.conftest import Janitor
from tests.proxy import TcpProxy
from tests.support import Collector, RpcClient, Service, producer_settings, until

SUBSCRIBERS = ("001", "002", "ivan.petrov@example.com")

StartProducer = Callable[..., Awaitable[Producer]]


@pytest.fixture(autouse=True)
def _broker_janitor(janitor: Janitor) -> Janitor:
    """First fixture of every e2e test, so its cleanup runs after everything else."""
    return janitor


@pytest.fixture
async def sim() -> AsyncIterator[PhonetSimulator]:
    """A simulator that knows three subscribers and generates no calls by itself."""
    async with PhonetSimulator(subscribers=SUBSCRIBERS, quirks=Quirks.none(), seed=1) as s:
        yield s


@pytest.fixture
async def collector(amqp: AbstractConnection, exchange_name: str) -> Collector:
    """Every message published on the test's exchange."""
    return await Collector(amqp, exchange_name).start()


@pytest.fixture
async def rpc(amqp: AbstractConnection, command_queue: str) -> RpcClient:
    """A click2call client publishing to the test's command queue."""
    return await RpcClient(amqp, command_queue).start()


@pytest.fixture
async def start_producer(
    sim: PhonetSimulator, amqp_url: str, exchange_name: str, command_queue: str
) -> AsyncIterator[StartProducer]:
    """Start producers pointed at ``sim``; they are stopped after the test."""
    running: list[Producer] = []

    async def start(
        subscribers: str = ",".join(SUBSCRIBERS), *, wait: bool = True, **overrides: Any
    ) -> Producer:
        """``wait``: return once the broker link is up and the command queue consumed."""
        overrides.setdefault("phonet_click2call_queue", command_queue)
        url = overrides.pop("amqp_url", amqp_url)
        settings = producer_settings(
            sim, url, exchange_name, phonet_subscribers=subscribers, **overrides
        )
        producer = Producer(settings)
        await producer.start()
        running.append(producer)
        if wait:
            await until(lambda: producer.click2call.consuming, what="command queue consumed")
        return producer

    yield start
    for producer in running:
        await producer.stop()


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    """Producer subprocesses started by a test; killed afterwards if still running."""
    started: list[Service] = []
    yield started
    for service in started:
        await service.kill()


@pytest.fixture
async def broker_proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the broker; ``broker_proxy.url(amqp_url)`` goes through it."""
    parts = urlsplit(amqp_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    yield proxy
    await proxy.close()
