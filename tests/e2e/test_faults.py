"""Regressions for the faults of issue 10, each reproduced black-box before it was fixed.

1. one event the wire cannot encode stopped all publishing, forever;
2. a broker drop while a command waited for the PBX lost its reply, and the PBX's late
   answer was taken for the next command's;
3. a full spool disk during a broker outage lost what was received meanwhile;
4. broker alarms (connection.blocked) made the stalled-confirm watchdog reopen the
   connection in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from phonet_simulator import PhonetSimulator, Reply
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.proxy import TcpProxy
from tests.support import Collector, RpcClient, http_get, until


def value(producer: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return producer.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def dial(uuid: str, **fields: Any) -> dict[str, Any]:
    return {"event": "call.dial", "uuid": uuid, "lgDirection": 4, "dialAt": 1, **fields}


# --- 1. a message the broker cannot take is that message's problem only ----------------


def odd_frame(extra: str) -> str:
    """A ``call.dial`` frame with ``extra`` JSON members spliced in (raw text: orjson cannot
    write integers beyond 64 bits)."""
    return '{"event":"call.dial","uuid":"odd","lgDirection":4,"dialAt":1,' + extra + "}"


ODD = [
    pytest.param('"lgDirection":9223372036854775813', "bad_header", id="lgdirection-beyond-int64"),
    pytest.param('"lgDirection":18446744073709551615', "bad_header", id="lgdirection-uint64-max"),
    pytest.param('"lgDirection":-9223372036854775808', None, id="lgdirection-int64-min"),
    pytest.param('"lgDirection":18446744073709551616', None, id="lgdirection-as-float"),
    pytest.param('"lgDirection":-1e308', None, id="lgdirection-huge-negative-float"),
    pytest.param('"dialAt":-5,"bridgeAt":1e300', None, id="odd-timestamps"),
    pytest.param('"serverTime":"99999999999999999999"', None, id="server-time-too-long"),
    pytest.param(f'"uuid":"{"u" * 70_000}"', "bad_header", id="uuid-70kb"),
    pytest.param(
        f'"uuid":"{"u" * 70_000}","parentUuid":"{"p" * 70_000}"',
        "bad_header",
        id="two-70kb-headers",
    ),
    pytest.param('"uuid":18446744073709551615', None, id="uuid-huge-integer"),
    pytest.param(f'"event":"call.{"x" * 300}"', "bad_event", id="event-300-chars"),
]


@pytest.mark.parametrize(("extra", "reason"), ODD)
async def test_an_odd_event_never_blocks_the_ones_behind_it(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    extra: str,
    reason: str | None,
) -> None:
    """The odd event is kept (as an event, or under ``invalid.`` with a reason) and the 20
    ordinary events after it are all published, on the same broker connection."""
    producer = await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    frame = odd_frame(extra)
    await sim.send("001", frame)
    for n in range(20):
        await sim.send("001", dial(f"after{n}"))
    messages = await collector.wait_count(21, timeout=15)
    first = messages[0]
    assert first.body == frame.encode()
    if reason is None:
        assert first.routing_key.startswith("call.")
    else:
        assert first.routing_key == "invalid.001"
        assert first.headers["invalid_reason"] == reason
    assert [m.headers["uuid"] for m in messages[1:]] == [f"after{n}" for n in range(20)]
    assert value(producer, "phonet_amqp_connects_total") == 1  # no session was lost


# --- 2. a broker drop while a command waits for the PBX ---------------------------------


async def test_broker_drop_while_a_command_waits_for_the_pbx(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    rpc: RpcClient,
    broker_proxy: TcpProxy,
    amqp_url: str,
) -> None:
    """The first command gets the PBX's (late) refusal once the broker is back; the next
    command on the same socket gets its own answer, not the first one's."""
    answers = iter(
        [
            Reply({"event": "error", "message": "first refused"}, delay=1.5),
            Reply({"event": "success"}),
        ]
    )
    sim.on_action = lambda _subscriber, _action: next(answers)
    producer = await start_producer(
        amqp_url=broker_proxy.url(amqp_url), phonet_click2call_timeout=5.0
    )
    await sim.wait_connected(SUBSCRIBERS)
    await rpc.send({"subscriber": "001", "to": "380991111111"}, correlation_id="first")
    await until(lambda: len(sim.actions) == 1, what="first command dialed")
    await broker_proxy.cut()
    await until(lambda: not producer.broker.connected, what="broker loss noticed")
    await broker_proxy.restore()
    await until(lambda: producer.click2call.consuming, timeout=15, what="consuming again")
    await rpc.send({"subscriber": "001", "to": "380992222222"}, correlation_id="second")
    first = await rpc.reply("first", timeout=15)
    second = await rpc.reply("second", timeout=15)
    assert first.json["event"] == "error"
    assert first.json["message"] == "first refused"
    assert first.json["to"] == "380991111111"
    assert second.json == {"event": "success", "subscriber": "001", "to": "380992222222"}
    assert [a for _, a in sim.actions] == [
        {"action": "call", "to": "380991111111"},
        {"action": "call", "to": "380992222222"},
    ]


# --- 3. a full spool disk during a broker outage ----------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (root only); skips the test where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="phonet-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:100]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


@pytest.fixture
def full_disk() -> Iterator[Path]:
    """A 192 KiB disk: a few hundred events fill it."""
    with tiny_tmpfs("192k") as where:
        yield where


async def test_a_full_spool_disk_during_an_outage_loses_nothing(
    full_disk: Path,  # first: unmounted after the producer stopped
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = await start_producer(
        amqp_url=broker_proxy.url(amqp_url), phonet_spool_dir=str(full_disk / "spool")
    )
    await sim.wait_connected(SUBSCRIBERS)
    await broker_proxy.cut()
    await until(lambda: not producer.broker.connected, what="outage noticed")
    sent = set()
    for n in range(1200):
        uuid = f"d{n}"
        await sim.send(SUBSCRIBERS[n % 3], dial(uuid, pad="x" * 400))
        sent.add(uuid)
    await until(
        lambda: value(producer, "phonet_events_received_total", {"event": "call.dial"}) == 1200,
        what="all read",
    )
    await until(lambda: value(producer, "phonet_spool_degraded") == 1, what="degraded")
    await broker_proxy.restore()
    await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=30)
    assert value(producer, "phonet_events_dropped_total", {"reason": "buffer_full"}) == 0
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("producer")]
    assert tracebacks == []
    degraded = [
        r for r in caplog.records if "spool" in r.getMessage() and "degraded" in r.getMessage()
    ]
    assert 1 <= len(degraded) <= 3  # one line per burst, not one per frame
    # Confirmed events left the spool, so the disk has room again: the next events are
    # written to it (the spool resumes), and published.
    later = {f"later{n}" for n in range(10)}
    await asyncio.sleep(1.1)  # a degraded spool tries the disk again after a second
    for uuid in sorted(later):
        await sim.send("001", dial(uuid))
    await until(lambda: value(producer, "phonet_spool_degraded") == 0, what="resumed")
    await collector.wait_for(lambda _: later <= collector.uuids())


async def test_shutdown_counts_what_a_failing_spool_could_not_keep(
    full_disk: Path,
    sim: PhonetSimulator,
    start_producer: StartProducer,
    broker_proxy: TcpProxy,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopping with the broker gone and the spool disk full: what is on disk stays for the
    next start, what was in memory only is counted as dropped and said so — not claimed to
    be in the spool."""
    producer = await start_producer(
        amqp_url=broker_proxy.url(amqp_url),
        phonet_spool_dir=str(full_disk / "spool"),
        phonet_shutdown_timeout=1.0,
    )
    await sim.wait_connected(SUBSCRIBERS)
    await broker_proxy.cut()
    await until(lambda: not producer.broker.connected, what="outage noticed")
    for n in range(600):
        await sim.send(SUBSCRIBERS[n % 3], dial(f"s{n}", pad="x" * 400))
    await until(
        lambda: value(producer, "phonet_events_received_total", {"event": "call.dial"}) == 600,
        what="all read",
    )
    assert producer.spool is not None
    memory_only = producer.spool.missing
    assert memory_only > 0
    await producer.stop()
    assert value(producer, "phonet_events_dropped_total", {"reason": "shutdown"}) == memory_only
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"{600 - memory_only} unconfirmed events stay in the spool" in said
    assert f"{memory_only} events could not be confirmed by the broker and were in memory" in said


# --- 4. broker alarms --------------------------------------------------------------------


async def ctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.DEVNULL
    )
    assert await proc.wait() == 0, args


@pytest.fixture
async def memory_alarm(amqp_url: str) -> AsyncIterator[Any]:
    """Raises RabbitMQ's memory alarm on demand; always sets the watermark back to 0.4."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl")
    if "localhost" not in amqp_url and "127.0.0.1" not in amqp_url:
        pytest.skip("the broker is not local")

    class Alarm:
        async def raise_(self) -> None:
            await ctl("set_vm_memory_high_watermark", "0.0000001")

        async def clear(self) -> None:
            await ctl("set_vm_memory_high_watermark", "0.4")

    alarm = Alarm()
    try:
        yield alarm
    finally:
        await alarm.clear()


async def test_a_memory_alarm_longer_than_the_publish_timeout(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    memory_alarm: Any,
) -> None:
    """The broker blocks publishing connections: the producer waits (gauge
    ``phonet_amqp_blocked``) instead of reopening its connection, and publishes everything
    when the alarm clears."""
    producer = await start_producer(phonet_publish_timeout=1.0)
    await sim.wait_connected(SUBSCRIBERS)
    await memory_alarm.raise_()
    sent = set()
    for n in range(30):
        await sim.send(SUBSCRIBERS[n % 3], dial(f"m{n}"))
        sent.add(f"m{n}")
    await until(lambda: value(producer, "phonet_amqp_blocked") == 1, what="blocked")
    await asyncio.sleep(3.0)  # three publish timeouts
    assert value(producer, "phonet_amqp_connects_total") == 1
    status, _, body = await http_get(producer.http.port, "/readyz")
    assert status == 200  # still ready: it buffers, and consumers keep their stream
    assert orjson.loads(body)["amqp_blocked"] is True
    await memory_alarm.clear()
    await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=30)
    await until(lambda: value(producer, "phonet_amqp_blocked") == 0, what="unblocked")
    assert value(producer, "phonet_amqp_connects_total") == 1


# --- seams over library internals fail safe to the public API ---------------------------


async def test_the_fast_path_works_with_the_installed_aiormq(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    """CI installs the newest aiormq 7.x into a fresh venv: this says whether the fast path
    still attaches to it (if not, publishing still works, slower, and this fails)."""
    producer = await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    await sim.send("001", dial("fast"))
    await collector.wait_count(1)
    assert value(producer, "phonet_library_fallbacks_total", {"seam": "aiormq_publish"}) == 0
    assert value(producer, "phonet_library_fallbacks_total", {"seam": "websockets_opcode"}) == 0


async def test_a_fast_path_failure_mid_session_falls_back_and_loses_nothing(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiormq's internals misbehave after a few batches: the half-registered batch is
    rolled back (delivery tags reused), the session goes on with ``basic_publish``."""
    from aiormq.abc import ChannelFrame

    from producer.broker import fastpath

    batches = 0

    def flaky_frame(**kwargs: Any) -> ChannelFrame:
        nonlocal batches
        batches += 1
        if batches > 3:
            raise RuntimeError("aiormq changed")
        return ChannelFrame(**kwargs)

    monkeypatch.setattr(fastpath, "ChannelFrame", flaky_frame)
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    sent = set()
    for n in range(200):
        await sim.send(SUBSCRIBERS[n % 3], dial(f"f{n}"))
        sent.add(f"f{n}")
        if n % 20 == 0:
            await asyncio.sleep(0.02)  # several batches
    await collector.wait_for(lambda _: sent <= collector.uuids(), timeout=20)
    labels = {"seam": "aiormq_publish"}
    assert value(producer, "phonet_library_fallbacks_total", labels) == 1
    assert value(producer, "phonet_amqp_connects_total") == 1  # the session survived
    assert sum("fast path failed" in r.getMessage() for r in caplog.records) == 1
    assert len(collector.messages) == len(sent)  # and nothing was published twice


async def test_websockets_no_longer_calling_the_opcode_hook_falls_back(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from websockets.asyncio.client import ClientConnection

    from producer.phonet import PhonetConnection

    monkeypatch.setattr(PhonetConnection, "process_event", ClientConnection.process_event)
    producer = await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    await sim.send("001", dial("w1"))
    await sim.send("001", b"\x89PNG binary")
    await sim.send("001", dial("w2"))
    messages = await collector.wait_count(3)
    assert [m.routing_key for m in messages] == ["call.dial.001", "invalid.001", "call.dial.001"]
    assert messages[1].headers["invalid_reason"] == "binary"
    labels = {"seam": "websockets_opcode"}
    assert value(producer, "phonet_library_fallbacks_total", labels) == 3


# --- memory is bounded in bytes, not only in events -------------------------------------


async def test_the_buffer_is_bounded_in_bytes_during_an_outage(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    broker_proxy: TcpProxy,
    amqp_url: str,
) -> None:
    producer = await start_producer(
        amqp_url=broker_proxy.url(amqp_url),
        phonet_buffer_max_bytes=1_048_576,
        phonet_max_frame_bytes=262_144,
    )
    await sim.wait_connected(SUBSCRIBERS)
    await broker_proxy.cut()
    await until(lambda: not producer.broker.connected, what="outage noticed")
    for n in range(20):
        await sim.send("001", dial(f"b{n}", pad="x" * 200_000))
    await until(
        lambda: value(producer, "phonet_events_received_total", {"event": "call.dial"}) == 20,
        what="all read",
    )
    assert value(producer, "phonet_buffer_bytes") <= 1_048_576
    held = len(producer.pipeline)
    assert 3 <= held <= 5  # about 200 KB each
    assert value(producer, "phonet_events_dropped_total", {"reason": "buffer_full"}) == 20 - held
    await broker_proxy.restore()
    newest = {f"b{n}" for n in range(20 - held, 20)}
    await collector.wait_for(lambda _: newest <= collector.uuids(), timeout=20)
