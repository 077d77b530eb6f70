"""Fixtures for integration tests: one adapter (or the consumer toolkit) against the real
broker, without the producer and the simulator end to end. The broker, the janitor and a
test-side connection come from ``tests/conftest.py``."""

from __future__ import annotations

import pytest

from tests.conftest import Janitor


@pytest.fixture(autouse=True)
def _broker_janitor(janitor: Janitor) -> Janitor:
    """First fixture of every integration test, so its cleanup runs after everything else."""
    return janitor
