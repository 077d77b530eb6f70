"""The fault suite's fixtures: one real three-node RabbitMQ cluster for the whole suite
(started once, ~30 s; nodes a scenario stopped or killed are started again before the next
one), and the ``faults`` marker on every test here (``python -m pytest -m faults`` runs the
suite alone; the default run includes it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.faults.cluster import RabbitCluster, available


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/faults/" in str(item.fspath) and item.fspath.basename.startswith("test_scenario"):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def cluster() -> Iterator[RabbitCluster]:
    """Three joined nodes; stopped and removed after the suite."""
    reason = available()
    if reason is not None:
        pytest.skip(f"no local RabbitMQ cluster: {reason}")
    running = asyncio.run(RabbitCluster(3).start())
    try:
        yield running
    finally:
        asyncio.run(running.close())


@pytest.fixture
async def healthy(cluster: RabbitCluster) -> RabbitCluster:
    """The cluster with every node running (a scenario before may have stopped one)."""
    await cluster.heal()
    return cluster
