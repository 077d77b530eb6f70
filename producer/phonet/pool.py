"""The managed set of subscriber sockets.

Memory: a held socket is the largest per-subscriber cost of the service, about 17 KB of RSS
each over ``ws://`` at 10,000 (the :class:`SubscriberSocket`, its task, its
:class:`~producer.phonet.socket.SocketStats` and backoff, the websockets connection with
its buffers and the transport; ``wss://`` adds the TLS state), measured as RSS per socket
by ``tests/bench/run.py`` (scale) and ``tests/bench/memory.py``. A frame being read may
hold up to ``PHONET_MAX_FRAME_BYTES`` for a moment. Everything goes with the socket when
the subscriber is no longer held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from producer.phonet.keys import ApiKey
from producer.phonet.socket import StateHandler, SubscriberSocket
from producer.telemetry.exposition import SocketRow, SocketsView
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer.phonet")


class SocketPool:
    """The managed set of subscriber sockets; can grow and shrink while running.

    ``factory`` makes a :class:`SubscriberSocket` for a subscriber, with the state handler
    it must call; the pool runs each in its own task and keeps the set of open ones (so
    "how many are up" costs nothing with ten thousand sockets: health probes and replica
    heartbeats ask often), then passes the change on to ``on_state``. :meth:`close` closes
    them all (code 1001) and waits up to ``timeout``.
    """

    def __init__(
        self,
        factory: Callable[[str, StateHandler], SubscriberSocket],
        metrics: Metrics,
        on_state: StateHandler | None = None,
    ) -> None:
        self._factory = factory
        self._metrics = metrics
        self._on_state = on_state
        self._sockets: dict[str, SubscriberSocket] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tokens: dict[str, object] = {}  # subscriber -> its current socket's token
        self._open: set[object] = set()  # the tokens of this pool's open sockets
        metrics.watch_sockets(self.view)

    def __contains__(self, subscriber: object) -> bool:
        return subscriber in self._sockets

    def __len__(self) -> int:
        return len(self._sockets)

    def get(self, subscriber: str) -> SubscriberSocket | None:
        return self._sockets.get(subscriber)

    @property
    def subscribers(self) -> list[str]:
        return list(self._sockets)

    def all_up(self) -> bool:
        """True when every socket is open."""
        return len(self._open) == len(self._sockets)

    @property
    def connected_count(self) -> int:
        return len(self._open)

    def view(self) -> SocketsView:
        """What the metrics show of the sockets. Called by the scrape's rendering thread:
        ``list(dict.values())`` copies in one step under the GIL (no Python code runs
        meanwhile), so the loop may add and remove sockets during a scrape; each socket's
        fields are read as they are at that moment."""
        rows = [
            SocketRow(
                s.subscriber,
                s.connected,
                s.flapping,
                s.stats.connects,
                s.stats.disconnects,
                s.stats.failures,
            )
            for s in list(self._sockets.values())
        ]
        return SocketsView(rows)

    def add(self, subscriber: str) -> None:
        """Start a socket for ``subscriber`` (no-op if it already has one)."""
        if subscriber in self._sockets:
            return
        # The socket's state handler knows it by a token, not by the socket: a handler
        # holding the socket would make a reference cycle, and a removed socket would then
        # wait for a full collection (frozen: for a thaw) instead of being freed at once.
        token = object()

        def on_state(subscriber: str, connection: int, up: bool) -> None:
            if up and self._tokens.get(subscriber) is token:
                self._open.add(token)
            else:
                self._open.discard(token)
            if self._on_state is not None:
                try:
                    self._on_state(subscriber, connection, up)
                except Exception:  # a bug there must not kill the socket's task
                    log.exception("socket state handler failed", extra={"subscriber": subscriber})

        self._tokens[subscriber] = token
        sock = self._factory(subscriber, on_state)
        self._sockets[subscriber] = sock
        self._tasks[subscriber] = asyncio.create_task(sock.run(), name=f"socket:{subscriber}")

    async def remove(self, subscriber: str, timeout: float = 5.0) -> None:
        """Close and forget ``subscriber``'s socket."""
        sock = self._sockets.pop(subscriber, None)
        task = self._tasks.pop(subscriber, None)
        # No longer counted, though it may take a moment to close.
        self._open.discard(self._tokens.pop(subscriber, None))
        if sock is None or task is None:
            return
        await _stop(sock, task, timeout)

    async def update(self, subscribers: Iterable[str]) -> None:
        """Make the pool hold exactly ``subscribers``: start new ones, close the rest."""
        wanted = list(dict.fromkeys(subscribers))
        keep = set(wanted)
        gone = [s for s in self._sockets if s not in keep]
        await asyncio.gather(*(self.remove(s) for s in gone))
        for subscriber in wanted:
            self.add(subscriber)

    def wake_refused(self) -> None:
        """A new API key is known: sockets waiting out a 401/403 try again now."""
        for sock in self._sockets.values():
            sock.wake()

    async def follow_key(
        self,
        key: ApiKey,
        *,
        interval: float,
        at_once: int,
        timeout: float,
        busy: Callable[[str], bool],
    ) -> None:
        """Every ``interval`` seconds, re-read the key file; while sockets are open under
        another key than the current one (a rotation, from here or from a refused
        handshake), :meth:`cycle` them, ``at_once`` at a time. Until cancelled."""
        loop = asyncio.get_running_loop()
        version = key.version
        while True:
            await asyncio.sleep(interval)
            key.reread(loop.time())
            if key.version != version:
                version = key.version
                self.wake_refused()
            stale = sum(
                1
                for s in self._sockets.values()
                if s.connected and not key.is_current(s.key_version)
            )
            if not stale:
                continue
            done = await self.cycle(
                lambda v: not key.is_current(v), at_once, timeout=timeout, busy=busy
            )
            logging.getLogger("producer").info(  # the line the README tells operators to await
                "sockets reopened with the new API key"
                if done
                else "reopening sockets with the new API key: some are left for the next round",
                extra={"sockets": stale, "key_version": key.version},
            )

    async def cycle(
        self,
        stale: Callable[[int], bool],
        at_once: int,
        timeout: float,
        busy: Callable[[str], bool] = lambda _subscriber: False,
    ) -> bool:
        """Reopen every open socket whose API key version is ``stale``, ``at_once`` at a
        time, each waiting until it is back (at most ``timeout`` seconds): a key rotation
        costs each socket one reconnect, and the PBX sees ``at_once`` handshakes at a time.

        One socket goes first, alone (a canary): when it does not come back on a current
        key — the PBX refused the new key — nothing else is touched. Sockets that are
        ``busy`` (a click2call command on the line) are left for a later call. True when
        no stale socket is left. Cancellation stops the cycling; sockets already closed
        reconnect on their own."""
        todo = [s for s in self._sockets.values() if s.connected and stale(s.key_version)]
        ready = [s for s in todo if not busy(s.subscriber)]
        if not ready:
            return not todo
        canary, rest = ready[0], ready[1:]
        if not await canary.cycle(timeout) or stale(canary.key_version):
            return False
        slots = asyncio.Semaphore(max(1, at_once))

        async def one(sock: SubscriberSocket) -> None:
            async with slots:
                if sock.connected and stale(sock.key_version) and not busy(sock.subscriber):
                    await sock.cycle(timeout)

        await asyncio.gather(*(one(sock) for sock in rest))
        return not any(s.connected and stale(s.key_version) for s in self._sockets.values())

    async def close(self, timeout: float = 5.0) -> None:
        """Close every socket with 1001 and wait for their tasks (cancelled after timeout)."""
        sockets, tasks = self._sockets, self._tasks
        await asyncio.gather(*(_stop(sockets[s], tasks[s], timeout) for s in list(sockets)))
        sockets.clear()
        tasks.clear()
        self._tokens.clear()
        self._open.clear()


async def _stop(sock: SubscriberSocket, task: asyncio.Task[None], timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await sock.close()
            await task
    except TimeoutError:
        log.warning("socket did not close in time", extra={"subscriber": sock.subscriber})
    finally:
        if not task.done():
            task.cancel()
            # wait() does not re-raise the task's CancelledError, so an outer
            # cancellation of this coroutine is not swallowed.
            await asyncio.wait([task])
