"""Fixtures for end-to-end tests: simulator, running producers and a collecting consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection

from producer.app import Producer
from producer.simulator import PhonetSimulator, Quirks
from tests.support import Collector, producer_settings

SUBSCRIBERS = ("001", "002", "ivan.petrov@example.com")

StartProducer = Callable[..., Awaitable[Producer]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


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
async def start_producer(
    sim: PhonetSimulator, amqp_url: str, exchange_name: str
) -> AsyncIterator[StartProducer]:
    """Start producers pointed at ``sim``; they are stopped after the test."""
    running: list[Producer] = []

    async def start(subscribers: str = ",".join(SUBSCRIBERS), **overrides: Any) -> Producer:
        settings = producer_settings(
            sim, amqp_url, exchange_name, phonet_subscribers=subscribers, **overrides
        )
        producer = Producer(settings)
        await producer.start()
        running.append(producer)
        return producer

    yield start
    for producer in running:
        await producer.stop()
