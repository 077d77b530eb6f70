"""Several replicas on one broker, end to end: one owner per subscriber (no duplicate in
steady state), a hot standby that loses nothing when the owner is killed, a rolling
SIGTERM, a replica joining, and click2call across replicas. Asserted by event uuid."""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
from urllib.parse import urlsplit

import orjson
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator
from producer.app.service import Producer
from tests.e2e.conftest import StartProducer
from tests.proxy import TcpProxy
from tests.support import Collector, RpcClient, Service, call, http_get, service_env, until

SUBS = [f"{n:03d}" for n in range(1, 13)]
uuids = itertools.count()


def owners(producers: list[Producer]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    for producer in producers:
        for subscriber in producer.coordinator.roles.owned:
            found[subscriber].append(producer.settings.replica_id)
    return found


async def settled(sim: PhonetSimulator, producers: list[Producer], standby: int = 1) -> None:
    """Every subscriber has one owner and, with hot standby, a second socket; no replica
    still publishes what it handed over (steady state)."""
    await until(
        lambda: (
            all(len(owners(producers).get(s, [])) == 1 for s in SUBS)
            and all(sim.sockets_of(s) == 1 + standby for s in SUBS)
            and not any(p.coordinator.handing_over for p in producers)
        ),
        timeout=20,
        what="one owner per subscriber, standby sockets up, handovers done",
    )


async def traffic(sim: PhonetSimulator, sent: list[str], stop: asyncio.Event) -> None:
    """An event for each subscriber in turn every 5 ms until ``stop``; ``sent`` gets the
    uuid of each event the PBX delivered to at least one socket."""
    for subscriber in itertools.cycle(SUBS):
        if stop.is_set():
            return
        uuid = f"u{next(uuids)}"
        if await sim.send(subscriber, call(uuid=uuid)):
            sent.append(uuid)
        await asyncio.sleep(0.005)


async def dialing(rpc: RpcClient, stop: asyncio.Event) -> dict[str, asyncio.Task[object]]:
    """A click2call command for each subscriber in turn every 20 ms until ``stop``, each to
    its own number (the PBX's log tells the dials apart). Returns number → reply task."""
    replies: dict[str, asyncio.Task[object]] = {}
    for n, subscriber in enumerate(itertools.cycle(SUBS)):
        if stop.is_set():
            return replies
        to = f"38099{n:07d}"
        replies[to] = asyncio.create_task(rpc.call({"subscriber": subscriber, "to": to}, 20))
        await asyncio.sleep(0.02)
    return replies


async def outcomes(
    sim: PhonetSimulator, replies: dict[str, asyncio.Task[object]]
) -> tuple[collections.Counter[str], dict[str, str]]:
    """Dials per number, and each command's reply (``event`` or ``no reply``)."""
    await asyncio.wait(replies.values())
    dials = collections.Counter(a["to"] for _, a in sim.actions if isinstance(a, dict))
    answered = {}
    for to, task in replies.items():
        answered[to] = "no reply" if task.exception() else task.result().json["event"]  # type: ignore[attr-defined]
    return dials, answered


def published(collector: Collector) -> collections.Counter[str]:
    return collections.Counter(
        m.headers["uuid"] for m in collector.messages if m.routing_key.startswith("call.")
    )


async def test_three_replicas_share_the_subscribers_without_duplicates(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.known = None
    producers = [await start_producer(",".join(SUBS), phonet_replica_id=f"r{n}") for n in range(3)]
    await settled(sim, producers)  # handovers end only once the new owners say they are warm
    assert not [r for r in caplog.records if "another replica uses" in r.getMessage()]
    shares = [len(p.coordinator.roles.owned) for p in producers]
    assert sum(shares) == len(SUBS)
    assert all(n >= 1 for n in shares), shares  # spread (12 over 3 by rendezvous hashing)
    sent = [f"steady-{s}" for s in SUBS]
    for subscriber, uuid in zip(SUBS, sent, strict=True):
        assert await sim.send(subscriber, call(uuid=uuid)) == 2  # owner and standby
    await collector.wait_for(lambda ms: set(sent) <= set(published(collector)))
    await asyncio.sleep(0.5)
    assert published(collector) == collections.Counter(sent)  # each exactly once


async def test_a_twin_replica_id_is_reported(
    sim: PhonetSimulator, start_producer: StartProducer, caplog: pytest.LogCaptureFixture
) -> None:
    sim.known = None
    await start_producer(",".join(SUBS), phonet_replica_id="same")
    await start_producer(",".join(SUBS), phonet_replica_id="same")
    await until(
        lambda: any("another replica uses" in r.getMessage() for r in caplog.records),
        what="the twin reported",
    )


async def test_a_joining_replica_takes_its_share_and_nothing_is_lost(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    sim.known = None
    first = await start_producer(",".join(SUBS), phonet_replica_id="r1")
    await settled(sim, [first], standby=0)
    sent: list[str] = []
    stop = asyncio.Event()
    sender = asyncio.create_task(traffic(sim, sent, stop))
    await asyncio.sleep(0.3)
    second = await start_producer(",".join(SUBS), phonet_replica_id="r2")
    await settled(sim, [first, second])
    await asyncio.sleep(0.5)
    stop.set()
    await sender
    await collector.wait_for(lambda ms: set(sent) <= set(published(collector)), timeout=15)
    assert 0 < len(second.coordinator.roles.owned) < len(SUBS)
    # After the handover grace, no duplicates any more.
    await asyncio.sleep(second.settings.replicas.handover_grace + 0.5)
    late = [f"late-{s}" for s in SUBS]
    for subscriber, uuid in zip(SUBS, late, strict=True):
        await sim.send(subscriber, call(uuid=uuid))
    await collector.wait_for(lambda ms: set(late) <= set(published(collector)))
    await asyncio.sleep(0.5)
    assert all(published(collector)[u] == 1 for u in late)


async def test_click2call_is_dialed_once_by_the_owner_across_replicas(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    sim.known = None
    producers = [await start_producer(",".join(SUBS), phonet_replica_id=f"r{n}") for n in range(3)]
    await settled(sim, producers)
    replies = await asyncio.gather(
        *(rpc.call({"subscriber": s, "to": "380991234567", "id": s}, timeout=20) for s in SUBS)
    )
    assert [r.json["event"] for r in replies] == ["success"] * len(SUBS)
    assert collections.Counter(s for s, _ in sim.actions) == collections.Counter(SUBS)


async def replica_services(
    sim: PhonetSimulator, amqp_url: str, exchange: str, services: list[Service], n: int
) -> list[Service]:
    started = []
    for i in range(n):
        env = service_env(
            sim,
            amqp_url,
            exchange,
            PHONET_SUBSCRIBERS=",".join(SUBS),
            PHONET_REPLICA_ID=f"p{i}",
            PHONET_RECONNECT_MIN_DELAY="0.05",
            PHONET_RECONNECT_MAX_DELAY="0.5",
            PHONET_SHUTDOWN_TIMEOUT="4",
        )
        service = await Service(env).start()
        services.append(service)
        started.append(service)
    return started


class Load:
    """Events on every subscriber and click2call commands, flowing until :meth:`end`."""

    def __init__(self, sim: PhonetSimulator, rpc: RpcClient) -> None:
        self.sent: list[str] = []
        self.stop = asyncio.Event()
        self.sender = asyncio.create_task(traffic(sim, self.sent, self.stop))
        self.commands = asyncio.create_task(dialing(rpc, self.stop))

    async def end(self, collector: Collector) -> None:
        """Stop sending; return once every event sent is published."""
        self.stop.set()
        await self.sender
        await collector.wait_for(lambda ms: set(self.sent) <= set(published(collector)), timeout=20)


async def hot_under_load(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange: str,
    services: list[Service],
    amqp: AbstractConnection,
    n: int,
) -> tuple[list[Service], Load]:
    """``n`` replica processes, every subscriber held hot (two sockets), then a second of
    events and commands under way."""
    sim.known = None
    replicas = await replica_services(sim, amqp_url, exchange, services, n)
    await until(lambda: all(sim.sockets_of(s) == 2 for s in SUBS), timeout=20, what="hot")
    await asyncio.sleep(0.5)
    load = Load(sim, await RpcClient(amqp, f"{exchange}.click2call").start())
    await asyncio.sleep(1.0)
    return replicas, load


async def test_killing_an_owner_loses_no_event(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    services: list[Service],
    collector: Collector,
    amqp: AbstractConnection,
) -> None:
    """Events and click2call commands in flight while an owner is killed: every event
    published, no command dialed twice, a success only for a command dialed once."""
    replicas, load = await hot_under_load(sim, amqp_url, exchange_name, services, amqp, 3)
    replicas[0].proc.send_signal(signal.SIGKILL)  # kill -9 of an owner, under traffic
    await replicas[0].proc.wait()
    await until(lambda: all(sim.sockets_of(s) >= 1 for s in SUBS), timeout=10, what="owned")
    await asyncio.sleep(2.0)
    await load.end(collector)
    counts = published(collector)
    duplicated = sum(1 for u in load.sent if counts[u] > 1)
    assert duplicated < len(load.sent) / 2  # duplicates around the takeover only
    dials, answered = await outcomes(sim, await load.commands)
    assert len(answered) >= 50
    assert max(dials.values()) == 1  # never dialed twice
    for to, event in answered.items():
        if event == "success":
            assert dials[to] == 1
    # Only commands the killed owner had taken can go unanswered (it died holding them).
    assert list(answered.values()).count("no reply") <= len(answered) / 3


async def test_a_rolling_sigterm_loses_no_event(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    services: list[Service],
    collector: Collector,
    amqp: AbstractConnection,
) -> None:
    """A rolling restart under events and click2call commands: every event published,
    every command answered, none dialed twice."""
    replicas, load = await hot_under_load(sim, amqp_url, exchange_name, services, amqp, 2)
    replicas[0].proc.send_signal(signal.SIGTERM)
    assert await replicas[0].wait(timeout=15) == 0
    replacement = (await replica_services(sim, amqp_url, exchange_name, services, 1))[0]
    await until(lambda: all(sim.sockets_of(s) == 2 for s in SUBS), timeout=20, what="back")
    await asyncio.sleep(1.0)
    await load.end(collector)
    assert replacement.proc.returncode is None
    dials, answered = await outcomes(sim, await load.commands)
    assert len(answered) >= 50
    assert "no reply" not in answered.values()  # a graceful handover answers every command
    assert max(dials.values()) == 1  # never dialed twice
    for to, event in answered.items():
        if event == "success":
            assert dials[to] == 1


async def test_several_broker_urls_fail_over(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    amqp_url: str,
) -> None:
    """Two "nodes" (two TCP proxies in front of the one broker): cutting the one in use
    moves the producer to the other, and nothing received meanwhile is lost."""
    parts = urlsplit(amqp_url)
    proxies = [
        await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start() for _ in range(2)
    ]
    try:
        urls = ",".join(proxy.url(amqp_url) for proxy in proxies)
        producer = await start_producer(amqp_url=urls)
        await sim.wait_connected(["001"])
        _, _, raw = await http_get(producer.http.port, "/readyz")
        # Which node the event link uses, masked (the command link has a session of its
        # own, maybe on the other node).
        used = next(p for p in proxies if f"127.0.0.1:{p.port}/".encode() in raw)
        other = next(p for p in proxies if p is not used)
        assert used.accepted >= 1
        assert b"guest:guest" not in raw
        await used.cut()
        sent = [f"failover-{n}" for n in range(20)]
        for uuid in sent:
            await sim.send("001", call(uuid=uuid))
        await collector.wait_for(lambda ms: set(sent) <= set(published(collector)), timeout=20)
        assert other.accepted >= 1
    finally:
        for proxy in proxies:
            await proxy.close()


async def test_replicas_with_different_lists_leave_no_subscriber_unheld(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    """One replica lacks a subscriber (its discovery failing, a list held back) that the
    ranking gives it: before, the other left it to it, and nobody held it, for good."""
    from producer.replicas.membership import ranking

    sim.known = None
    target = next(s for s in SUBS if ranking({"r1", "r2"}, s)[0] == "r2")
    first = await start_producer(",".join(SUBS), phonet_replica_id="r1")
    await start_producer(",".join(s for s in SUBS if s != target), phonet_replica_id="r2")
    await until(lambda: first.coordinator.owns(target), what="r1 holds what r2 does not list")
    await until(lambda: sim.sockets_of(target) >= 1, what="a socket for it")
    await sim.send(target, call(uuid="held"))
    await collector.wait_for(lambda ms: "held" in published(collector))


async def test_two_producers_on_one_host_are_two_replicas_by_default(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    services: list[Service],
) -> None:
    """No PHONET_REPLICA_ID (two systemd units, a compose scale of 2): before, both took
    the host name and acted as one, each holding every subscriber."""
    sim.known = None
    started = []
    for _ in range(2):
        env = service_env(sim, amqp_url, exchange_name, PHONET_SUBSCRIBERS=",".join(SUBS))
        env.pop("PHONET_REPLICA_ID", None)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        service = await Service(env).start()
        services.append(service)
        started.append(service)
    await until(lambda: all(sim.sockets_of(s) == 2 for s in SUBS), timeout=20, what="hot")

    async def owned(service: Service) -> int:
        _, _, body = await http_get(await service.metrics_port(), "/readyz")
        return int(orjson.loads(body)["replicas"]["owned"])

    for _ in range(100):
        shares = [await owned(s) for s in started]
        if sum(shares) == len(SUBS) and all(shares):
            break
        await asyncio.sleep(0.1)
    assert sum(shares) == len(SUBS)
    assert all(shares), shares
    assert not any("another replica uses" in line for s in started for line in s.lines)
