"""One subscriber's reconnecting socket (the I/O adapter proper)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from producer import __version__
from producer.core.errors import NotConnected
from producer.phonet.connection import PhonetConnection, abort_connection
from producer.phonet.keys import ApiKey
from producer.phonet.options import HandshakeGate, SocketOptions
from producer.telemetry.logs import BurstLog, safe_error
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer.phonet")

FrameHandler = Callable[[str, int, bytes, bool, float], None]
"""``(subscriber, connection, payload, is_text, received_monotonic)``; must not block or
raise. ``connection`` numbers the socket's connections (1, 2, … per reconnect)."""

TooLargeHandler = Callable[[str], None]
StateHandler = Callable[[str, int, bool], None]
"""``(subscriber, connection, up)``: a connection opened or closed; must not block or raise."""

_drops = BurstLog(log)
_failures = BurstLog(log)
_refusals = BurstLog(log)


@dataclass(slots=True)
class SocketStats:
    """One socket's counts, read at scrape time (no metric object per socket)."""

    connects: int = 0
    disconnects: int = 0
    failures: int = 0


class SubscriberSocket:
    """One subscriber's socket. :meth:`run` keeps it connected until :meth:`close`.

    Frames go to ``on_frame`` in arrival order. :meth:`send` writes a text frame on the
    open socket (click2call) and raises :class:`NotConnected` when there is none.
    """

    __slots__ = (
        "_backoff",
        "_closing",
        "_cycling",
        "_gate",
        "_key",
        "_metrics",
        "_on_frame",
        "_on_state",
        "_on_too_large",
        "_options",
        "_refused",
        "_safe_url",
        "_sleeping",
        "_ws",
        "connection",
        "key_version",
        "last_close",
        "stats",
        "subscriber",
    )

    def __init__(
        self,
        subscriber: str,
        key: ApiKey,
        *,
        on_frame: FrameHandler,
        on_too_large: TooLargeHandler,
        metrics: Metrics,
        options: SocketOptions,
        safe_url: str,
        gate: HandshakeGate | None = None,
        on_state: StateHandler | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.stats = SocketStats()
        self._gate = gate
        self._key = key
        self.key_version = 0  # the API key version the open connection logged in with
        self.last_close: int | None = None  # the close code of the last connection
        self._safe_url = safe_url
        self._on_frame = on_frame
        self._on_too_large = on_too_large
        self._on_state = on_state
        self.connection = 0  # numbers its connections; the current one while connected
        self._metrics = metrics
        self._options = options
        self._backoff = options.backoff()
        self._ws: PhonetConnection | None = None
        self._closing = False
        self._cycling = False
        self._refused = False  # sleeping after a 401/403: a new key wakes it
        self._sleeping: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the socket is open."""
        return self._ws is not None

    @property
    def flapping(self) -> bool:
        """Its recent connections did not stay up ``healthy_after`` (or did not open)."""
        return self._backoff.unsettled

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
            auth_failed = retry_now = False
            version = self._key.version
            try:
                async with self._gate.slot() if self._gate else contextlib.nullcontext():
                    version = self._key.version
                    ws = await connect(
                        self._key.url(self.subscriber),
                        create_connection=PhonetConnection,
                        open_timeout=o.open_timeout,
                        ping_interval=o.ping_interval,
                        ping_timeout=o.ping_timeout,
                        close_timeout=o.close_timeout,
                        max_size=o.max_frame_bytes,
                        max_queue=o.max_queue,
                        compression=None,  # zlib state per socket: ~100 KB each at 10,000
                        user_agent_header=f"phonet-producer/{__version__}",
                        proxy=None,
                        **o.tls,
                    )
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                status = exc.response.status_code
                auth_failed = status in (401, 403)
                self._failed("auth" if auth_failed else "http")
                # A rotated key: the PBX refuses the old one; retry at once with the new.
                retry_now = auth_failed and self._key.refused(version, loop.time())
                if auth_failed and not retry_now:
                    _refusals(
                        logging.ERROR,
                        "Phonet refused the API key or domain (HTTP %d); check PHONET_API_KEY"
                        " and PHONET_DOMAIN",
                        status,
                        extra={"subscriber": self.subscriber, "url": self._safe_url},
                    )
                else:
                    _failures(
                        logging.WARNING,
                        "socket handshake refused (HTTP %d)",
                        status,
                        extra={"subscriber": self.subscriber, "url": self._safe_url},
                    )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, EOFError) as exc:
                self._failed("timeout" if isinstance(exc, TimeoutError) else "network")
                _failures(
                    logging.WARNING,
                    "socket connect failed: %s: %s",
                    type(exc).__name__,
                    safe_error(exc),
                    extra={"subscriber": self.subscriber, "url": self._safe_url},
                )
            except Exception:  # a bug or an unforeseen library error: keep the loop alive
                self._failed("other")
                log.exception("unexpected error connecting", extra={"subscriber": self.subscriber})
            else:
                assert isinstance(ws, PhonetConnection)
                if self._closing:  # close() ran while the handshake was in progress
                    try:
                        await ws.close(CloseCode.GOING_AWAY, "producer shutting down")
                    finally:  # also when the shutdown budget cancels the close
                        ws.release()
                    return
                started = loop.time()
                self.key_version = version
                self._key.accepted(version)
                self._opened(ws)
                try:
                    yield ws
                finally:
                    self._closed()
                    if not self._closing:
                        await abort_connection(ws)
                    ws.release()
                self._backoff.session_ended(loop.time() - started)
                retry_now, self._cycling = self._cycling, False
            if self._closing:
                return
            if not retry_now:
                self._refused = auth_failed
                try:
                    await self._sleep(self._backoff.next_delay(auth_failed=auth_failed))
                finally:
                    self._refused = False
            self._metrics.ws_reconnects.inc()

    def _failed(self, reason: str) -> None:
        self.stats.failures += 1
        self._metrics.ws_failures[reason].inc()

    def _opened(self, ws: PhonetConnection) -> None:
        self.connection += 1
        self.last_close = None
        self.stats.connects += 1
        ws.on_fallback = self._metrics.fallbacks["websockets_opcode"].inc
        ws.forget_handshake()
        self._ws = ws
        self._metrics.ws_connects.inc()
        log.debug("socket connected", extra={"subscriber": self.subscriber})
        if self._on_state is not None:
            self._on_state(self.subscriber, self.connection, True)

    def _closed(self) -> None:
        self._ws = None
        self.stats.disconnects += 1
        self._metrics.ws_disconnects.inc()
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
        code = rcvd.code if rcvd is not None else (sent.code if sent is not None else 1006)
        self.last_close = int(code)
        if self._closing or self._cycling:
            return
        reason = (rcvd.reason if rcvd is not None else "") or ""
        _drops(
            logging.WARNING,
            "socket closed (code %d%s)",
            code,
            f": {reason[:80]}" if reason else "",
            extra={"subscriber": self.subscriber},
        )

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, or until :meth:`close` (no Event per socket: a future
        exists only while sleeping)."""
        if delay <= 0:
            return
        self._sleeping = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(delay):
                await self._sleeping
        except TimeoutError:
            pass
        finally:
            self._sleeping = None

    def wake(self) -> None:
        """A new API key is known: a socket waiting out a 401/403 tries again now."""
        if self._refused and self._sleeping is not None and not self._sleeping.done():
            self._sleeping.set_result(None)

    async def cycle(self, timeout: float) -> bool:
        """Close the open connection and reconnect at once (a new API key); True when it
        is open again within ``timeout`` seconds. Nothing happens when it is not open.
        Cancellation leaves it reconnecting on its own."""
        ws, before = self._ws, self.connection
        if ws is None or self._closing:
            return False
        self._cycling = True
        await ws.close(CloseCode.NORMAL_CLOSURE, "API key rotated")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polled, not awaited on an Event: no per-socket Event at 10,000 sockets.
        while not (self._ws is not None and self.connection != before):
            if loop.time() >= deadline or self._closing:
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self, code: int = CloseCode.GOING_AWAY) -> None:
        """Stop reconnecting and close the socket with ``code`` (1001 by default)."""
        self._closing = True
        if self._sleeping is not None and not self._sleeping.done():
            self._sleeping.set_result(None)
        ws = self._ws
        if ws is not None:
            await ws.close(code, "producer shutting down")
