"""Subscribers that follow the company and gaps filled in, end to end: the simulator's REST
API (login cookie, employees, history, calls in progress), the producer, RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from phonet_simulator import PhonetSimulator
from producer.app.service import Producer
from tests.e2e.conftest import StartProducer
from tests.support import (
    MESSAGE_OF,
    Collector,
    RpcClient,
    address_pattern,
    call,
    channel_of,
    check,
    http_get,
    metric_value,
    until,
)

FAST = (0.2, 0.6, 1.2)
LEG = {"id": 1, "type": 1, "displayName": "Agent 001", "ext": "001"}
"""Backfill reads this soon after a gap (the default waits 5 s, 1 min, 5 min)."""


def ended(uuid: str, at_ms: int | None = None) -> dict[str, object]:
    """A call.hangup of subscriber 001's call ``uuid`` (the PBX's history keeps it)."""
    return call("call.hangup", uuid=uuid, leg=LEG, serverTime=at_ms or int(time.time() * 1000))


async def metric(producer: Producer, name: str, labels: dict[str, str] | None = None) -> float:
    _, _, raw = await http_get(producer.http.port, "/metrics")
    return metric_value(raw.decode(), name, labels)


async def rest_count(producer: Producer, endpoint: str, result: str) -> float:
    labels = {"endpoint": endpoint, "result": result}
    return await metric(producer, "phonet_rest_requests_total", labels)


# --- discovery --------------------------------------------------------------------------


async def test_auto_follows_the_employee_list(
    sim: PhonetSimulator, start_producer: StartProducer, rpc: RpcClient
) -> None:
    sim.known = {"001", "002"}
    producer = await start_producer("auto", phonet_discovery_interval=0.3)
    await sim.wait_connected(["001", "002"])

    sim.known = {"001", "002", "003"}  # a hire
    await sim.wait_connected(["003"], timeout=5)
    reply = await rpc.call({"subscriber": "003", "to": "380991234567"})
    assert reply.json["event"] == "success"  # click2call follows the live list

    sim.known = {"001", "003"}  # a departure (a third of the sockets: applied at once)
    await sim.wait_disconnected(["002"], timeout=5)
    await until(lambda: "002" not in producer.sockets, what="002 forgotten")
    reply = await rpc.call({"subscriber": "002", "to": "380991234567"})
    assert reply.json["message"] == "unknown subscriber"
    assert sim.connected_subscribers() == {"001", "003"}
    assert await rest_count(producer, "users", "ok") >= 3
    assert await rest_count(producer, "authorize", "ok") == 1  # one session, kept


async def test_a_list_that_would_close_most_sockets_needs_a_second_poll(
    sim: PhonetSimulator, start_producer: StartProducer
) -> None:
    sim.known = {"001", "002", "003", "004"}
    producer = await start_producer("auto", phonet_discovery_interval=0.5)
    await sim.wait_connected(sorted(sim.known))
    sim.staff = [{"id": 1, "ext": "001"}]  # a half-broken answer: 3 of 4 gone
    users = len([r for r in sim.rest.requests if r[1] == "/rest/users"])
    await until(
        lambda: len([r for r in sim.rest.requests if r[1] == "/rest/users"]) == users + 1,
        what="one more poll",
    )
    await asyncio.sleep(0.1)
    assert len(producer.sockets) == 4  # held after one poll
    _, _, raw = await http_get(producer.http.port, "/readyz")
    assert b"waiting for the next poll" in raw
    await until(lambda: len(producer.sockets) == 1, what="applied after the second poll")


@pytest.mark.parametrize("fault", ["401", "500", "bad_json", "timeout", "empty"])
async def test_rest_faults_leave_the_sockets_alone(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector, fault: str
) -> None:
    sim.known = {"001", "002"}
    producer = await start_producer("auto", phonet_discovery_interval=0.3, phonet_rest_timeout=0.5)
    await sim.wait_connected(["001", "002"])
    handshakes = dict(sim.handshakes)
    sim.rest.fault = fault
    result = {"401": "auth", "500": "http", "bad_json": "bad_json", "timeout": "timeout"}
    if fault in result:
        for _ in range(100):
            if await rest_count(producer, "users", result[fault]) >= 1:
                break
            await asyncio.sleep(0.1)
        assert await rest_count(producer, "users", result[fault]) >= 1
        _, _, raw = await http_get(producer.http.port, "/readyz")
        assert b'"discovery_error":"REST users' in raw
    else:
        await asyncio.sleep(1.0)  # a few polls of an empty list
        _, _, raw = await http_get(producer.http.port, "/readyz")
        assert b"the employee list is empty" in raw
    assert len(producer.sockets) == 2
    assert dict(sim.handshakes) == handshakes  # nothing was closed or reopened
    assert sim.api_key.encode() not in raw
    assert await sim.send("001", call(uuid="still-flowing")) == 1
    await collector.wait_for(lambda ms: any(m.headers.get("uuid") == "still-flowing" for m in ms))
    sim.rest.fault = None


async def test_the_subscribers_file_is_reread(
    sim: PhonetSimulator, start_producer: StartProducer, tmp_path: Path
) -> None:
    listed = tmp_path / "subscribers"
    listed.write_text("001  # Ivan\n")
    no_list: str = ()  # type: ignore[assignment]  # PHONET_SUBSCRIBERS unset
    producer = await start_producer(no_list, phonet_subscribers_file=listed)
    await sim.wait_connected(["001"])
    listed.write_text("001\n002\n")
    await sim.wait_connected(["002"], timeout=6)
    listed.write_text("001\n002\n002\n")  # broken: the last good list stays
    await asyncio.sleep(2.5)
    assert set(producer.sockets.subscribers) == {"001", "002"}
    _, _, raw = await http_get(producer.http.port, "/readyz")
    assert b"listed twice" in raw


# --- gaps and backfill ------------------------------------------------------------------


async def test_a_gap_is_published_and_the_missed_calls_backfilled(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer("001")
    producer.rest.plan.retry_after = FAST
    await sim.wait_connected(["001"])
    now = int(time.time() * 1000)
    assert await sim.send("001", ended("seen", now)) == 1

    sim.refuse_status = 503  # the PBX is away for a while
    await sim.drop("001", code=1012)
    await until(lambda: sim.refused[503] >= 1, what="reconnect refused")
    missed_calls = []
    for n in range(3):
        uuid = f"missed-{n}"
        assert await sim.send("001", ended(uuid)) == 0  # nobody listening: gone from the socket
        missed_calls.append(uuid)
    in_progress = call("call.dial", uuid="ringing", leg=LEG, serverTime=int(time.time() * 1000))
    assert await sim.send("001", in_progress) == 0
    sim.refuse_status = None
    await sim.wait_connected(["001"], timeout=10)

    messages = await collector.wait_for(
        lambda ms: (
            len([m for m in ms if m.routing_key == "history.call.001"]) == 3
            and any(m.routing_key == "active.call.001" for m in ms)
            and any(m.routing_key == "gap.001" for m in ms)
        ),
        timeout=10,
    )
    (gap,) = [m for m in messages if m.routing_key == "gap.001"]
    assert gap.json["subscriber"] == "001"
    assert gap.json["reason"] == "closed 1012"
    assert gap.json["from_ms"] <= gap.json["to_ms"]
    history = [m for m in messages if m.routing_key == "history.call.001"]
    assert sorted(m.json["uuid"] for m in history) == missed_calls  # "seen" is not repeated
    for message in history:
        assert message.headers["source"] == "rest"
        assert message.headers["subscriber"] == "001"
        assert message.json == sim.calls.finished[message.json["uuid"]][1]  # as Phonet sent it
    (active,) = [m for m in messages if m.routing_key == "active.call.001"]
    assert active.json["uuid"] == "ringing"
    for message in messages:  # each as the AsyncAPI document describes it
        channel = channel_of(message.routing_key)
        assert address_pattern(channel).fullmatch(message.routing_key)
        check(message, MESSAGE_OF[channel])

    # Later reads of the same window publish nothing again.
    await asyncio.sleep(sum(FAST) + 0.5)
    assert len([m for m in collector.messages if m.routing_key.startswith("history.")]) == 3
    _, _, raw = await http_get(producer.http.port, "/metrics")
    text = raw.decode()
    assert metric_value(text, "phonet_gaps_total") == 1
    assert metric_value(text, "phonet_backfilled_calls_total", {"kind": "history"}) == 3
    assert (
        metric_value(text, "phonet_rest_requests_total", {"endpoint": "history", "result": "ok"})
        == 3
    )


async def test_history_that_lags_is_read_again(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer("001")
    producer.rest.plan.retry_after = FAST
    await sim.wait_connected(["001"])
    sim.calls.history_delay = 0.5  # a finished call shows in history half a second later
    sim.refuse_status = 503
    await sim.drop("001", code=1012)
    await until(lambda: sim.refused[503] >= 1, what="reconnect refused")
    assert await sim.send("001", ended("late")) == 0
    sim.refuse_status = None
    await collector.wait_for(
        lambda ms: any(m.routing_key == "history.call.001" for m in ms), timeout=10
    )
    reads = [r for r in sim.rest.requests if r[1] == "/rest/calls/company.api"]
    assert len(reads) >= 2  # the first read came too early; a later one found it


async def test_backfill_failures_are_counted_and_the_gap_still_published(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    producer = await start_producer("001", phonet_rest_timeout=0.5)
    producer.rest.plan.retry_after = FAST
    await sim.wait_connected(["001"])
    sim.rest.fault = "500"
    await sim.drop("001", code=1012)
    await collector.wait_for(lambda ms: any(m.routing_key == "gap.001" for m in ms))
    for _ in range(100):
        if await metric(producer, "phonet_backfill_failures_total") >= 2:
            break
        await asyncio.sleep(0.1)
    # Calls in progress and each read of the window failed; counted, never fatal.
    assert await metric(producer, "phonet_backfill_failures_total") >= 2
    assert await rest_count(producer, "history", "http") >= 1
    assert sim.connected("001")
    sim.rest.fault = None


# --- hostile answers and bugs (issue 21) ------------------------------------------------


async def miss_calls(sim: PhonetSimulator, uuids: list[str]) -> None:
    """Drop 001's socket, end ``uuids`` while it is away (the PBX's history keeps them,
    the socket never sees them), and let it back."""
    sim.refuse_status = 503
    await sim.drop("001", code=1012)
    await until(lambda: sim.refused[503] >= 1, what="reconnect refused")
    for uuid in uuids:
        assert await sim.send("001", ended(uuid)) == 0
    sim.refuse_status = None
    await sim.wait_connected(["001"], timeout=10)


def history_of(messages: list[Any]) -> set[str]:
    return {m.headers["uuid"] for m in messages if m.routing_key == "history.call.001"}


async def test_a_hostile_history_row_does_not_stop_the_backfill(
    sim: PhonetSimulator, start_producer: StartProducer, collector: Collector
) -> None:
    """Issue 21: a row whose ``email`` was a list killed the backfill task. Now every row
    of any shape is read leniently: the gap is published, the good calls of the same read
    are, the odd row that does name 001 by ``ext`` is (as served), the rest are skipped —
    and a later gap is filled too (the loop lives on)."""
    producer = await start_producer("001")
    producer.rest.plan.retry_after = FAST
    await sim.wait_connected(["001"])
    now = int(time.time() * 1000)
    odd_but_001 = {
        "uuid": "odd-001",
        "endAt": now,
        "leg": {"id": 1, "ext": "001", "email": ["ivan@example.com", "i@example.com"]},
        "leg2": {"id": 2, "ext": [2], "email": {"address": "olena@example.com"}},
    }
    sim.calls.odd_rows = [
        odd_but_001,
        {"uuid": "odd-legs", "endAt": now, "leg": ["001"], "leg2": "001"},
        {"uuid": "odd-fields", "endAt": now, "leg": {"ext": 1.5, "email": True}, "leg2": 7},
        {"uuid": "odd-end", "endAt": {"ms": now}, "leg": {"ext": "001", "email": None}},
        {"uuid": ["odd-uuid"], "endAt": "now", "leg": {"ext": {"n": 1}, "email": "x" * 100_000}},
        "not a row",
        None,
    ]
    await miss_calls(sim, ["missed-0", "missed-1"])
    messages = await collector.wait_for(
        lambda ms: history_of(ms) >= {"missed-0", "missed-1", "odd-001"}, timeout=10
    )
    assert any(m.routing_key == "gap.001" for m in messages)
    (odd,) = [m for m in messages if m.headers.get("uuid") == "odd-001"]
    assert odd.json == odd_but_001  # as Phonet returned it

    await miss_calls(sim, ["later"])  # the backfill loop is still there
    messages = await collector.wait_for(lambda ms: "later" in history_of(ms), timeout=10)
    assert history_of(messages) == {"missed-0", "missed-1", "odd-001", "later"}
    assert len([m for m in messages if m.routing_key == "gap.001"]) == 2
    assert await metric(producer, "phonet_rest_loop_failures_total", {"loop": "backfill"}) == 0


async def test_a_bug_in_a_backfill_round_is_counted_and_the_loop_goes_on(
    sim: PhonetSimulator,
    start_producer: StartProducer,
    collector: Collector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A round that raises something unforeseen (here: the first REST read after the gap)
    is logged with where it happened, counted, and the next round fills the gap."""
    producer = await start_producer("001")
    producer.rest.plan.retry_after = FAST
    await sim.wait_connected(["001"])
    client = producer.rest.client
    real_get = client.get
    bugs: list[str] = []

    async def get_with_a_bug(endpoint: str, path: str, query: Any = None) -> Any:
        if not bugs:
            bugs.append(endpoint)
            raise RuntimeError("a bug holding call data 380991234567")
        return await real_get(endpoint, path, query)

    client.get = get_with_a_bug  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="producer.subscribers"):
        await miss_calls(sim, ["missed-0"])
        await collector.wait_for(lambda ms: "missed-0" in history_of(ms), timeout=10)
    assert bugs == ["active"]  # the round's first read: calls in progress
    (error,) = [r for r in caplog.records if r.name == "producer.subscribers" and r.levelno >= 40]
    assert error.getMessage().startswith("REST backfill loop failed (RuntimeError at ")
    assert "380991234567" not in error.getMessage()
    assert await metric(producer, "phonet_rest_loop_failures_total", {"loop": "backfill"}) == 1
    assert await metric(producer, "phonet_rest_loop_failures_total", {"loop": "discovery"}) == 0


async def test_a_bug_applying_a_discovered_list_is_retried(
    sim: PhonetSimulator, start_producer: StartProducer
) -> None:
    """A discovery round that fails while applying the new list leaves it unapplied, so
    the next round (after the backoff) applies it: a hire is not forgotten."""
    sim.known = {"001"}
    producer = await start_producer("auto", phonet_discovery_interval=0.3)
    await sim.wait_connected(["001"])
    real_apply = producer.rest.apply
    bugs: list[tuple[str, ...]] = []

    async def apply_with_a_bug(subscribers: tuple[str, ...]) -> None:
        if not bugs:
            bugs.append(subscribers)
            raise RuntimeError("a bug")
        await real_apply(subscribers)

    producer.rest.apply = apply_with_a_bug
    sim.known = {"001", "002"}
    await sim.wait_connected(["002"], timeout=10)
    assert bugs == [("001", "002")]
    assert await metric(producer, "phonet_rest_loop_failures_total", {"loop": "discovery"}) == 1
