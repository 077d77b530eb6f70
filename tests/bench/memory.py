"""Memory with every per-subscriber structure full: a benchmark, not a test.

    python -m tests.bench.memory                      # 10,000 subscribers, ~20 minutes
    python -m tests.bench.memory --subscribers 2000 --calls 64 --steady 120   # quick
    python -m tests.bench.memory --soak 3600          # then an hour at 200 events/s

Two parts, both printed as tables:

* **structures** (in this process, ``tracemalloc``): each pure per-subscriber structure
  filled to its bound, bytes per subscriber — the figures behind the README's sizing table.
* **process** (the producer in its own process, the simulator in another, backfill on
  against the simulator's REST API): RSS with the sockets open; after ``--calls`` finished
  calls on every subscriber (paced by the producer's confirms, so nothing piles up in the
  publish buffer: what remains is what the service keeps); right after a mass reconnect
  (a gap on each subscriber, so the backfill plan is full) and one event on every socket
  confirmed — the worst moment; then ``--steady`` seconds at ``--rate`` events/s
  (``call.hangup``: the structure that grows with calls), RSS sampled every 30 s, and the
  growth per hour over the second half of that stretch (after the seen calls' hold).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from producer.app.settings import DEFAULT_AMQP_URL
from producer.click2call.policy import RateLimiter
from producer.core.envelope import event_envelope, footprint
from producer.core.events import parse_frame
from producer.replicas.cover import DownBook
from producer.replicas.standby import StandbyWindow
from producer.subscribers.gaps import BackfillPlan, GapBook
from producer.subscribers.seen import PER_SUBSCRIBER
from tests.bench.run import (
    EXCHANGE,
    ProducerProc,
    SimProc,
    clean_up,
    confirmed_events,
    table,
)
from tests.bench.simproc import frame

MB = 1024 * 1024


# --- structures, in process ------------------------------------------------------------
def measured(build: Callable[[], Any]) -> int:
    """Bytes ``build()``'s result keeps allocated (tracemalloc, after a collection)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def structures(n: int = 1000) -> list[list[str]]:
    subscribers = [f"ivan.petrov{i:05d}@example.com" for i in range(n)]
    body = frame("23-1453990999.41", event="call.hangup").encode()
    rows: list[list[str]] = []

    def seen(calls: int) -> Callable[[], GapBook]:
        def build() -> GapBook:
            book = GapBook(keepalive_ms=40_000)
            for c in range(calls):
                for s in subscribers:
                    book.seen_end(s, f"{c:08x}-2f6c-4a63-9a59-6c6e1f0a8b2d", 1_000_000 + c)
            return book

        return build

    def window(per: int) -> Callable[[], StandbyWindow]:
        def build() -> StandbyWindow:
            w = StandbyWindow(10.0)
            parsed = parse_frame(body)
            for c in range(per):
                for s in subscribers:
                    w.push(
                        s,
                        event_envelope(
                            EXCHANGE, s, parsed, bytes(body), received=c / 10, wall_ms=c
                        ),
                        c / 10,
                    )
            return w

        return build

    def gaps() -> tuple[GapBook, BackfillPlan]:
        book, plan = GapBook(keepalive_ms=40_000), BackfillPlan()
        for s in subscribers:
            book.down(s, 1_000_000, 1006)
        for s in subscribers:
            gap = book.up(s, 1_060_000)
            assert gap is not None
            plan.add(gap, 0.0)
        return book, plan

    def downs() -> DownBook:
        book = DownBook()
        for s in subscribers:
            book.down(s, 1_000_000)
        return book

    def buckets() -> RateLimiter:
        limiter = RateLimiter(10.0)
        for s in subscribers:
            limiter.take(s, 0.0)
        return limiter

    sample = event_envelope(
        EXCHANGE, subscribers[0], parse_frame(body), bytes(body), received=0.0, wall_ms=0
    )
    cases: list[tuple[str, Callable[[], Any], str]] = [
        (
            f"calls seen to end, {PER_SUBSCRIBER} within the hold (the count bound)",
            seen(PER_SUBSCRIBER),
            f"{PER_SUBSCRIBER} × 12 B",
        ),
        ("calls seen to end, 4 within the hold (steady traffic)", seen(4), "by up-time"),
        (
            "standby window, 20 events (2 a second, 10 s)",
            window(20),
            f"footprint {footprint(sample)} B/event",
        ),
        ("a gap open and its backfill job", gaps, "one per subscriber"),
        ("a down socket reported to the standbys", downs, "one per subscriber"),
        ("click2call rate-limit bucket", buckets, "one per subscriber"),
    ]
    for name, build, bound in cases:
        rows.append([name, f"{measured(build) / n:,.0f}", bound])
    return rows


# --- the process -----------------------------------------------------------------------
async def wait_confirmed(port: int, target: float, timeout: float = 600) -> None:
    async with asyncio.timeout(timeout):
        while await confirmed_events(port) < target:
            await asyncio.sleep(0.2)


async def process(
    args: argparse.Namespace, amqp_url: str, out: Callable[[str], None]
) -> list[list[str]]:
    n = args.subscribers
    subs = [f"a{i:05d}" for i in range(n)]
    sim = await SimProc().start()
    extra = {"PHONET_BACKFILL": "on", "PHONET_REST_URL": sim.rest_url}
    producer = await ProducerProc(sim, subs, amqp_url, extra=extra).start()
    rows: list[list[str]] = []
    try:
        await sim.wait_connected(n, timeout=600)
        await producer.ready(timeout=600)
        await asyncio.sleep(12)  # settled (the garbage collector's first freeze)
        rss_open = producer.rss_mb()
        rows.append(["sockets open", f"{rss_open:.0f}", "1.00", "–"])
        out(f"  sockets open: {rss_open:.0f} MB")

        await sim.call("use", subscribers=subs)
        base = await confirmed_events(producer.port)
        started = time.monotonic()
        for r in range(args.calls):
            await sim.call("hangups", round=r)
            # Paced by the producer's confirms: at most one round outstanding.
            await wait_confirmed(producer.port, base + r * n)
        await wait_confirmed(producer.port, base + args.calls * n)
        fill_s = time.monotonic() - started
        rss_fill = producer.rss_mb()
        rows.append(
            [
                f"after {args.calls} calls on each ({args.calls * n:,} hangups in {fill_s:.0f} s)",
                f"{rss_fill:.0f}",
                f"{rss_fill / rss_open:.2f}",
                f"{(rss_fill - rss_open) * MB / n:,.0f} B/subscriber",
            ]
        )
        out(f"  {rows[-1]}")

        await sim.call("drop")
        await asyncio.sleep(1)
        await sim.wait_connected(n, timeout=600)
        await producer.ready(timeout=600)
        await sim.call("prepare", subscribers=subs, per_subscriber=1)
        before = await confirmed_events(producer.port)
        await sim.call("go")
        await wait_confirmed(producer.port, before + n)
        rss_storm = producer.rss_mb()
        rows.append(
            [
                "right after a mass reconnect (a gap on each) and one event on each",
                f"{rss_storm:.0f}",
                f"{rss_storm / rss_open:.2f}",
                f"{rss_storm / rss_fill:.2f}x the filled",
            ]
        )
        out(f"  {rows[-1]}")

        samples: list[tuple[float, float]] = []
        first, t0 = 0, time.monotonic()
        chunk = 30.0
        for _ in range(max(1, round(args.steady / chunk))):
            await sim.call(
                "rate",
                subscribers=subs,
                rate=args.rate,
                seconds=chunk,
                event="call.hangup",
                first=first,
            )
            first += int(args.rate * chunk)
            samples.append((time.monotonic() - t0, producer.rss_mb()))
            out(f"  steady {samples[-1][0]:.0f} s: {samples[-1][1]:.0f} MB")
        tail = [s for s in samples if s[0] >= args.steady / 2] or samples
        slope = _slope(tail) * 3600
        rss_end = samples[-1][1]
        rows.append(
            [
                f"after {args.steady / 60:.0f} min at {args.rate:.0f} events/s",
                f"{rss_end:.0f} (min {min(r for _, r in samples):.0f}, max"
                f" {max(r for _, r in samples):.0f})",
                f"{rss_end / rss_open:.2f}",
                f"{slope:+.1f} MB/hour over the second half",
            ]
        )
        out(f"  {rows[-1]}")
    finally:
        await producer.stop()
        await sim.close()
    return rows


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares MB per second."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=256, help="finished calls per subscriber")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in the steady part")
    parser.add_argument("--steady", type=float, default=900.0, help="seconds of steady traffic")
    parser.add_argument("--soak", type=float, help="seconds of steady traffic (overrides)")
    parser.add_argument("--only", choices=["structures", "process"])
    args = parser.parse_args()
    if args.soak:
        args.steady = args.soak
    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    if args.only != "process":
        print("structures (1,000 subscribers, tracemalloc)…", flush=True)
        rows = structures()
        print(table(["structure, full", "bytes per subscriber", "bound"], rows), flush=True)
    if args.only != "structures":
        print(f"process ({args.subscribers:,} subscribers)…", flush=True)
        try:
            rows = await process(args, amqp_url, lambda s: print(s, flush=True))
        finally:
            with contextlib.suppress(Exception):
                await clean_up(amqp_url)
        print(table(["moment", "RSS MB", "/ sockets open", "note"], rows), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
