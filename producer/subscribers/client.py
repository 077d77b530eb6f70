"""The Phonet REST API over HTTP(S): a session cookie, one request at a time, metrics.

The thin adapter of :mod:`producer.subscribers`. Requests run in a worker thread with the
standard library's ``urllib`` (a handful of requests a minute do not justify another HTTP
dependency): ``POST rest/security/authorize`` with the domain and key gives a session
cookie; every later request carries it, and a 401/403 logs in again once. Each request is
counted in ``phonet_rest_requests_total{endpoint,result}``.

The API key travels only in the authorize request's body: it is never in a URL, a log
line, an exception or a metric. A request that does not finish within ``timeout`` seconds
fails with result ``timeout`` (its thread ends on its own socket timeout); cancellation of
the caller abandons the thread's result the same way.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from producer import __version__
from producer.core.errors import RestUnavailable
from producer.phonet.keys import ApiKey
from producer.telemetry.subscribers import RestMetrics

log = logging.getLogger("producer.subscribers")

MAX_BODY = 32 * 1024 * 1024
"""Largest answer read (a company's employee list or a page of calls is far smaller)."""


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes


class RestClient:
    """A session with ``base_url`` (``PHONET_REST_URL``), logging in with ``key``."""

    def __init__(
        self,
        base_url: str,
        domain: str,
        key: ApiKey,
        metrics: RestMetrics,
        *,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.domain = domain
        self.key = key
        self.metrics = metrics
        self.timeout = timeout
        self._jar = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPCookieProcessor(self._jar)]
        if tls is not None:
            handlers.append(urllib.request.HTTPSHandler(context=tls))
        self._opener = urllib.request.build_opener(*handlers)
        self._lock = asyncio.Lock()
        self._logged_in = False

    async def get(self, endpoint: str, path: str, query: dict[str, Any] | None = None) -> Any:
        """``GET path?query`` as JSON, logging in first when needed (and once more after a
        401/403). One request at a time.

        Raises:
            RestUnavailable: with ``result`` auth, http, timeout, network or bad_json.
        """
        url = f"{self.base_url}/{path.lstrip('/')}"
        if query:
            url += "?" + urlencode(query)
        async with self._lock:
            for attempt in (1, 2):
                if not self._logged_in:
                    await self._login()
                answer = await self._call(endpoint, "GET", url, None)
                if answer.status in (401, 403) and attempt == 1:
                    self._logged_in = False
                    continue
                return self._json(endpoint, answer)
        raise AssertionError("unreachable")

    async def _login(self) -> None:
        self._jar.clear()
        body = orjson.dumps({"domain": self.domain, "apiKey": self.key.key})
        url = f"{self.base_url}/rest/security/authorize"
        answer = await self._call("authorize", "POST", url, body)
        if answer.status in (401, 403):
            self._count("authorize", "auth")
            raise RestUnavailable("auth", f"REST login refused (HTTP {answer.status})")
        if not 200 <= answer.status < 300:
            self._count("authorize", "http")
            raise RestUnavailable("http", f"REST login failed (HTTP {answer.status})")
        self._count("authorize", "ok")
        self._logged_in = True

    def _json(self, endpoint: str, answer: _Answer) -> Any:
        if answer.status in (401, 403):
            self._count(endpoint, "auth")
            raise RestUnavailable("auth", f"REST {endpoint}: refused (HTTP {answer.status})")
        if not 200 <= answer.status < 300:
            self._count(endpoint, "http")
            raise RestUnavailable("http", f"REST {endpoint}: HTTP {answer.status}")
        try:
            data = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            self._count(endpoint, "bad_json")
            # A login page instead of JSON also lands here: log in again next time.
            self._logged_in = False
            raise RestUnavailable("bad_json", f"REST {endpoint}: the answer is not JSON") from None
        self._count(endpoint, "ok")
        return data

    async def _call(self, endpoint: str, method: str, url: str, body: bytes | None) -> _Answer:
        try:
            async with asyncio.timeout(self.timeout + 1.0):
                return await asyncio.to_thread(self._blocking, method, url, body)
        except TimeoutError:
            self._count(endpoint, "timeout")
            raise RestUnavailable("timeout", f"REST {endpoint}: no answer in time") from None
        except OSError as exc:
            timeout = isinstance(exc, TimeoutError) or "timed out" in str(exc)
            result = "timeout" if timeout else "network"
            self._count(endpoint, result)
            reason = exc.strerror or type(exc).__name__
            raise RestUnavailable(result, f"REST {endpoint}: {reason}") from None

    def _blocking(self, method: str, url: str, body: bytes | None) -> _Answer:
        """In a worker thread: one request, the status and at most MAX_BODY bytes."""
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", f"phonet-producer/{__version__}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return _Answer(response.status, response.read(MAX_BODY))
        except urllib.error.HTTPError as exc:
            with exc:
                return _Answer(exc.code, exc.read(MAX_BODY))
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, OSError):
                raise reason from None
            raise OSError(str(reason)[:100]) from None

    def _count(self, endpoint: str, result: str) -> None:
        self.metrics.requests[(endpoint, result)].inc()
