"""Many sockets: an isolated drop reconnects at once, a storm comes back through the
handshake gate (bounded in progress, paced), sockets that stayed up keep their events, and
/metrics stays small. Figures at 10,000 sockets are in the benchmark, not here."""

from __future__ import annotations

import asyncio
import gc
import re
import time

import pytest

from phonet_simulator import PhonetSimulator, Quirks
from producer.app.service import Producer
from producer.phonet import SubscriberSocket
from tests.support import Collector, http_get, metric_value, producer_settings, until


async def test_an_isolated_drop_reconnects_at_once(
    sim: PhonetSimulator, amqp_url: str, exchange_name: str
) -> None:
    """With the backoff floor at 5 s, only an immediate first retry is back within 1 s."""
    settings = producer_settings(
        sim,
        amqp_url,
        exchange_name,
        phonet_reconnect_min_delay=5.0,
        phonet_reconnect_max_delay=10.0,
        phonet_ping_interval=0.4,  # a socket up 0.2 s is healthy
    )
    async with Producer(settings):
        await sim.wait_connected(["001"])
        await asyncio.sleep(0.3)  # a healthy session
        dropped = time.monotonic()
        await sim.drop("001")
        await until(lambda: sim.handshakes["001"] == 2, timeout=5, what="reconnected")
        back = max(t for s, t in sim.handshake_log if s == "001") - dropped
    assert back < 1.0


@pytest.fixture
async def open_sim() -> PhonetSimulator:
    """A simulator that accepts any subscriber."""
    async with PhonetSimulator(quirks=Quirks.none(), seed=2) as s:
        yield s  # type: ignore[misc]


async def test_a_storm_comes_back_through_the_gate_and_the_rest_keep_flowing(
    open_sim: PhonetSimulator, amqp_url: str, exchange_name: str, collector: Collector
) -> None:
    """40 sockets dropped at once, a slow PBX (0.2 s a handshake), at most 3 handshakes at
    once and 40 a second: never more than 3 in progress, and a socket that stayed up
    delivers every event meanwhile."""
    sim = open_sim
    dropped_ones = [f"d{i:02d}" for i in range(40)]
    settings = producer_settings(
        sim,
        amqp_url,
        exchange_name,
        phonet_subscribers=",".join(["steady", *dropped_ones]),
        phonet_handshake_concurrency=3,
        phonet_handshake_rate=40.0,
    )
    async with Producer(settings) as producer:
        await sim.wait_connected(["steady", *dropped_ones], timeout=20)
        await asyncio.sleep(0.6)  # healthy sessions: the first retry is immediate
        sim.handshake_delay = 0.2
        for subscriber in dropped_ones:
            await sim.drop(subscriber)
        sent = set()
        for n in range(60):  # while the storm is on
            uuid = f"steady{n}"
            assert await sim.send("steady", {"event": "call.dial", "uuid": uuid}) == 1
            sent.add(uuid)
            await asyncio.sleep(0.02)
        await sim.wait_connected(dropped_ones, timeout=30)
        await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=20)
        assert sim.handshakes_peak == 3
        _, _, body = await http_get(producer.http.port, "/metrics")
        assert metric_value(body.decode(), "phonet_ws_sockets_up") == 41
        assert body.count(b"phonet_ws_connected{") == 41


async def test_scrapes_while_the_subscribers_change_are_whole_and_counts_exact(
    open_sim: PhonetSimulator, amqp_url: str, exchange_name: str
) -> None:
    """/metrics renders its socket snapshot in a worker thread while the loop opens and
    closes sockets: every scrape is whole (its totals agree with its own per-subscriber
    lines), and the open-socket count the health probes and heartbeats read is exact."""
    sim = open_sim
    everyone = tuple(f"c{i:02d}" for i in range(30))
    settings = producer_settings(
        sim, amqp_url, exchange_name, phonet_subscribers=",".join(everyone)
    )
    async with Producer(settings) as producer:
        await sim.wait_connected(list(everyone), timeout=20)
        changing = True

        async def churn() -> None:
            n = 0
            while changing:
                n += 1
                await producer.set_subscribers(everyone[: 10 + n % 20])
                await asyncio.sleep(0.01)

        task = asyncio.create_task(churn())
        try:
            for _ in range(40):
                _, _, body = await http_get(producer.http.port, "/metrics")
                text = body.decode()
                assert metric_value(text, "phonet_ws_sockets") == text.count("phonet_ws_connected{")
                up = len(re.findall(r"^phonet_ws_connected\{.*\} 1\.0$", text, re.M))
                assert metric_value(text, "phonet_ws_sockets_up") == up
        finally:
            changing = False
            await task
        wanted = everyone[:12]
        await producer.set_subscribers(wanted)
        await until(lambda: producer.sockets.all_up(), timeout=20, what="the 12 back up")
        assert producer.sockets.connected_count == len(producer.sockets) == 12
        sim.handshake_delay = 1.0  # the dropped one stays down a while
        await sim.drop(wanted[0])
        await until(lambda: producer.sockets.connected_count == 11, timeout=5, what="one down")
        assert not producer.sockets.all_up()
        sim.handshake_delay = 0.0
        await until(lambda: producer.sockets.all_up(), timeout=20, what="reconnected")
        _, _, body = await http_get(producer.http.port, "/readyz")
        assert b'"sockets_up":12' in body


async def test_a_removed_socket_is_freed_by_reference_counting(
    open_sim: PhonetSimulator, amqp_url: str, exchange_name: str
) -> None:
    """The service freezes the collector's view of the heap, so a socket that only a
    reference cycle kept alive would stay until a thaw: a removed one must be freed as
    soon as its task ends, with the collector off."""
    settings = producer_settings(open_sim, amqp_url, exchange_name, phonet_subscribers="keep,gone")
    async with Producer(settings) as producer:
        await open_sim.wait_connected(["keep", "gone"], timeout=20)

        def alive() -> list[str]:
            return [o.subscriber for o in gc.get_objects() if type(o) is SubscriberSocket]

        gc.collect()
        assert sorted(alive()) == ["gone", "keep"]
        gc.disable()
        try:
            await producer.set_subscribers(("keep",))
            await until(lambda: "gone" not in producer.sockets, timeout=5, what="removed")
            await asyncio.sleep(0.1)  # its task's last callbacks
            assert alive() == ["keep"]
        finally:
            gc.enable()
