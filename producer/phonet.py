"""Phonet sockets: one reconnecting WebSocket per subscriber, kept in a :class:`SocketPool`.

This is the thin I/O adapter. It reads frames and hands each one, with its opcode and
receive time, to a ``FrameHandler``; parsing and routing happen elsewhere (pure modules).
Reconnect delays come from :class:`producer.backoff.Backoff`. Its loop follows the shape of
``async for ws in websockets.connect(...)``, but resets the backoff only after a connection
stayed up ``healthy_after`` seconds, and treats HTTP 401/403 as an authentication failure
that is retried slowly.

The socket URL carries the API key. It is passed to websockets and nowhere else: logs name
the subscriber and the masked base URL, exceptions are logged by type and status only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

from producer import __version__
from producer.backoff import Backoff
from producer.errors import NotConnected
from producer.logs import ScrubFilter, safe_error
from producer.metrics import Metrics

log = logging.getLogger("producer.phonet")

FrameHandler = Callable[[str, int, bytes, bool, float], None]
"""``(subscriber, connection, payload, is_text, received_monotonic)``; must not block or
raise. ``connection`` numbers the socket's connections (1, 2, … per reconnect)."""

TooLargeHandler = Callable[[str], None]
StateHandler = Callable[[str, int, bool], None]
"""``(subscriber, connection, up)``: a connection opened or closed; must not block or raise."""

_opcode_fallback_logged = False


logging.getLogger("websockets.client").addFilter(ScrubFilter())


class PhonetConnection(ClientConnection):
    """A client connection that remembers whether each message came as text or binary.

    ``recv(decode=False)`` returns bytes for both kinds (so invalid UTF-8 in a text frame
    does not fail the connection); the opcode of each message's first frame is queued here
    in the same order the messages are delivered, by overriding websockets'
    ``process_event`` — its internals, behind this one seam. Should a websockets release
    stop calling it, no opcode is queued and :meth:`recv_frame` falls back to telling text
    from binary by whether the bytes are UTF-8 (logged once, counted): binary JSON would
    then pass as text, nothing is lost.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kinds: deque[bool] = deque()
        self.on_fallback: Callable[[], None] | None = None

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.kinds.append(event.opcode is Opcode.TEXT)
        super().process_event(event)

    async def recv_frame(self) -> tuple[bytes, bool]:
        """The next message as ``(bytes, is_text)``. Raises ConnectionClosed at the end."""
        data = await self.recv(decode=False)
        if self.kinds:
            return data, self.kinds.popleft()
        return data, self._guess(data)

    def _guess(self, data: bytes) -> bool:
        global _opcode_fallback_logged
        if not _opcode_fallback_logged:
            _opcode_fallback_logged = True
            log.warning(
                "websockets internals changed: telling text from binary frames by UTF-8 validity"
            )
        if self.on_fallback is not None:
            self.on_fallback()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True


@dataclass(frozen=True)
class SocketOptions:
    """Connection parameters shared by every socket of a producer."""

    open_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    max_frame_bytes: int = 1_048_576
    max_queue: int = 64
    reconnect_initial: float = 5.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    healthy_after: float = 10.0
    auth_retry_delay: float = 60.0

    def backoff(self) -> Backoff:
        return Backoff(
            min_delay=self.reconnect_min,
            max_delay=self.reconnect_max,
            initial=self.reconnect_initial,
            healthy_after=self.healthy_after,
            auth_delay=self.auth_retry_delay,
        )


class SubscriberSocket:
    """One subscriber's socket. :meth:`run` keeps it connected until :meth:`close`.

    Frames go to ``on_frame`` in arrival order. :meth:`send` writes a text frame on the
    open socket (click2call) and raises :class:`NotConnected` when there is none.
    """

    def __init__(
        self,
        subscriber: str,
        url: str,
        *,
        on_frame: FrameHandler,
        on_too_large: TooLargeHandler,
        metrics: Metrics,
        options: SocketOptions,
        safe_url: str,
        on_state: StateHandler | None = None,
    ) -> None:
        self.subscriber = subscriber
        self._url = url
        self._safe_url = safe_url
        self._on_frame = on_frame
        self._on_too_large = on_too_large
        self._on_state = on_state
        self.connection = 0
        """Numbers this socket's connections; the current one while :attr:`connected`."""
        self._metrics = metrics
        self._options = options
        self._backoff = options.backoff()
        self._ws: PhonetConnection | None = None
        self._up = asyncio.Event()
        self._closing = False
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while the socket is open."""
        return self._ws is not None

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected; False after ``timeout`` seconds (cancellation propagates)."""
        if self._ws is not None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return self._ws is not None

    async def send(self, text: str, connection: int | None = None) -> None:
        """Send one text frame (on ``connection`` only, when given). Raises NotConnected if
        the socket is down, drops, or is another connection by now. Cancellation may leave
        the frame sent or not."""
        ws = self._ws
        if ws is None or (connection is not None and connection != self.connection):
            raise NotConnected("not connected")
        try:
            await ws.send(text)
        except ConnectionClosed:
            raise NotConnected("not connected") from None

    async def run(self) -> None:
        """Connect, read, reconnect, until :meth:`close`. Never raises but CancelledError."""
        async with aclosing(self._connections()) as connections:
            async for ws in connections:
                try:
                    await self._read(ws)
                except ConnectionClosed as exc:
                    self._log_closed(exc)
                except Exception:  # a bug must cost one connection, not the socket task
                    log.exception("socket reader failed", extra={"subscriber": self.subscriber})

    async def _connections(self) -> AsyncGenerator[PhonetConnection, None]:
        loop = asyncio.get_running_loop()
        o = self._options
        while not self._closing:
            auth_failed = False
            try:
                ws = await connect(
                    self._url,
                    create_connection=PhonetConnection,
                    open_timeout=o.open_timeout,
                    ping_interval=o.ping_interval,
                    ping_timeout=o.ping_timeout,
                    close_timeout=o.close_timeout,
                    max_size=o.max_frame_bytes,
                    max_queue=o.max_queue,
                    user_agent_header=f"phonet-producer/{__version__}",
                    proxy=None,
                )
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                status = exc.response.status_code
                auth_failed = status in (401, 403)
                self._metrics.ws_connect_failures.labels(self.subscriber).inc()
                if auth_failed:
                    self._metrics.ws_auth_failures.labels(self.subscriber).inc()
                    log.error(
                        "Phonet refused the API key or domain (HTTP %d); check PHONET_API_KEY"
                        " and PHONET_DOMAIN",
                        status,
                        extra={"subscriber": self.subscriber, "url": self._safe_url},
                    )
                else:
                    log.warning(
                        "socket handshake refused (HTTP %d)",
                        status,
                        extra={"subscriber": self.subscriber, "url": self._safe_url},
                    )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, EOFError) as exc:
                self._metrics.ws_connect_failures.labels(self.subscriber).inc()
                log.warning(
                    "socket connect failed: %s: %s",
                    type(exc).__name__,
                    safe_error(exc),
                    extra={"subscriber": self.subscriber, "url": self._safe_url},
                )
            except Exception:  # a bug or an unforeseen library error: keep the loop alive
                self._metrics.ws_connect_failures.labels(self.subscriber).inc()
                log.exception("unexpected error connecting", extra={"subscriber": self.subscriber})
            else:
                assert isinstance(ws, PhonetConnection)
                if self._closing:  # close() ran while the handshake was in progress
                    await ws.close(CloseCode.GOING_AWAY, "producer shutting down")
                    return
                started = loop.time()
                self._opened(ws)
                try:
                    yield ws
                finally:
                    self._closed()
                    if not self._closing:
                        await _abort(ws)
                self._backoff.session_ended(loop.time() - started)
            if self._closing:
                return
            await self._sleep(self._backoff.next_delay(auth_failed=auth_failed))
            self._metrics.ws_reconnects.labels(self.subscriber).inc()

    def _opened(self, ws: PhonetConnection) -> None:
        self.connection += 1
        ws.on_fallback = self._metrics.fallbacks["websockets_opcode"].inc
        self._ws = ws
        self._up.set()
        self._metrics.ws_connected.labels(self.subscriber).set(1)
        self._metrics.ws_connects.labels(self.subscriber).inc()
        log.info("socket connected", extra={"subscriber": self.subscriber})
        if self._on_state is not None:
            self._on_state(self.subscriber, self.connection, True)

    def _closed(self) -> None:
        self._ws = None
        self._up.clear()
        self._metrics.ws_connected.labels(self.subscriber).set(0)
        self._metrics.ws_disconnects.labels(self.subscriber).inc()
        if self._on_state is not None:
            self._on_state(self.subscriber, self.connection, False)

    async def _read(self, ws: PhonetConnection) -> None:
        loop = asyncio.get_running_loop()
        on_frame, subscriber, connection = self._on_frame, self.subscriber, self.connection
        while True:
            data, is_text = await ws.recv_frame()
            try:
                on_frame(subscriber, connection, data, is_text, loop.time())
            except Exception:  # a bug in the pipeline must not kill the socket
                log.exception("frame handler failed", extra={"subscriber": subscriber})

    def _log_closed(self, exc: ConnectionClosed) -> None:
        sent, rcvd = exc.sent, exc.rcvd
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            self._on_too_large(self.subscriber)
        if self._closing:
            return
        code = rcvd.code if rcvd is not None else (sent.code if sent is not None else 1006)
        reason = (rcvd.reason if rcvd is not None else "") or ""
        log.warning(
            "socket closed (code %d%s)",
            code,
            f": {reason[:80]}" if reason else "",
            extra={"subscriber": self.subscriber},
        )

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def close(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Stop reconnecting and close the socket with ``code`` (1001 by default)."""
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            await ws.close(code, "producer shutting down")


async def _abort(ws: ClientConnection) -> None:
    """Close after a failure, without waiting long for a dead peer."""
    try:
        async with asyncio.timeout(1):
            await ws.close()
    except (TimeoutError, ConnectionClosed, OSError):
        ws.transport.abort()


class SocketPool:
    """The managed set of subscriber sockets; can grow and shrink while running.

    ``factory`` makes a :class:`SubscriberSocket` for a subscriber; the pool runs each in
    its own task. :meth:`close` closes them all (code 1001) and waits up to ``timeout``.
    """

    def __init__(self, factory: Callable[[str], SubscriberSocket], metrics: Metrics) -> None:
        self._factory = factory
        self._metrics = metrics
        self._sockets: dict[str, SubscriberSocket] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, subscriber: object) -> bool:
        return subscriber in self._sockets

    def __len__(self) -> int:
        return len(self._sockets)

    def get(self, subscriber: str) -> SubscriberSocket | None:
        return self._sockets.get(subscriber)

    @property
    def subscribers(self) -> list[str]:
        return list(self._sockets)

    @property
    def connected_count(self) -> int:
        return sum(1 for s in self._sockets.values() if s.connected)

    def add(self, subscriber: str) -> None:
        """Start a socket for ``subscriber`` (no-op if it already has one)."""
        if subscriber in self._sockets:
            return
        self._metrics.add_subscriber(subscriber)
        sock = self._factory(subscriber)
        self._sockets[subscriber] = sock
        self._tasks[subscriber] = asyncio.create_task(sock.run(), name=f"socket:{subscriber}")

    async def remove(self, subscriber: str, timeout: float = 5.0) -> None:
        """Close and forget ``subscriber``'s socket."""
        sock = self._sockets.pop(subscriber, None)
        task = self._tasks.pop(subscriber, None)
        if sock is None or task is None:
            return
        await _stop(sock, task, timeout)
        self._metrics.remove_subscriber(subscriber)

    async def update(self, subscribers: Iterable[str]) -> None:
        """Make the pool hold exactly ``subscribers``: start new ones, close the rest."""
        wanted = list(dict.fromkeys(subscribers))
        keep = set(wanted)
        gone = [s for s in self._sockets if s not in keep]
        await asyncio.gather(*(self.remove(s) for s in gone))
        for subscriber in wanted:
            self.add(subscriber)

    async def close(self, timeout: float = 5.0) -> None:
        """Close every socket with 1001 and wait for their tasks (cancelled after timeout)."""
        sockets, tasks = self._sockets, self._tasks
        await asyncio.gather(*(_stop(sockets[s], tasks[s], timeout) for s in list(sockets)))
        for subscriber in list(sockets):
            self._metrics.ws_connected.labels(subscriber).set(0)
        sockets.clear()
        tasks.clear()


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
