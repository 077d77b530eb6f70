"""consumers_examples/call_journal.py end to end: simulated calls → producer → RabbitMQ →
journal → SQLite → summary. (Record building, without a broker:
``tests/unit/consumers_examples/test_call_journal.py``.)"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

from consumers_examples.call_journal import (
    Journal,
    consume,
)
from phonet_simulator import CallFactory, PhonetSimulator, Quirks
from tests.e2e.conftest import SUBSCRIBERS, StartProducer
from tests.support import until

T0 = 1_764_000_000_000  # 2025-11-24 16:00 UTC


async def test_end_to_end_with_simulated_calls(
    start_producer: StartProducer, amqp_url: str, exchange_name: str, tmp_path: Path
) -> None:
    """Realistic calls with duplicates and timestamp quirks: one record per call, each with
    the outcome its script had."""
    factory = CallFactory(
        list(SUBSCRIBERS), seed=11, quirks=Quirks(0.5, 0.2, 0.3, 0.1), time_scale=0.01
    )
    scripts = [
        factory.make(T0 + i * 60_000, kind)
        for i, kind in enumerate(["incoming"] * 6 + ["outgoing", "internal", "group", "pause"])
    ]
    expected: dict[str, str] = {}
    for script in scripts:
        if script.kind == "pause":
            continue
        frames = [f for _, _, f in script.steps]
        call_id = frames[0]["parentUuid"] or frames[0]["uuid"]
        answered = any(f["event"] == "call.bridge" for f in frames)
        direction = {1: "internal", 2: "outgoing", 4: "incoming"}[frames[0]["lgDirection"]]
        expected[call_id] = (
            "answered" if answered else ("missed" if direction == "incoming" else "not answered")
        )

    journal = Journal(str(tmp_path / "journal.sqlite"))
    stop, ready = asyncio.Event(), asyncio.Event()
    printed = io.StringIO()
    consumer = asyncio.ensure_future(
        consume(amqp_url, exchange_name, None, journal, stop, ready, out=printed)
    )
    await asyncio.wait_for(ready.wait(), 10)
    async with PhonetSimulator(subscribers=SUBSCRIBERS, quirks=Quirks.none()) as busy:
        await start_producer(
            phonet_url=busy.url, phonet_api_key=busy.api_key, phonet_domain=busy.domain
        )
        await busy.wait_connected(SUBSCRIBERS)
        for script in scripts:
            for _, subscriber, frame in script.sorted():
                await busy.send(subscriber, frame)

        def done() -> bool:
            rows = {r[0]: r[1] for r in journal.db.execute("SELECT call_id, status FROM calls")}
            return rows == expected

        await until(done, timeout=20, what="every call recorded with its outcome")
    stop.set()
    stored = await consumer
    frames = sum(1 for s in scripts if s.kind != "pause" for _ in s.steps)
    assert stored < frames  # the duplicates were ignored
    lines = printed.getvalue().splitlines()
    assert len(lines) == stored  # a line per stored event, as it went
    assert not any("+380" in text for text in lines)  # numbers masked
    days = {r[0] for r in journal.db.execute("SELECT DISTINCT day FROM calls")}
    assert days == {"2025-11-24"}

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "consumers_examples/call_journal.py",
        "--db",
        str(tmp_path / "journal.sqlite"),
        "--summary",
        "2025-11-24",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode()
    assert text.startswith(f"2025-11-24: {len(expected)} calls")
    assert "answered by: " in text
    assert sum(1 for s in expected.values() if s == "answered") > 0
