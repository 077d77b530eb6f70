"""Runs the disk spool beside the publisher: the glue between
:class:`~producer.publish.spool.Spool` (the files) and the pipeline, publisher and metrics.

* :meth:`SpoolKeeper.start` recovers what an earlier run left unconfirmed and puts it back
  in the pipeline (keeping its sequence numbers), then starts the spool's thread;
* five times a second it hands the spool its checkpoint (the oldest held sequence
  number) and mirrors its size and health in the metrics;
* :meth:`SpoolKeeper.close` checkpoints and closes it within a bounded time.
"""

from __future__ import annotations

import asyncio
import logging

from producer.publish.pipeline import Pipeline
from producer.publish.publisher import Publisher
from producer.publish.spool import Spool
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer")

MAINTAIN_EVERY = 0.2


class SpoolKeeper:
    """One spool for the life of a producer."""

    def __init__(
        self, spool: Spool, pipeline: Pipeline, publisher: Publisher, metrics: Metrics
    ) -> None:
        self.spool = spool
        self.pipeline = pipeline
        self.publisher = publisher
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the directory, recover, start the spool's thread and the maintenance task.

        Raises:
            SpoolError: the directory cannot be used (another producer holds it, it holds
                a format version this code does not know, a file in it cannot be read).
        """
        spool, loop = self.spool, asyncio.get_running_loop()
        spool.open()
        found = spool.recover(received=loop.time())
        self.pipeline.advance_seq(found.next_seq)
        for envelope in found.envelopes:
            self.publisher.put(envelope, recovered=True)
        self.metrics.spool_recovered.inc(len(found.envelopes))
        self.metrics.spool_damaged.inc(found.damaged)
        self.metrics.spool_bytes.set(spool.bytes)
        if found.envelopes or found.damaged:
            log.info(
                "recovered unconfirmed events from the spool",
                extra={"events": len(found.envelopes), "damaged": found.damaged},
            )
        spool.start(loop)
        self._task = asyncio.create_task(self._maintain(), name="spool")

    async def _maintain(self) -> None:
        """Until cancelled (the spool's own thread writes and fsyncs)."""
        spool = self.spool
        while True:
            await asyncio.sleep(MAINTAIN_EVERY)
            spool.checkpoint(self.pipeline.oldest_seq)
            self.metrics.spool_bytes.set(spool.bytes)
            self.metrics.spool_degraded.set(int(spool.degraded))

    async def close(self) -> int:
        """Checkpoint and close the spool in a worker thread (a stalled disk must not hold
        the shutdown past its budget: at most about a second); returns how many held
        events are not on disk."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        spool = self.spool
        spool.checkpoint(self.pipeline.oldest_seq)
        closing = asyncio.ensure_future(asyncio.to_thread(spool.close, 0.8))
        try:
            async with asyncio.timeout(1.0):
                await asyncio.shield(closing)
        except TimeoutError:
            log.error("shutdown: the spool did not close in time (a stalled disk?)")
        return spool.missing
