"""The fault suite: each scenario runs producer replicas (real processes) under steady load —
call events at a few hundred a second over 24 subscribers, click2call commands throughout,
a fifth of them retried — on a real 3-node RabbitMQ cluster, injects one fault, and the one
checker (:mod:`tests.faults.checker`) must find every event published, every command send
answered exactly once, no command dialed twice, and the command queue empty.

``python -m pytest -m faults`` runs them alone (``FAULTS_LOGS=<dir>`` keeps the replicas'
logs). Each prints one line with its counts."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.faults.checker import Report
from tests.faults.cluster import RabbitCluster
from tests.faults.harness import SUBS, Harness
from tests.hostile import big_headers, publish_raw, rejecting_queue, timestamp_2_63


def holds(h: Harness, report: Report) -> None:
    problems = report.problems()
    assert not problems, f"{report.line()}: {problems}; left in the queue: {h.left_in_queue}"
    assert h.left_in_queue == 0, f"{h.left_in_queue} commands never settled"


async def test_steady_load_without_a_fault(healthy: RabbitCluster) -> None:
    """The baseline: the checker holds with no fault at all, and nothing is copied once
    the replicas have settled (copies while the second and third replica join, as the
    first hands subscribers over, are the takeover's, counted but allowed)."""
    async with Harness(healthy, "steady") as h:
        await asyncio.sleep(2.0)
        h.fault("none")
        report = await h.finish()
    holds(h, report)
    assert report.steady_copies == []
    assert report.delivered > 0


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_the_node_a_replica_uses_goes(healthy: RabbitCluster, how: str) -> None:
    """``rabbitmqctl stop``, or ``kill -9`` of the node's VM, under the replica that uses
    it: it moves to the next URL of its list; the quorum command queue, tap and replies
    survive on the other two nodes (a node loss may take the queue's leader)."""
    async with Harness(healthy, f"node-{how}") as h:
        node = await h.node_of(h.replicas[0])
        h.fault(f"{how} {node.name}")
        if how == "stop":
            await node.stop()
        else:
            node.kill()
        await asyncio.sleep(6.0)
        report = await h.finish()
    holds(h, report)


async def test_a_replica_cut_from_the_broker_but_not_from_the_pbx(healthy: RabbitCluster) -> None:
    """It keeps reading and buffering; the others stop hearing it and take its share over;
    when the link is back it publishes what it buffered (copies, same message_id)."""
    async with Harness(healthy, "broker-cut") as h:
        h.fault("cut r0 from the broker")
        await h.replicas[0].cut_broker()
        await asyncio.sleep(4.0)
        await h.replicas[0].restore_broker()
        await asyncio.sleep(4.0)
        report = await h.finish()
    holds(h, report)


async def test_a_replica_cut_from_the_pbx_but_not_from_the_broker(healthy: RabbitCluster) -> None:
    """Its sockets are down, it is still live: it says so in its heartbeat and the standby
    sockets publish meanwhile (what reaches only them is not lost)."""
    async with Harness(healthy, "pbx-cut") as h:
        h.fault("cut r0 from the PBX")
        await h.replicas[0].pbx.cut()
        await asyncio.sleep(4.0)
        await h.replicas[0].pbx.restore()
        await asyncio.sleep(4.0)
        report = await h.finish()
    holds(h, report)


async def test_a_replica_frozen_past_the_presence_timeout(healthy: RabbitCluster) -> None:
    """SIGSTOP for longer than the presence timeout, then SIGCONT: taken over meanwhile,
    it comes back with what its sockets buffered and takes its share back."""
    async with Harness(healthy, "sigstop") as h:
        h.fault("SIGSTOP r0")
        h.replicas[0].freeze()
        await asyncio.sleep(3.0)
        h.replicas[0].thaw()
        await asyncio.sleep(5.0)
        report = await h.finish()
    holds(h, report)


async def test_the_same_replica_id_restarted_at_once(healthy: RabbitCluster) -> None:
    """systemd ``Restart=always``, or a container restart keeping its hostname: the new
    process heartbeats under the old id before anyone timed the old one out."""
    async with Harness(healthy, "same-id-restart", replicas=2) as h:
        h.fault("kill -9 r0 and restart it as r0")
        old = h.replicas[0]
        old.kill()
        await old.proc.wait()
        await old.start()
        await asyncio.sleep(6.0)
        report = await h.finish()
    holds(h, report)


async def test_replicas_that_disagree_on_the_list_or_the_settings(
    healthy: RabbitCluster, tmp_path: Path
) -> None:
    """One replica's subscriber list loses four subscribers (its discovery failing, a list
    held back), and a producer with other settings joins the exchange: every subscriber
    of every list keeps an owner (copies meanwhile, no subscriber unheld)."""
    files = {n: tmp_path / f"subscribers-{n}" for n in range(3)}
    for path in files.values():
        path.write_text("\n".join(SUBS) + "\n")
    per_replica = {
        n: {"PHONET_SUBSCRIBERS": "", "PHONET_SUBSCRIBERS_FILE": str(f)} for n, f in files.items()
    }
    per_replica[3] = {"PHONET_STANDBY": "off"}  # other settings: not a peer
    async with Harness(healthy, "divergent", per_replica=per_replica) as h:
        h.fault("r2 lists 20 subscribers; a producer with other settings joins")
        files[2].write_text("\n".join(SUBS[4:]) + "\n")
        await h.add_replica(3, "foreign")
        await asyncio.sleep(5.0)
        files[2].write_text("\n".join(SUBS) + "\n")
        await asyncio.sleep(4.0)
        report = await h.finish()
    holds(h, report)


async def test_hostile_commands(healthy: RabbitCluster) -> None:
    """Commands whose properties the client library cannot decode (a timestamp of 2^63),
    whose headers nearly fill a frame, whose ``reply_to`` rejects every publish: each is
    answered (or given up) and settled; nothing stalls, events keep flowing."""
    async with Harness(healthy, "hostile") as h:
        h.fault("hostile commands")
        channel = await h.broker.channel()
        refuse = await rejecting_queue(channel, f"{h.exchange}.refuses")
        for _ in range(3):
            key, to = f"hostile-{h.number()}", h.number()
            await publish_raw(
                channel,
                h.queue,
                {"subscriber": SUBS[0], "to": to},
                timestamp_2_63(message_id=key, correlation_id=key, reply_to=h.reply_queue),
            )
            h.expect_reply(key, to)
            await h.command({"subscriber": SUBS[1], "to": h.number()}, headers=big_headers(120_000))
            await h.command(
                {"subscriber": SUBS[2], "to": h.number()}, expect_reply=False, reply_to=refuse
            )
            await asyncio.sleep(0.5)
        await asyncio.sleep(4.0)
        report = await h.finish()
    holds(h, report)


async def test_a_spool_damaged_mid_segment(healthy: RabbitCluster, tmp_path: Path) -> None:
    """A replica with a spool, cut from the broker (events pile up on disk), killed with
    ``-9``; a record in the middle of its segment is damaged before it starts again: the
    records after the damage are published, and the damaged one came from the standby."""
    spool = tmp_path / "spool"
    async with Harness(
        healthy, "spool-damage", per_replica={0: {"PHONET_SPOOL_DIR": str(spool)}}
    ) as h:
        r0 = h.replicas[0]
        h.fault("cut r0, kill -9 it, damage its spool, start it again")
        await r0.cut_broker()
        await asyncio.sleep(3.0)
        r0.kill()
        await r0.proc.wait()
        segment = max(spool.glob("*.seg"), key=lambda p: p.stat().st_size)
        data = bytearray(segment.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = b"\xff" * 16
        segment.write_bytes(bytes(data))
        await r0.restore_broker()
        await r0.start()
        await asyncio.sleep(6.0)
        report = await h.finish()
    holds(h, report)


async def test_kill_9_during_a_handover(healthy: RabbitCluster) -> None:
    """A third replica joins; while the old owners still hand its share over, one of them
    is killed with ``-9``."""
    async with Harness(healthy, "kill-in-handover", replicas=2) as h:
        h.fault("r2 joins; r0 killed during the handover")
        await h.add_replica(2)
        r0 = h.replicas[0]

        async def handing_over() -> bool:
            return int(((await r0.readyz()).get("replicas") or {}).get("handing_over", 0)) > 0

        async with asyncio.timeout(20):
            while not await handing_over():
                await asyncio.sleep(0.05)
        r0.proc.send_signal(signal.SIGKILL)
        await asyncio.sleep(6.0)
        report = await h.finish()
    holds(h, report)
