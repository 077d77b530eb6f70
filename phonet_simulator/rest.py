"""The simulated PBX's REST API: login cookie, employees, call history, calls in progress.

Served from the simulator's own call log, so a test can drop a socket, place calls while
it is down, and see the producer read them back. Shapes follow ``phonet-rest-api.md``:

* ``POST /rest/security/authorize`` ``{"domain", "apiKey"}`` → 200 + ``JSESSIONID`` cookie;
* ``GET /rest/users`` → ``[{"id", "displayName", "ext", "email"}]``;
* ``GET /rest/calls/company.api?timeFrom&timeTo&limit&offset`` → finished calls whose
  ``endAt`` (ms) is in the window, newest first, ``limit`` 1–50 (else 400);
* ``GET /rest/calls/active/v3`` → calls in progress.

Without a valid session cookie: 401. ``fault`` makes the data endpoints misbehave
(``"500"``, ``"bad_json"``, ``"timeout"``, ``"empty"``, ``"401"``) for fault tests;
``history_delay`` makes a finished call appear in history only that many seconds later;
``CallLog.odd_rows`` are served as they are at the head of every history answer, whatever
the window (rows of any shape, for tests of hostile answers).
A tiny HTTP/1.1 server: one request per connection, bounded head and body.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


def to_millis(value: object) -> int | None:
    """A timestamp of a frame this simulator sent, in milliseconds: the vendor's sample
    sends seconds (below 10^12) or milliseconds, as a number or a string of digits. Written
    here, not taken from the producer, so that a mistake in the producer's reading is not
    mirrored by the fake it is tested against."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return round(value * 1000 if value < 10**12 else value)


MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
MAX_HISTORY = 100_000


def staff_of(subscribers: Iterable[str]) -> list[dict[str, Any]]:
    """An employee per subscriber, sorted: extensions keep their number, e-mails get one
    from 900."""
    rows = []
    for n, subscriber in enumerate(sorted(subscribers), start=1):
        email = "@" in subscriber
        rows.append(
            {
                "id": n,
                "displayName": f"Agent {subscriber}",
                "ext": str(900 + n) if email else subscriber,
                "email": subscriber if email else f"agent{subscriber}@example.com",
            }
        )
    return rows


class CallLog:
    """Calls as the PBX remembers them, from the frames it sends."""

    def __init__(self) -> None:
        self.history_delay = 0.0
        self.finished: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.active: dict[str, dict[str, Any]] = {}
        self.odd_rows: list[Any] = []
        """Served first in every history answer, unchecked (hostile shapes for tests)."""

    def record(self, frame: dict[str, Any]) -> None:
        uuid, event = frame.get("uuid"), frame.get("event")
        if not isinstance(uuid, str) or event not in ("call.dial", "call.bridge", "call.hangup"):
            return
        dial = to_millis(frame.get("dialAt"))
        bridge = to_millis(frame.get("bridgeAt"))
        other = (frame.get("otherLegs") or [{}])[0] or {}
        if event != "call.hangup":
            self.active[uuid] = {
                "uuid": uuid,
                "parentUuid": frame.get("parentUuid"),
                "lastEvent": event,
                "dialAt": dial // 1000 if dial else None,
                "bridgeAt": bridge // 1000 if bridge else None,
                "lgDirection": frame.get("lgDirection"),
                "leg": frame.get("leg"),
                "leg2": frame.get("leg2"),
                "otherLegs": frame.get("otherLegs") or [],
                "trunkNum": frame.get("trunkNum"),
                "trunkName": frame.get("trunkName"),
            }
            return
        self.active.pop(uuid, None)
        end = to_millis(frame.get("serverTime")) or int(time.time() * 1000)
        self.finished[uuid] = (
            time.monotonic() + self.history_delay,
            {
                "uuid": uuid,
                "parentUuid": frame.get("parentUuid"),
                "endAt": end,
                "lgDirection": frame.get("lgDirection"),
                "otherLegNum": other.get("num"),
                "otherLegName": other.get("name"),
                "leg": frame.get("leg"),
                "leg2": frame.get("leg2"),
                "billSecs": max(0, (end - bridge) // 1000) if bridge else 0,
                "duration": max(0, (end - dial) // 1000) if dial else 0,
                "disposition": 0 if bridge else 1,
                "transferHistory": None,
                "audioRecUrl": None,
                "trunk": frame.get("trunkNum"),
            },
        )
        self.finished.move_to_end(uuid)
        while len(self.finished) > MAX_HISTORY:
            self.finished.popitem(last=False)

    def history(self, time_from: int, time_to: int) -> list[dict[str, Any]]:
        now = time.monotonic()
        rows = [
            record
            for available, record in self.finished.values()
            if available <= now and time_from <= record["endAt"] <= time_to
        ]
        return self.odd_rows + sorted(rows, key=lambda r: r["endAt"], reverse=True)


class RestServer:
    """Serves the REST API for a simulator (``domain``, ``api_key()``, ``employees()``)."""

    def __init__(
        self,
        *,
        domain: str,
        api_key: Callable[[], str],
        employees: Callable[[], list[dict[str, Any]]],
        calls: CallLog,
        host: str = "127.0.0.1",
    ) -> None:
        self.domain = domain
        self.api_key = api_key
        self.employees = employees
        self.calls = calls
        self.host = host
        self.port = 0
        self.fault: str | None = None
        self.sessions: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        """``(method, path)`` of every request, for tests."""
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def expire_sessions(self) -> None:
        """Forget every session (the next request answers 401, as after a PBX restart)."""
        self.sessions.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(60):
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEAD:
                    raise ValueError("head too large")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
                body = await reader.readexactly(length) if length else b""
                status, extra, payload = await self._route(method, target, headers, body)
                data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                out = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
                out += [*extra, f"Content-Length: {len(data)}", "Connection: close", "", ""]
                writer.write("\r\n".join(out).encode() + data)
                await writer.drain()
        except (ValueError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[str], Any]:
        parts = urlsplit(target)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.requests.append((method, path))
        if path == "/rest/security/authorize" and method == "POST":
            try:
                login = orjson.loads(body)
            except orjson.JSONDecodeError:
                return 400, [], {"error": "bad json"}
            if not isinstance(login, dict) or (login.get("domain"), login.get("apiKey")) != (
                self.domain,
                self.api_key(),
            ):
                return 401, [], {"error": "unauthorized"}
            session = secrets.token_hex(16)
            self.sessions.add(session)
            return 200, [f"Set-Cookie: JSESSIONID={session}; Path=/; HttpOnly"], {"ok": True}
        cookie = headers.get("cookie", "")
        session = cookie.partition("JSESSIONID=")[2].split(";")[0]
        if method != "GET" or session not in self.sessions:
            return 401, [], {"error": "unauthorized"}
        if self.fault == "401":
            return 401, [], {"error": "unauthorized"}
        if self.fault == "500":
            return 500, [], {"error": "internal"}
        if self.fault == "timeout":
            await asyncio.sleep(30)
        if self.fault == "bad_json":
            return 200, [], b"<html>login</html>"
        empty = self.fault == "empty"
        if path == "/rest/users":
            return 200, [], [] if empty else self.employees()
        if path == "/rest/calls/active/v3":
            return 200, [], [] if empty else list(self.calls.active.values())
        if path == "/rest/calls/company.api":
            try:
                low, high = int(query["timeFrom"]), int(query["timeTo"])
                limit, offset = int(query.get("limit", 50)), int(query.get("offset", 0))
            except (KeyError, ValueError):
                return 400, [], {"error": "timeFrom, timeTo required"}
            if not 1 <= limit <= 50 or offset < 0:
                return 400, [], {"error": "limit 1..50"}
            rows = [] if empty else self.calls.history(low, high)
            return 200, [], rows[offset : offset + limit]
        return 404, [], {"error": "not found"}
