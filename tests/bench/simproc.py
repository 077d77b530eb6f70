"""The simulator in its own process, driven by JSON lines on stdin (one reply line each).

Commands: ``prepare`` (build frames), ``go`` (send them as fast as possible, one task per
subscriber), ``rate`` (send at a fixed total rate, frames stamped with ``simSentNs``;
``event`` and ``first`` choose the event and the first uuid number), ``use`` (the
subscribers of ``hangups``), ``hangups`` (one ``call.hangup`` on each, a new call each round),
``count`` (connected subscribers), ``drop`` (reset every socket at once, or one
``subscriber``'s), ``handshakes`` (accepted handshake times since a moment, of every or
one ``subscriber``), ``quit``. Started by ``tests/bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from phonet_simulator import VENDOR_SAMPLE, PhonetSimulator

TEMPLATE = {k: v for k, v in VENDOR_SAMPLE.items() if k != "uuid"}


def frame(uuid: str, **extra: Any) -> str:
    return orjson.dumps({**TEMPLATE, "uuid": uuid, **extra}).decode()


class Driver:
    def __init__(self, sim: PhonetSimulator) -> None:
        self.sim = sim
        self.prepared: dict[str, list[str]] = {}
        self.subscribers: list[str] = []

    async def prepare(self, subscribers: list[str], per_subscriber: int) -> dict[str, Any]:
        self.prepared = {s: [frame(f"{s}-{n}") for n in range(per_subscriber)] for s in subscribers}
        return {"frames": per_subscriber * len(subscribers)}

    async def go(self) -> dict[str, Any]:
        started = time.perf_counter()

        async def one(subscriber: str, frames: list[str]) -> int:
            sent = 0
            for text in frames:
                sent += await self.sim.send(subscriber, text)
            return sent

        counts = await asyncio.gather(*(one(s, f) for s, f in self.prepared.items()))
        return {"sent": sum(counts), "seconds": time.perf_counter() - started}

    async def hangups(self, round: int) -> dict[str, Any]:
        """One finished call on every subscriber of :meth:`use` (uuid unique per round)."""
        now = int(time.time() * 1000)
        sent = 0
        for subscriber in self.subscribers:
            text = frame(f"{subscriber}-{round}", event="call.hangup", hangupAt=now)
            sent += await self.sim.send(subscriber, text)
        return {"sent": sent}

    async def rate(
        self,
        subscribers: list[str],
        rate: float,
        seconds: float,
        event: str = "call.dial",
        first: int = 0,
    ) -> dict[str, Any]:
        total = int(rate * seconds)
        start = time.perf_counter()
        sent = 0
        for n in range(total):
            due = start + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            subscriber = subscribers[n % len(subscribers)]
            text = frame(f"r{first + n}", event=event, simSentNs=time.time_ns())
            sent += await self.sim.send(subscriber, text)
        return {"sent": sent, "seconds": time.perf_counter() - start}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = command.pop("cmd")
        if cmd == "prepare":
            return await self.prepare(**command)
        if cmd == "go":
            return await self.go()
        if cmd == "rate":
            return await self.rate(**command)
        if cmd == "use":
            self.subscribers = command["subscribers"]
            return {"subscribers": len(self.subscribers)}
        if cmd == "hangups":
            return await self.hangups(command["round"])
        if cmd == "count":
            return {"connected": len(self.sim.connected_subscribers())}
        if cmd == "drop":
            # abrupt: every TCP connection reset at once, as when the PBX or a link dies
            # (a close handshake per socket would spread the drop over seconds).
            now = time.monotonic()
            code = None if command.get("abrupt", True) else 1012
            dropped = await self.sim.drop(command.get("subscriber"), code=code)
            return {"dropped": dropped, "at": now}
        if cmd == "handshakes":
            since, only = command["since"], command.get("subscriber")
            times = [
                t - since
                for s, t in self.sim.handshake_log
                if t >= since and (only is None or s == only)
            ]
            return {"times": times}
        raise ValueError(cmd)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-key", default="bench-key")
    args = parser.parse_args()
    sim = PhonetSimulator(api_key=args.api_key, record=False)
    await sim.start()
    driver = Driver(sim)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 2**20)  # a prepare names every subscriber
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    hello = {"url": sim.url, "domain": sim.domain, "rest_url": sim.rest_url}
    print(orjson.dumps(hello).decode(), flush=True)
    while line := await reader.readline():
        command = orjson.loads(line)
        if command.get("cmd") == "quit":
            break
        print(orjson.dumps(await driver.handle(command)).decode(), flush=True)
    await sim.close()


if __name__ == "__main__":
    asyncio.run(main())
