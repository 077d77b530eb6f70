"""Process-level faults on the real command: kill -9 with the disk spool, SIGTERM with
events in flight, a torn spool tail."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from phonet_simulator import PhonetSimulator
from producer.core.envelope import Envelope
from producer.publish.spool import Spool
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.proxy import TcpProxy
from tests.support import Collector, Service, http_get, metric_value, service_env, until


async def metric(service: Service, name: str, labels: dict[str, str] | None = None) -> float:
    _, _, raw = await http_get(await service.metrics_port(), "/metrics")
    return metric_value(raw.decode(), name, labels)


async def wait_metric(
    service: Service, name: str, target: float, labels: dict[str, str] | None = None
) -> None:
    async with asyncio.timeout(15):
        while await metric(service, name, labels) < target:
            await asyncio.sleep(0.05)


async def send_calls(sim: PhonetSimulator, prefix: str, count: int) -> set[str]:
    sent = set()
    for n in range(count):
        uuid = f"{prefix}{n}"
        if await sim.send(SUBSCRIBERS[n % 3], {"event": "call.dial", "uuid": uuid}):
            sent.add(uuid)
    return sent


async def test_sigkill_during_an_outage_then_restart_on_the_same_spool(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    collector: Collector,
    broker_proxy: TcpProxy,
    services: list[Service],
    tmp_path: Path,
) -> None:
    env = service_env(
        sim, broker_proxy.url(amqp_url), exchange_name, PHONET_SPOOL_DIR=str(tmp_path / "spool")
    )
    first = await Service(env).start()
    services.append(first)
    await sim.wait_connected(SUBSCRIBERS, timeout=15)
    await wait_metric(first, "phonet_amqp_connected", 1)
    await broker_proxy.cut()
    await wait_metric(first, "phonet_amqp_reconnects_total", 1)  # it noticed
    sent = await send_calls(sim, "k", 500)
    await wait_metric(first, "phonet_events_received_total", 500, {"event": "call.dial"})
    first.proc.kill()  # SIGKILL: no shutdown code runs
    assert await first.wait(timeout=10) == -signal.SIGKILL
    assert collector.uuids() == set()
    await broker_proxy.restore()
    second = await Service(env).start()
    services.append(second)
    await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=30)
    assert len(sent) == 500
    assert await metric(second, "phonet_spool_recovered_events_total") == 500
    second.proc.send_signal(signal.SIGTERM)
    assert await second.wait(timeout=10) == 0
    assert not list((tmp_path / "spool").glob("*.seg"))  # all confirmed: nothing left


async def test_sigkill_then_bit_rot_in_the_middle_of_the_spool_loses_only_that_event(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    collector: Collector,
    broker_proxy: TcpProxy,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """500 events on disk, the producer killed, then one byte of the 250th record damaged:
    the restart publishes the other 499 (the damage costs that record only) and counts it."""
    spool_dir = tmp_path / "spool"
    env = service_env(
        sim, broker_proxy.url(amqp_url), exchange_name, PHONET_SPOOL_DIR=str(spool_dir)
    )
    first = await Service(env).start()
    services.append(first)
    await sim.wait_connected(SUBSCRIBERS, timeout=15)
    await wait_metric(first, "phonet_amqp_connected", 1)
    await broker_proxy.cut()
    await wait_metric(first, "phonet_amqp_reconnects_total", 1)
    sent = await send_calls(sim, "r", 500)
    await wait_metric(first, "phonet_events_received_total", 500, {"event": "call.dial"})
    first.proc.kill()
    assert await first.wait(timeout=10) == -signal.SIGKILL
    (segment,) = spool_dir.glob("*.seg")
    data = segment.read_bytes()
    at = data.index(b'"uuid":"r250"')
    segment.write_bytes(data[:at] + b"X" + data[at + 1 :])
    await broker_proxy.restore()
    second = await Service(env).start()
    services.append(second)
    await collector.wait_for(lambda _: sent - {"r250"} <= collector.uuids(), timeout=30)
    assert "r250" not in collector.uuids()
    assert await metric(second, "phonet_spool_recovered_events_total") == 499
    assert await metric(second, "phonet_spool_damaged_records_total") == 1
    assert any("spool segment damaged: 1 damaged region(s)" in line for line in second.lines)
    second.proc.send_signal(signal.SIGTERM)
    assert await second.wait(timeout=10) == 0
    assert not list(spool_dir.glob("*.seg"))  # all confirmed: the damaged segment went too


async def test_sigterm_flushes_events_in_flight(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    collector: Collector,
    broker_proxy: TcpProxy,
    services: list[Service],
) -> None:
    """The broker stalls with events buffered; SIGTERM arrives; the link comes back within
    the shutdown timeout: everything received is published and the exit code is 0."""
    env = service_env(
        sim,
        broker_proxy.url(amqp_url),
        exchange_name,
        PHONET_SHUTDOWN_TIMEOUT="8",
        PHONET_PUBLISH_TIMEOUT="60",
    )
    service = await Service(env).start()
    services.append(service)
    await sim.wait_connected(SUBSCRIBERS, timeout=15)
    await wait_metric(service, "phonet_amqp_connected", 1)
    broker_proxy.stall()
    sent = await send_calls(sim, "f", 300)
    await wait_metric(service, "phonet_events_received_total", 300, {"event": "call.dial"})
    assert await metric(service, "phonet_buffer_events") == 300
    service.proc.send_signal(signal.SIGTERM)
    await sim.wait_disconnected(SUBSCRIBERS, timeout=5)  # sockets closed first (1001)
    status, _, _ = await http_get(await service.metrics_port(), "/readyz")
    assert status == 503  # still flushing, no longer ready
    await asyncio.sleep(1)
    await broker_proxy.restore()
    assert await service.wait(timeout=12) == 0
    await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=10)


async def test_sigterm_with_the_broker_gone_keeps_events_in_the_spool(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    collector: Collector,
    broker_proxy: TcpProxy,
    services: list[Service],
    tmp_path: Path,
) -> None:
    env = service_env(
        sim,
        broker_proxy.url(amqp_url),
        exchange_name,
        PHONET_SPOOL_DIR=str(tmp_path),
        PHONET_SHUTDOWN_TIMEOUT="2",
    )
    service = await Service(env).start()
    services.append(service)
    await sim.wait_connected(SUBSCRIBERS, timeout=15)
    await wait_metric(service, "phonet_amqp_connected", 1)
    await broker_proxy.cut()
    sent = await send_calls(sim, "s", 100)
    await wait_metric(service, "phonet_events_received_total", 100, {"event": "call.dial"})
    service.proc.send_signal(signal.SIGTERM)
    assert await service.wait(timeout=10) == 0
    assert any("stay in the spool" in line for line in service.lines)
    await broker_proxy.restore()
    again = await Service(env).start()
    services.append(again)
    await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=30)


async def test_a_torn_spool_tail_is_skipped_counted_and_the_rest_published(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    exchange_name: str,
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.open()
    spool.recover()
    for seq in range(1, 11):
        spool.append(
            Envelope(
                exchange_name,
                "call.dial.001",
                f'{{"n":{seq}}}'.encode(),
                f"id{seq}",
                {"uuid": f"t{seq}", "subscriber": "001"},
                "call.dial",
                0,
                "call.dial",
                "event",
                0.0,
                seq=seq,
            )
        )
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-5])  # the crash cut the last write short
    producer = await start_producer(phonet_spool_dir=str(tmp_path))
    await collector.wait_for(lambda _: {f"t{n}" for n in range(1, 10)} <= collector.uuids())
    assert "t10" not in collector.uuids()
    registry = producer.metrics.registry
    assert registry.get_sample_value("phonet_spool_damaged_records_total") == 1
    assert registry.get_sample_value("phonet_spool_recovered_events_total") == 9
    await until(lambda: len(producer.pipeline) == 0, what="recovered events confirmed")
    # New events keep their own, higher sequence numbers and go out too.
    await sim.wait_connected(SUBSCRIBERS)
    await sim.send("002", {"event": "call.dial", "uuid": "new"})
    await collector.wait_for(lambda _: "new" in collector.uuids())


async def test_a_second_producer_on_the_same_spool_is_refused(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    services: list[Service],
    tmp_path: Path,
) -> None:
    env = service_env(sim, amqp_url, exchange_name, PHONET_SPOOL_DIR=str(tmp_path))
    first = await Service(env).start()
    services.append(first)
    await first.metrics_port()
    second = await Service(env).start()
    services.append(second)
    assert await second.wait(timeout=10) == 2
    assert any("in use by another producer" in line for line in second.lines)


async def test_a_spool_of_an_unknown_format_version_stops_the_start_with_one_line(
    sim: PhonetSimulator,
    amqp_url: str,
    exchange_name: str,
    services: list[Service],
    tmp_path: Path,
) -> None:
    (tmp_path / "format").write_bytes(b"phonet-spool 9\n")
    (tmp_path / "00000000000000000001.seg").write_bytes(b"a future format")
    env = service_env(sim, amqp_url, exchange_name, PHONET_SPOOL_DIR=str(tmp_path))
    service = await Service(env).start()
    services.append(service)
    assert await service.wait(timeout=10) == 2
    (line,) = [line for line in service.lines if "format version" in line]
    assert f"PHONET_SPOOL_DIR {tmp_path} holds a spool of format version 9" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000000000000000001.seg", "format"]
    assert (tmp_path / "00000000000000000001.seg").read_bytes() == b"a future format"
