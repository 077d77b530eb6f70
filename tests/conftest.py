"""Shared fixtures. The broker comes from AMQP_URL when set, else from testcontainers
(a throwaway RabbitMQ in Docker), else the local default — so the same suite runs in CI,
on this machine (no Docker engine) and on a laptop with Docker.

Everything a test creates on the broker is named ``test.<run>.…`` and registered with the
:class:`Janitor`, which deletes it after the test, whatever happened; the last test of the
session checks that nothing named for this run is left
(``tests/e2e/test_nothing_left_on_the_broker.py``, marked ``runs_last``).

Markers registered here (``e2e`` and ``faults`` are in pyproject.toml): ``integration``; the
folder markers (``e2e``, ``integration``) are set below by folder, and ``runs_last`` is
honoured below."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from producer.app.settings import DEFAULT_AMQP_URL
from producer.broker.link import open_connection

log = logging.getLogger("tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: one adapter or the consumer toolkit against a real RabbitMQ, without"
        " the producer and the simulator end to end",
    )
    config.addinivalue_line(
        "markers", "runs_last: runs after every other test of the session (the broker check)"
    )


TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = ("e2e", "integration")
"""A test under ``tests/<folder>/`` carries the marker of that name: ``-m "not e2e"`` and
``-m integration`` select by folder."""


def pytest_itemcollected(item: pytest.Item) -> None:
    folder = item.path.relative_to(TESTS).parts[0]  # this conftest sees only tests/
    if folder in FOLDER_MARKERS:
        item.add_marker(folder)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``runs_last`` go to the end, whatever order the rest was collected in
    (trylast: after any other hook reordered the items)."""
    last = [item for item in items if item.get_closest_marker("runs_last") is not None]
    for item in last:
        items.remove(item)
    items.extend(last)


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


RUN = uuid.uuid4().hex[:8]
PREFIX = f"test.{RUN}."
"""Every broker object of this test run starts with this."""


def broker_name(kind: str) -> str:
    """A fresh name for a broker object of this run."""
    return f"{PREFIX}{kind}.{uuid.uuid4().hex[:10]}"


class Janitor:
    """Deletes the broker objects a test registered, after the test (whatever happened).
    For each exchange ``X`` it also deletes the queues ``X.click2call`` (and its journal)
    and ``X.journal``
    and the exchange ``X.presence`` that producers and examples derive from it, and for
    each queue ``Q`` the stream ``Q.journal`` (a command queue's journal)."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.exchanges: set[str] = set()
        self.queues: set[str] = set()

    def exchange(self, name: str) -> str:
        self.exchanges.update({name, f"{name}.presence"})  # replicas' heartbeats
        self.queues.update({f"{name}.click2call", f"{name}.click2call.journal", f"{name}.journal"})
        return name

    def queue(self, name: str) -> str:
        # A command queue gets its click2call journal (a stream) beside it.
        self.queues.update({name, f"{name}.journal"})
        return name

    async def clean(self) -> None:
        if not (self.exchanges or self.queues):
            return
        connection = await open_connection(self.amqp_url, timeout=10, name="tests janitor")
        try:
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in sorted(names):
                    channel = await connection.channel()
                    try:
                        if kind == "queue":
                            await channel.queue_delete(name)
                        else:
                            await channel.exchange_delete(name)
                    except Exception as exc:  # a missing object closes the channel: fine
                        log.debug("janitor: %s %s: %s", kind, name, exc)
                    finally:
                        if not channel.is_closed:
                            await channel.close()
        finally:
            await connection.close()


@pytest.fixture
async def janitor(amqp_url: str) -> AsyncIterator[Janitor]:
    """Set up before (and torn down after) every other fixture of an e2e test: the
    producers a test started are stopped before their objects are deleted."""
    cleaner = Janitor(amqp_url)
    yield cleaner
    await cleaner.clean()


@pytest.fixture
def exchange_name(janitor: Janitor) -> str:
    """A fresh exchange per test, so tests never see each other's messages."""
    return janitor.exchange(broker_name("events"))


@pytest.fixture
def command_queue(janitor: Janitor) -> str:
    """A fresh click2call queue name per test; the janitor deletes the queue afterwards."""
    return janitor.queue(broker_name("click2call"))


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
