"""Sockets close without asyncio errors (issue 21): when the PBX does not answer the close
frame in time, when websockets' close timeout elapses, and when the PBX drops the link
abruptly, no ``Exception in callback`` (or any ERROR record) is logged, no exception is
unraisable, shutdown stays within its bound, and every closed connection is still freed
by reference counting (with the collector off)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.client import ClientProtocol

from phonet_simulator import PhonetSimulator
from producer.app.service import Producer
from producer.phonet.connection import PhonetConnection
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import until


class Trouble(logging.Handler):
    """Every ERROR record (any logger) and every unraisable exception while installed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.warnings: list[str] = []
        self.unraisable: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
        else:
            self.warnings.append(record.getMessage())

    def report(self) -> list[str]:
        lines = [
            f"{r.name}: {r.getMessage()} {r.exc_info and r.exc_info[1]!r}" for r in self.records
        ]
        return lines + [f"unraisable: {u.exc_value!r} in {u.object!r}" for u in self.unraisable]


@pytest.fixture
def trouble(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trouble]:
    handler = Trouble()
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(sys, "unraisablehook", handler.unraisable.append)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def connections() -> int:
    """Live socket connections: websockets' connection objects and their protocol objects
    (a closed protocol can stay in a cycle with its parser after its connection is gone)."""
    return sum(1 for o in gc.get_objects() if type(o) in (PhonetConnection, ClientProtocol))


async def stop_and_settle(producer: Producer) -> None:
    """``stop()`` within its documented bound, then let the last transport callbacks run
    (a connection_lost scheduled by an abort) before anything is checked."""
    async with asyncio.timeout(producer.settings.phonet_shutdown_timeout + 2):
        await producer.stop()
    for _ in range(5):
        await asyncio.sleep(0.05)


async def start(
    start_producer: StartProducer, sim: PhonetSimulator, close_timeout: float | None = None
) -> Producer:
    producer = await start_producer(wait=False)
    await sim.wait_connected(SUBSCRIBERS)
    await until(lambda: producer.sockets.all_up(), what="every socket up")
    if close_timeout is not None:  # websockets reads it when closing
        for sock in producer.sockets._sockets.values():
            assert sock._ws is not None
            sock._ws.close_timeout = close_timeout
    return producer


@pytest.mark.parametrize(
    "close_timeout",
    [
        pytest.param(None, id="shutdown-cancels-the-close"),
        pytest.param(0.2, id="close-timeout-elapses"),
    ],
)
async def test_stop_while_the_pbx_does_not_answer(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    trouble: Trouble,
    close_timeout: float | None,
) -> None:
    """The PBX stops reading: the close frames go unanswered. Either the producer's
    shutdown budget for sockets runs out first (the close is cancelled mid-handshake), or
    websockets' own close timeout does (it aborts the connection itself)."""
    producer = await start(start_producer, sim, close_timeout)
    gc.collect()
    before = connections()
    assert sim.deafen() == len(SUBSCRIBERS)
    gc.disable()
    try:
        await stop_and_settle(producer)
        assert trouble.report() == []
        unanswered = trouble.warnings.count("socket did not close in time")
        assert unanswered == (len(SUBSCRIBERS) if close_timeout is None else 0)
        assert connections() == before - 2 * len(SUBSCRIBERS)  # freed without the collector
    finally:
        gc.enable()
    gc.collect()
    assert trouble.report() == []


async def test_an_abrupt_pbx_close(
    sim: PhonetSimulator, start_producer: StartProducer, trouble: Trouble
) -> None:
    """The PBX resets every link (no close frame): the sockets reconnect, the dead
    connections are freed without the collector, nothing logs an error; nor does a
    shutdown right after another reset."""
    producer = await start(start_producer, sim)
    gc.collect()
    before = connections()
    handshakes = sum(sim.handshakes.values())
    gc.disable()
    try:
        assert await sim.drop(code=None) == len(SUBSCRIBERS)
        await until(
            lambda: (
                sum(sim.handshakes.values()) == handshakes + len(SUBSCRIBERS)
                and producer.sockets.all_up()
            ),
            what="every socket back",
        )
        await asyncio.sleep(0.1)  # the old connections' last callbacks
        assert connections() == before  # the new ones replace the old ones
        assert trouble.report() == []
    finally:
        gc.enable()
    await sim.drop("001", code=None)
    await stop_and_settle(producer)
    gc.collect()
    assert trouble.report() == []


async def test_stop_during_the_handshakes(
    sim: PhonetSimulator, start_producer: StartProducer, trouble: Trouble
) -> None:
    """A handshake that completes after the shutdown began is closed at once; that
    connection too is freed without the collector."""
    sim.handshake_delay = 0.5
    gc.collect()
    before = connections()
    gc.disable()
    try:
        producer = await start_producer(wait=False)
        await until(lambda: sim.handshakes_in_progress == len(SUBSCRIBERS), what="handshaking")
        await stop_and_settle(producer)
        assert sum(sim.handshakes.values()) == len(SUBSCRIBERS)  # each did complete
        assert producer.metrics.ws_connects._value.get() == 0  # and never counted as open
        assert connections() == before
    finally:
        gc.enable()
    assert trouble.report() == []
