"""``serve``: the service until SIGTERM or SIGINT, then a drain (the CLI's default command)."""

from __future__ import annotations

import asyncio
import logging
import signal

from producer.app.service import Producer
from producer.app.settings import Settings

log = logging.getLogger("producer")


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain and return the exit code (0)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    producer = Producer(settings, manage_gc=True)
    await producer.start()
    try:
        await stop.wait()
        log.info("signal received")
    finally:
        await producer.stop()
    return 0
