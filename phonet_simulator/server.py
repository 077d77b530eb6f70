"""An embedded Phonet WSS server for the demo, the tests and the benchmarks.

It serves ``/live/connector/v3/easy?domain=…&apiKey=…&subscriber=…`` like the real PBX:
a wrong ``domain`` or ``apiKey`` is refused with HTTP 403, a missing subscriber with 400.
Each accepted socket is one subscriber's; the simulator can generate realistic calls
(:mod:`phonet_simulator.calls`) at a steady rate and answers click2call actions.

Tests drive it directly: :meth:`PhonetSimulator.send` a frame (dict, text or binary) to a
subscriber, :meth:`~PhonetSimulator.drop` sockets, set ``refuse_status`` to refuse
handshakes or ``handshake_delay`` to make them slow (``handshakes_peak`` then tells how
many were in progress at once), replace ``on_action`` to script the PBX's answers, read
``actions`` (what the producer sent) and ``sent`` (what the simulator delivered).
:meth:`~PhonetSimulator.deafen` makes it hang (off by default): it stops reading some or
all sockets, so it answers no ping and no close frame, as a stalled PBX does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from phonet_simulator.calls import CallFactory, Frame, Quirks, Script, click2call_reply
from phonet_simulator.hidden import quiet
from phonet_simulator.rest import CallLog, RestServer, staff_of

log = logging.getLogger("phonet_simulator")
_ws_log = logging.getLogger("phonet_simulator.ws")


quiet(_ws_log)

PATH = "/live/connector/v3/easy"


@dataclass(frozen=True)
class Reply:
    """How the PBX answers one action: ``frame`` (None: never) after ``delay`` seconds."""

    frame: Frame | str | None
    delay: float = 0.0


ActionHandler = Callable[[str, Any], "Reply | Frame | Awaitable[Reply | Frame | None] | None"]


def _encode(frame: Frame | str | bytes) -> str | bytes:
    if isinstance(frame, dict):
        return orjson.dumps(frame).decode()
    return frame


class PhonetSimulator:
    """The simulated PBX. ``async with PhonetSimulator(api_key=...) as sim:`` starts it."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        domain: str = "demo.phonet.com.ua",
        host: str = "127.0.0.1",
        port: int = 0,
        subscribers: Iterable[str] | None = None,
        calls_per_second: float = 0.0,
        seed: int | None = None,
        quirks: Quirks | None = None,
        time_scale: float = 1.0,
        record: bool = True,
    ) -> None:
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.domain = domain
        self.host = host
        self.port = port
        self.known = set(subscribers) if subscribers is not None else None
        self.calls_per_second = calls_per_second
        self.seed = seed
        self.quirks = quirks or Quirks()
        self.time_scale = time_scale
        self.record = record
        self.refuse_status: int | None = None
        self.handshake_delay = 0.0
        """Seconds each accepted handshake takes (a slow PBX); see ``handshakes_peak``."""
        self.handshakes_in_progress = 0
        self.handshakes_peak = 0
        self.traffic_for: list[str] | None = None
        """Subscribers calls are generated for (default: the known, else the connected)."""
        self.on_action: ActionHandler = lambda _subscriber, action: (
            click2call_reply(action) if isinstance(action, dict) else None
        )
        self.actions: list[tuple[str, Any]] = []
        self.sent: list[tuple[str, str | bytes]] = []
        self.missed: list[tuple[str, str | bytes]] = []
        self.handshakes: collections.Counter[str] = collections.Counter()
        self.handshake_log: collections.deque[tuple[str, float]] = collections.deque(maxlen=100_000)
        """``(subscriber, time.monotonic())`` of accepted handshakes, newest last."""
        self.refused: collections.Counter[int] = collections.Counter()
        self.frames_sent = 0
        self._conns: dict[str, set[ServerConnection]] = collections.defaultdict(set)
        self._deaf: set[str | None] = set()  # None: every subscriber
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self._traffic: asyncio.Task[None] | None = None
        self._plays: set[asyncio.Task[None]] = set()
        self.calls = CallLog()
        """Every call the PBX placed (delivered or missed): the REST API's history."""
        self.staff: list[dict[str, Any]] | None = None
        """The REST API's employee list; default: one per known subscriber."""
        self.rest = RestServer(
            domain=domain,
            api_key=lambda: self.api_key,
            employees=self.employees,
            calls=self.calls,
            host=host,
        )

    # --- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL to put in ``PHONET_URL`` (the producer adds the query)."""
        return f"ws://{self.host}:{self.port}{PATH}"

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free one, then ``port`` holds it); start traffic when
        ``calls_per_second`` is set."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check,
            compression=None,
            ping_interval=None,
            max_size=2**20,
            logger=_ws_log,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        await self.rest.start()
        if self.calls_per_second > 0:
            self.start_traffic(self.calls_per_second)

    async def close(self) -> None:
        """Stop traffic and scheduled answers, close every socket and stop listening."""
        self.hear()  # a deaf socket would make the closing handshake wait for its timeout
        await self.stop_traffic()
        for task in list(self._plays):
            task.cancel()
        if self._plays:
            await asyncio.wait(list(self._plays))
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.rest.close()

    async def __aenter__(self) -> PhonetSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- handshake and sockets --------------------------------------------------------
    async def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.handshake_delay:
            return self._decide(connection, request)
        self.handshakes_in_progress += 1
        self.handshakes_peak = max(self.handshakes_peak, self.handshakes_in_progress)
        try:
            await asyncio.sleep(self.handshake_delay)
            return self._decide(connection, request)
        finally:
            self.handshakes_in_progress -= 1

    def _decide(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        subscriber = query.get("subscriber", "")
        if self.refuse_status is not None:
            status = self.refuse_status
        elif parts.path != PATH:
            status = 404
        elif query.get("domain") != self.domain or query.get("apiKey") != self.api_key:
            status = 403
        elif not subscriber:
            status = 400
        elif self.known is not None and subscriber not in self.known:
            status = 403
        else:
            connection.subscriber = subscriber  # type: ignore[attr-defined]
            connection.api_key = self.api_key  # type: ignore[attr-defined]
            self.handshakes[subscriber] += 1
            self.handshake_log.append((subscriber, time.monotonic()))
            return None
        self.refused[status] += 1
        log.debug("handshake refused", extra={"status": status, "subscriber": subscriber[:80]})
        return connection.respond(status, f"HTTP {status}\n")

    @property
    def rest_url(self) -> str:
        """Base URL to put in ``PHONET_REST_URL``."""
        return self.rest.url

    def employees(self) -> list[dict[str, Any]]:
        """What ``GET /rest/users`` lists: ``staff`` when set, else one employee per known
        subscriber (:func:`~phonet_simulator.rest.staff_of`)."""
        return list(self.staff) if self.staff is not None else staff_of(self.known or ())

    def sockets_of(self, subscriber: str) -> int:
        """How many sockets are open for ``subscriber`` (an owner and a standby: two)."""
        return len(self._conns.get(subscriber, ()))

    def keys_in_use(self) -> collections.Counter[str]:
        """How many open sockets logged in with each API key (``api_key`` may change while
        sockets stay open, as a rotated key does at the real PBX)."""
        return collections.Counter(
            ws.api_key  # type: ignore[attr-defined]
            for conns in self._conns.values()
            for ws in conns
        )

    async def _handle(self, ws: ServerConnection) -> None:
        subscriber: str = ws.subscriber  # type: ignore[attr-defined]
        async with self._changed:
            self._conns[subscriber].add(ws)
            self._changed.notify_all()
        if self._deaf & {None, subscriber}:
            ws.transport.pause_reading()
        log.debug("socket open", extra={"subscriber": subscriber})
        try:
            async for message in ws:
                await self._on_message(subscriber, ws, message)
        except ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self._conns[subscriber].discard(ws)
                self._changed.notify_all()
            log.debug("socket closed", extra={"subscriber": subscriber})

    async def _on_message(self, subscriber: str, ws: ServerConnection, message: Any) -> None:
        try:
            action: Any = orjson.loads(message)
        except orjson.JSONDecodeError:
            action = message
        self.actions.append((subscriber, action))
        answer = self.on_action(subscriber, action)
        if asyncio.iscoroutine(answer) or isinstance(answer, Awaitable):
            answer = await answer
        reply = answer if isinstance(answer, Reply) else Reply(answer)
        if reply.frame is None:
            return
        if reply.delay:
            task = asyncio.create_task(self._later(ws, reply))
            self._plays.add(task)
            task.add_done_callback(self._plays.discard)
        else:
            await _send_quietly(ws, _encode(reply.frame))

    async def _later(self, ws: ServerConnection, reply: Reply) -> None:
        await asyncio.sleep(reply.delay)
        assert reply.frame is not None
        await _send_quietly(ws, _encode(reply.frame))

    def connected(self, subscriber: str) -> bool:
        return bool(self._conns.get(subscriber))

    def connected_subscribers(self) -> set[str]:
        return {s for s, conns in self._conns.items() if conns}

    async def wait_connected(self, subscribers: Iterable[str], timeout: float = 10.0) -> None:
        """Wait until every one of ``subscribers`` has an open socket (TimeoutError)."""
        wanted = set(subscribers)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: wanted <= self.connected_subscribers())

    async def wait_disconnected(self, subscribers: Iterable[str], timeout: float = 10.0) -> None:
        """Wait until none of ``subscribers`` has an open socket (TimeoutError)."""
        wanted = set(subscribers)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: not wanted & self.connected_subscribers())

    # --- driving ----------------------------------------------------------------------
    async def send(
        self, subscriber: str, frame: Frame | str | bytes, *, text: bool | None = None
    ) -> int:
        """Deliver one frame (dict → JSON text, str → text, bytes → binary; ``text=True``
        sends bytes as a text frame unchecked, e.g. invalid UTF-8) to every open socket of
        ``subscriber``; returns how many got it (0: missed, like the real PBX)."""
        if isinstance(frame, dict):
            self.calls.record(frame)
        data = _encode(frame)
        conns = list(self._conns.get(subscriber, ()))
        delivered = 0
        for ws in conns:
            if await _send_quietly(ws, data, text=text):
                delivered += 1
        if self.record:
            (self.sent if delivered else self.missed).append((subscriber, data))
        self.frames_sent += delivered
        return delivered

    async def drop(self, subscriber: str | None = None, *, code: int | None = 1012) -> int:
        """Close ``subscriber``'s sockets (all when None): with ``code``, or abort the TCP
        connection without a close frame when ``code`` is None. Returns how many."""
        targets = [
            ws
            for s, conns in list(self._conns.items())
            if subscriber is None or s == subscriber
            for ws in list(conns)
        ]
        for ws in targets:
            if code is None:
                ws.transport.abort()
            else:
                await ws.close(code, "simulator drop")
        return len(targets)

    def deafen(self, subscriber: str | None = None) -> int:
        """Stop reading ``subscriber``'s sockets (everyone's when None), open or opened
        later, until :meth:`hear`: a stalled PBX, it answers no ping and no close frame (the
        producer's close waits out its ``close_timeout``). Returns how many went deaf."""
        self._deaf.add(subscriber)
        deaf = [ws for s, conns in self._conns.items() if subscriber in (None, s) for ws in conns]
        for ws in deaf:
            ws.transport.pause_reading()
        return len(deaf)

    def hear(self) -> None:
        """Undo :meth:`deafen` for every subscriber."""
        self._deaf.clear()
        for ws in [ws for conns in self._conns.values() for ws in conns]:
            if not ws.transport.is_closing():
                ws.transport.resume_reading()

    async def play(self, script: Script) -> None:
        """Send a script's frames at their offsets (scaled by ``time_scale``)."""
        start = time.monotonic()
        for at, subscriber, frame in script.sorted():
            wait = start + at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            frame = dict(frame)
            if isinstance(frame.get("serverTime"), int):
                frame["serverTime"] = int(time.time() * 1000)
            await self.send(subscriber, frame)

    def start_traffic(self, calls_per_second: float) -> None:
        """Generate calls for the known (or connected) subscribers at this average rate."""
        self.calls_per_second = calls_per_second
        if self._traffic is None:
            self._traffic = asyncio.create_task(self._generate(), name="simulator:traffic")

    async def stop_traffic(self) -> None:
        """Stop generating new calls (calls already playing finish)."""
        if self._traffic is not None:
            self._traffic.cancel()
            await asyncio.wait([self._traffic])
            self._traffic = None

    async def _generate(self) -> None:
        factory: CallFactory | None = None
        rng = CallFactory(["x"], seed=self.seed).rng
        while True:
            await asyncio.sleep(rng.expovariate(self.calls_per_second))
            subscribers = sorted(self.traffic_for or self.known or self.connected_subscribers())
            if not subscribers:
                continue
            if factory is None or factory.subscribers != subscribers:
                factory = CallFactory(
                    subscribers,
                    domain=self.domain,
                    seed=self.seed,
                    quirks=self.quirks,
                    time_scale=self.time_scale,
                )
            if len(self._plays) < 1000:  # bound concurrent calls
                task = asyncio.create_task(self.play(factory.make(int(time.time() * 1000))))
                self._plays.add(task)
                task.add_done_callback(self._plays.discard)


async def _send_quietly(ws: ServerConnection, data: str | bytes, text: bool | None = None) -> bool:
    try:
        await ws.send(data, text=text)
    except ConnectionClosed:
        return False
    return True
