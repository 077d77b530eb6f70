"""Simulator → producer → real RabbitMQ → a test queue, over real sockets."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from aio_pika.abc import AbstractConnection

from phonet_simulator import PhonetSimulator, Quirks
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import SAMPLE, Collector, call, http_get, metric_value, until

EMAIL = "ivan.petrov@example.com"


async def test_event_lands_with_the_documented_contract(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    text = orjson.dumps(call()).decode()
    await sim.send("001", text)
    (message,) = await collector.wait_count(1)
    assert message.routing_key == "call.dial.001"
    assert message.body == text.encode()  # exactly as received
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2
    assert message.app_id == "phonet-producer"
    assert message.type == "call.dial"
    assert message.timestamp is not None
    assert message.message_id
    assert len(message.message_id) == 32
    assert message.headers["subscriber"] == "001"
    assert message.headers["event"] == "call.dial"
    assert message.headers["uuid"] == SAMPLE["uuid"]
    assert message.headers["direction"] == "incoming"
    assert message.headers["server_time_ms"] == 1473973201000
    assert message.headers["dial_at_ms"] == 1473973200000


async def test_email_subscriber_is_one_routing_word(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    exchange_name: str,
) -> None:
    """A consumer binding ``call.*.*`` (event words + one subscriber word) gets e-mail
    subscribers' events, and ``*.*.<token>`` selects one employee."""
    every_call = await Collector(amqp, exchange_name, "call.*.*").start()
    ivan_only = await Collector(amqp, exchange_name, "*.*.ivan%2Epetrov@example%2Ecom").start()
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    await sim.send(EMAIL, call("call.bridge"))
    await sim.send("002", call("call.hangup"))
    await every_call.wait_count(2)
    await ivan_only.wait_count(1)
    assert {m.routing_key for m in every_call.messages} == {
        "call.bridge.ivan%2Epetrov@example%2Ecom",
        "call.hangup.002",
    }
    assert ivan_only.messages[0].headers["subscriber"] == EMAIL


async def test_phonet_quirks(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    frames = [
        call(uuid="q1", serverTime="1473973201000"),
        call(uuid="q2", serverTime=1473973201000),
        call(uuid="q3", dialAt=1473973200, bridgeAt=1473973203, serverTime=1473973204),
        call("call.dial", uuid="q4", lgDirection=32),
        call("call.hangup", uuid="q5", lgDirection=64),
        call(
            uuid="q6",
            leg={"id": 120, "ext": "911"},
            otherLegs=[{"id": None, "num": "+1"}],
            brandNew={"x": [1, 2]},
        ),
    ]
    for frame in frames:
        await sim.send("001", frame)
    messages = await collector.wait_count(len(frames))
    by_uuid = {m.headers["uuid"]: m for m in messages}
    assert by_uuid["q1"].headers["server_time_ms"] == 1473973201000
    assert by_uuid["q2"].headers["server_time_ms"] == 1473973201000
    assert by_uuid["q3"].headers["dial_at_ms"] == 1473973200000
    assert by_uuid["q3"].headers["bridge_at_ms"] == 1473973203000
    assert by_uuid["q3"].headers["server_time_ms"] == 1473973204000
    assert by_uuid["q3"].json["dialAt"] == 1473973200  # body untouched
    assert (by_uuid["q4"].routing_key, by_uuid["q4"].headers["direction"]) == (
        "call.dial.001",
        "pause",
    )
    assert (by_uuid["q5"].routing_key, by_uuid["q5"].headers["direction"]) == (
        "call.hangup.001",
        "unpause",
    )
    assert by_uuid["q6"].json["brandNew"] == {"x": [1, 2]}
    assert by_uuid["q6"].json["otherLegs"][0]["id"] is None


async def test_duplicate_delivery_keeps_message_id(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    await sim.send("001", call(serverTime="1473973201000"))
    await sim.send("001", call(serverTime="1473973201000"))  # byte-identical copy
    await sim.send("001", call(serverTime=1473973202555))  # redelivered later
    await sim.send("001", call(uuid="other"))
    messages = await collector.wait_count(4)
    ids = [m.message_id for m in messages]
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[0]


@pytest.mark.parametrize(
    ("payload", "text", "reason"),
    [
        pytest.param("not json", None, "bad_json", id="bad-json"),
        pytest.param(b"\x00\x01binary", None, "binary", id="binary"),
        pytest.param("[1, 2]", None, "not_object", id="array"),
        pytest.param('{"uuid": "1"}', None, "missing_event", id="missing-event"),
        pytest.param('{"event": 5}', None, "event_not_string", id="event-number"),
        pytest.param(b'{"event": "\xff"}', True, "bad_utf8", id="invalid-utf8-text-frame"),
    ],
)
async def test_invalid_frame_is_kept_under_invalid_key(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    payload: str | bytes,
    text: bool | None,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = await start_producer(subscribers=EMAIL)
    await sim.wait_connected([EMAIL])
    caplog.set_level(logging.WARNING, logger="producer")
    await sim.send(EMAIL, payload, text=text)
    await sim.send(EMAIL, call())  # the socket is still fine afterwards
    first, second = await collector.wait_count(2)
    assert first.routing_key == "invalid.ivan%2Epetrov@example%2Ecom"
    assert first.body == (payload if isinstance(payload, bytes) else payload.encode())
    assert first.headers["invalid_reason"] == reason
    assert first.headers["subscriber"] == EMAIL
    assert second.routing_key == "call.dial.ivan%2Epetrov@example%2Ecom"
    assert sim.handshakes[EMAIL] == 1  # no reconnect was needed
    assert any("invalid frame" in r.getMessage() for r in caplog.records)
    _, _, metrics = await http_get(producer.http.port, "/metrics")
    assert metric_value(metrics.decode(), "phonet_events_invalid_total", {"reason": reason}) == 1


async def test_hostile_event_names_cannot_become_wildcards(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    for event in ("#", "call.*", "call..dial", "*" * 200):
        await sim.send("002", {"event": event, "uuid": event[:10]})
    messages = await collector.wait_count(4)
    assert [m.routing_key for m in messages] == [
        "%23.002",
        "call.%2A.002",
        "call%2E%2Edial.002",
        "invalid.002",
    ]
    assert messages[3].headers["invalid_reason"] == "bad_event"


async def test_order_is_kept_per_subscriber(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    for n in range(600):
        await sim.send(SUBSCRIBERS[n % 3], call(uuid=f"u{n}", n=n))
    messages = await collector.wait_count(600, timeout=20)
    for subscriber in SUBSCRIBERS:
        seen = [m.json["n"] for m in messages if m.headers["subscriber"] == subscriber]
        assert seen == sorted(seen)
        assert len(seen) == 200


async def test_generated_traffic_arrives_completely(
    amqp_url: str, amqp: AbstractConnection, exchange_name: str
) -> None:
    """Realistic calls with every quirk at high speed: every delivered frame is published."""
    from producer.app.service import Producer
    from tests.support import producer_settings

    collector = await Collector(amqp, exchange_name).start()
    async with (
        PhonetSimulator(subscribers=SUBSCRIBERS, quirks=Quirks(), seed=4, time_scale=0.02) as busy,
        Producer(
            producer_settings(
                busy, amqp_url, exchange_name, phonet_subscribers=",".join(SUBSCRIBERS)
            )
        ),
    ):
        await busy.wait_connected(SUBSCRIBERS)
        busy.start_traffic(200)
        await asyncio.sleep(2)
        await busy.stop_traffic()
        while busy._plays:
            await asyncio.sleep(0.05)
        sent = list(busy.sent)
        await collector.wait_count(len(sent), timeout=20)
    assert len(sent) > 300
    from producer.core.routing import subscriber_token

    want = sorted((f"{subscriber_token(s)}", d.encode()) for s, d in sent if isinstance(d, str))
    got = sorted((m.routing_key.rsplit(".", 1)[1], m.body) for m in collector.messages)
    assert got == want
    kinds = {m.headers["direction"] for m in collector.messages}
    assert {"incoming", "outgoing", "internal", "pause", "unpause"} <= kinds
    assert any("parent_uuid" in m.headers for m in collector.messages)


async def test_metrics_and_readiness(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    await until(lambda: producer.broker.connected, what="broker connected")
    status, ctype, body = await http_get(producer.http.port, "/readyz")
    assert status == 200
    assert ctype == "application/json"
    assert orjson.loads(body)["sockets_up"] == 3
    status, _, body = await http_get(producer.http.port, "/healthz")
    assert status == 200
    await sim.send("001", call())
    await sim.send("001", call("call.bridge"))
    await sim.send("002", "junk")
    await collector.wait_count(3)
    await until(lambda: len(producer.pipeline) == 0, what="pipeline empty")
    _, ctype, raw = await http_get(producer.http.port, "/metrics")
    text = raw.decode()
    assert ctype.startswith("text/plain")
    assert metric_value(text, "phonet_ws_connected", {"subscriber": EMAIL}) == 1
    assert metric_value(text, "phonet_amqp_connected") == 1
    assert metric_value(text, "phonet_events_received_total", {"event": "call.dial"}) == 1
    assert metric_value(text, "phonet_events_received_total", {"event": "invalid"}) == 1
    assert metric_value(text, "phonet_events_published_total", {"event": "call.bridge"}) == 1
    assert metric_value(text, "phonet_events_invalid_total", {"reason": "bad_json"}) == 1
    assert metric_value(text, "phonet_event_publish_latency_seconds_count") == 3
    assert metric_value(text, "phonet_click2call_commands_total", {"result": "timeout"}) == 0
    assert metric_value(text, "phonet_build_info") == 1
    assert sim.api_key not in text

    sim.refuse_status = 503  # before the drop: reconnects are immediate
    await sim.drop()  # every socket down → not ready
    await until(lambda: producer.sockets.connected_count == 0, what="sockets down")
    status, _, body = await http_get(producer.http.port, "/readyz")
    assert status == 503
    assert orjson.loads(body)["sockets_up"] == 0


async def test_reconnects_after_the_pbx_drops_sockets(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer(phonet_metrics_per_subscriber="all")
    await sim.wait_connected(SUBSCRIBERS)
    await sim.send("001", call(uuid="before"))
    assert await sim.drop(code=1012) == 3
    await until(lambda: all(sim.handshakes[s] == 2 for s in SUBSCRIBERS), what="all back")
    await sim.wait_connected(SUBSCRIBERS, timeout=10)
    assert await sim.drop("002", code=None) == 1  # abrupt TCP loss, no close frame
    await until(lambda: sim.handshakes["002"] == 3, what="002 back")
    await sim.wait_connected(SUBSCRIBERS, timeout=10)
    await sim.send("002", call(uuid="after"))
    await collector.wait_for(
        lambda ms: (
            {"before", "after"} <= {m.headers.get("uuid") for m in ms}
            and len([m for m in ms if m.routing_key.startswith("gap.")]) == 4
        )
    )
    gaps = [m for m in collector.messages if m.routing_key.startswith("gap.")]
    # Each drop left a gap, published when the socket was back: 3 clean closes (1012),
    # then 002's silent loss (dated back by a keepalive period: it may have been dead since).
    assert sorted(m.routing_key for m in gaps) == [
        "gap.001",
        "gap.002",
        "gap.002",
        "gap.ivan%2Epetrov@example%2Ecom",
    ]
    lost = [m.json for m in gaps if m.json["reason"].startswith("closed 1006")]
    assert len(lost) == 1
    assert lost[0]["to_ms"] - lost[0]["from_ms"] >= 40_000  # ping interval + timeout: 20 + 20 s
    assert sim.handshakes["001"] == 2
    _, _, raw = await http_get(producer.http.port, "/metrics")
    text = raw.decode()
    assert metric_value(text, "phonet_ws_connects_total") == 7
    assert metric_value(text, "phonet_ws_reconnects_total") == 4
    assert metric_value(text, "phonet_ws_disconnects_total") == 4
    one = {"subscriber": "002"}
    assert metric_value(text, "phonet_ws_subscriber_connects_total", one) == 3
    assert metric_value(text, "phonet_ws_subscriber_disconnects_total", one) == 2


async def test_auth_failure_is_logged_counted_and_retried_slowly(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.refuse_status = 403
    producer = await start_producer(subscribers="001", phonet_reconnect_max_delay=1.0)
    await asyncio.sleep(2.5)
    refused = sim.refused[403]
    assert 2 <= refused <= 4  # about one attempt per second: no hot loop
    _, _, raw = await http_get(producer.http.port, "/metrics")
    failures = metric_value(raw.decode(), "phonet_ws_connect_failures_total", {"reason": "auth"})
    assert failures >= 2
    status, _, _ = await http_get(producer.http.port, "/readyz")
    assert status == 503
    assert any("HTTP 403" in r.getMessage() for r in caplog.records)
    sim.refuse_status = None  # the key was fixed on the PBX side
    await sim.wait_connected(["001"], timeout=5)
    await sim.send("001", call())
    await collector.wait_count(1)
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert sim.api_key not in logged


async def test_frame_over_the_cap_is_counted_and_the_socket_recovers(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer(subscribers="001", phonet_max_frame_bytes=4096)
    await sim.wait_connected(["001"])
    await sim.send("001", call(padding="x" * 10_000))
    await until(lambda: sim.handshakes["001"] == 2, what="reconnect after 1009")
    await sim.wait_connected(["001"])
    await sim.send("001", call(uuid="after"))
    events = await collector.wait_for(lambda ms: any(m.headers.get("uuid") for m in ms))
    assert [m.headers.get("uuid") for m in events if m.routing_key.startswith("call.")] == ["after"]
    _, _, raw = await http_get(producer.http.port, "/metrics")
    assert metric_value(raw.decode(), "phonet_events_invalid_total", {"reason": "too_large"}) == 1


async def test_unroutable_events_are_counted_not_retried(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    amqp: AbstractConnection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No queue bound to the exchange: the broker returns the message; we count it, and say
    once, at INFO (normal at a first start), how to bind."""
    caplog.set_level(logging.INFO, logger="producer.broker.link")
    producer = await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    await sim.send("001", call())
    await sim.send("001", call("call.hangup"))
    returned = ("phonet_events_returned_total", {"event": "call.dial"})
    await until(lambda: producer.metrics.registry.get_sample_value(*returned) == 1, what="return")
    hangup = ("phonet_events_returned_total", {"event": "call.hangup"})
    await until(lambda: producer.metrics.registry.get_sample_value(*hangup) == 1, what="return")
    assert len(producer.pipeline) == 0  # not retried
    told = [r for r in caplog.records if "no queue is bound" in r.getMessage()]
    assert [r.levelname for r in told] == ["INFO"]
    assert "'#'" in told[0].getMessage()
    _, _, raw = await http_get(producer.http.port, "/metrics")
    assert metric_value(raw.decode(), "phonet_events_published_total", {"event": "call.dial"}) == 0


async def test_pool_grows_and_shrinks_at_runtime(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer(subscribers="001")
    await sim.wait_connected(["001"])
    await producer.set_subscribers(("002", EMAIL))
    await sim.wait_connected(["002", EMAIL])
    await sim.wait_disconnected(["001"])
    assert sorted(producer.sockets.subscribers) == ["002", EMAIL]
    await sim.send(EMAIL, call())
    (message,) = await collector.wait_count(1)
    assert message.headers["subscriber"] == EMAIL
    _, _, raw = await http_get(producer.http.port, "/metrics")
    assert 'subscriber="001"' not in raw.decode()


async def test_library_publish_path_is_a_working_fallback(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If aiormq's internals ever change, publishing falls back to basic_publish per message
    and still delivers everything with the same contract."""
    from producer.broker.fastpath import FastPath

    monkeypatch.setattr(FastPath, "attach", classmethod(lambda _cls, _channel, _on: None))
    await start_producer()
    await sim.wait_connected(SUBSCRIBERS)
    for n in range(50):
        await sim.send(SUBSCRIBERS[n % 3], call(uuid=f"slow{n}"))
    messages = await collector.wait_count(50)
    assert {m.headers["uuid"] for m in messages} == {f"slow{n}" for n in range(50)}
    assert messages[0].delivery_mode == 2
    assert messages[0].app_id == "phonet-producer"
    assert any("one message at a time" in r.getMessage() for r in caplog.records)
