"""RabbitMQ adapter: one connection, kept open with backoff, that runs its session hooks.

:class:`BrokerLink` connects (``aio_pika.connect``), opens every
:class:`~producer.broker.session.SessionHook` in order (the event publisher first: it
opens its confirm channel and declares the events exchange), counts itself up, then runs
the hooks' work until the connection or a channel dies, and tells each hook the session
ended and whether the broker *refused* something sent (so the pipeline can find a poison
message among those in flight: it rewinds everything unconfirmed and sends it again on the
next connection — duplicates possible, same ``message_id``; losses not). We manage
reconnection ourselves rather than using ``connect_robust`` so that what happens to
in-flight publishes across a reconnect is explicit and tested.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

from producer import __version__
from producer.broker.session import Session, SessionHook, SessionLost, refusal
from producer.core.errors import BrokerUnavailable
from producer.core.pacing import Backoff
from producer.core.rules import mask_url
from producer.telemetry.logs import BurstLog, safe_error
from producer.telemetry.metrics import Metrics

log = logging.getLogger("producer.broker.link")

_TRANSIENT = (
    OSError,
    TimeoutError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
)


SLOW_RETRY = 30.0
"""Seconds between attempts after a configuration error (credentials, virtual host): the
broker will not change its mind quickly, and hammering it fills its log."""


@dataclass(frozen=True)
class ConnectProblem:
    """Why a broker connection could not be opened, in words an operator can act on."""

    kind: str  # refused, dns, timeout, tls, auth, vhost, other
    what: str
    check: str
    config_error: bool = False


def connect_problem(exc: BaseException) -> ConnectProblem:
    """Tell the usual reasons apart (pure: looks only at the exception)."""
    from aiormq.exceptions import InvalidFrameError, ProbableAuthenticationError

    if isinstance(exc, ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
        return ConnectProblem(
            "auth",
            "the broker refused the user name or password",
            "the credentials in AMQP_URL (a configuration error: retrying slowly)",
            True,
        )
    if isinstance(exc, InvalidFrameError) and "Connection.Close" in str(exc):
        return ConnectProblem(
            "vhost",
            "the broker refused to open the virtual host",
            "that the vhost in AMQP_URL exists and the user may use it (a configuration"
            " error: retrying slowly)",
            True,
        )
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return ConnectProblem("tls", "the TLS handshake failed", "amqps:// settings and the CA")
    if isinstance(exc, TimeoutError):
        return ConnectProblem(
            "timeout",
            "no answer within AMQP_CONNECT_TIMEOUT",
            "the host and port in AMQP_URL, and any firewall in between",
        )
    code = getattr(exc, "errno", None)
    if isinstance(exc, socket.gaierror) or code in _DNS_ERRORS:
        return ConnectProblem("dns", "the host name does not resolve", "the host in AMQP_URL (DNS)")
    if code == errno.ECONNREFUSED:
        return ConnectProblem(
            "refused",
            "nothing accepts connections there",
            "that RabbitMQ runs and the host and port in AMQP_URL",
        )
    return ConnectProblem("other", safe_error(exc), "the broker's log and AMQP_URL")


_DNS_ERRORS = {socket.EAI_NONAME, socket.EAI_AGAIN, getattr(socket, "EAI_NODATA", -5)}


def broker_user(url: str) -> str | None:
    """The user the producer logs in as (the first URL's; every node of a cluster takes
    the same), or None when the URL asks for EXTERNAL (certificate) authentication."""
    parts = urlsplit(url.split(",")[0].strip())
    if "auth=external" in parts.query.lower():
        return None
    return unquote(parts.username) if parts.username else "guest"


def describe_target(url: str) -> str:
    """``host:port, vhost V, user U`` from an AMQP URL (never the password)."""
    parts = urlsplit(url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return f"{parts.hostname}:{port}, vhost {vhost!r}, user {parts.username or 'guest'!r}"


async def open_connection(
    url: str, *, timeout: float, name: str, tls: ssl.SSLContext | None = None
) -> AbstractConnection:
    """``aio_pika.connect`` with a connection name shown in the RabbitMQ UI; ``tls`` is the
    context for an ``amqps://`` URL (None: the system's CAs, or the URL's ``cafile``,
    ``certfile``, ``keyfile`` query)."""
    return await aio_pika.connect(
        url,
        timeout=timeout,
        ssl_context=tls,
        client_properties={"connection_name": name, "product": f"phonet-producer {__version__}"},
    )


async def check_broker(
    url: str, safe_url: str, timeout: float = 5.0, tls: ssl.SSLContext | None = None
) -> None:
    """Open and close one connection. Raises BrokerUnavailable (with the masked URL)."""
    try:
        connection = await open_connection(
            url, timeout=timeout, name="phonet-producer check", tls=tls
        )
    except (*_TRANSIENT, ValueError) as exc:
        raise BrokerUnavailable(f"cannot reach RabbitMQ at {safe_url}: {safe_error(exc)}") from None
    await connection.close()


class BrokerLink:
    """Keeps one broker connection alive and runs its session hooks on it.

    The producer runs two: one publishes events (the publisher, the replicas' presence),
    the other carries click2call (its commands, journal and replies), so nothing a command
    does can interrupt event publishing. :meth:`run` returns only after :meth:`stop`;
    connection failures are retried with :class:`~producer.core.pacing.Backoff`. Cancelling
    :meth:`run` closes the connection.
    """

    def __init__(
        self,
        *,
        url: str,
        metrics: Metrics,
        connect_timeout: float = 10.0,
        name: str = "",
        backoff: Backoff | None = None,
        tls: ssl.SSLContext | None = None,
        quiet: bool = False,
    ) -> None:
        # Several URLs (the nodes of a cluster): start at a random one, so replicas spread,
        # and move to the next whenever a connection fails or a session is lost.
        self._urls = [u.strip() for u in url.split(",") if u.strip()]
        random.shuffle(self._urls)
        self._index = 0
        self._tls = tls
        self.name = f"phonet-producer@{name or socket.gethostname()}"
        self.safe_urls = [mask_url(u) for u in self._urls]
        self.metrics = metrics
        self.connect_timeout = connect_timeout
        self._backoff = backoff or Backoff(min_delay=0.5, max_delay=15.0, initial=0.5)
        self.session_hooks: list[SessionHook] = []
        self.connection: AbstractConnection | None = None
        self._failing: str | None = None  # the kind of the current burst of failures
        self._retry_log = BurstLog(log, interval=60.0)
        self.quiet = quiet
        """A second link to the same broker: its connect failures are the first link's
        news already (logged at DEBUG, not counted twice)."""
        self._stopping = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None
        self._up = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while a session is up (every hook opened, their work running)."""
        return self._up.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected; False after ``timeout`` seconds. Cancellation propagates."""
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Ask :meth:`run` to close the connection and return."""
        self._stopping.set()

    @property
    def _url(self) -> str:
        return self._urls[self._index]

    @property
    def safe_url(self) -> str:
        """The current node's URL, password masked."""
        return self.safe_urls[self._index]

    def _next_node(self) -> bool:
        """Move to the next URL; True when a whole round was tried (time to back off)."""
        self._index = (self._index + 1) % len(self._urls)
        return self._index == 0

    async def run(self) -> None:
        """Connect, run sessions, reconnect with backoff, until :meth:`stop`; then close
        the connection and return. With several URLs, a failed connection moves to the
        next node (backing off once a whole round failed); a lost session retries its node
        first.
        Cancellation closes the connection and propagates."""
        loop = asyncio.get_running_loop()
        first = True
        while not self._stopping.is_set():
            if not first and not self.quiet:
                self.metrics.amqp_reconnects.inc()
            first = False
            try:
                connection = await open_connection(
                    self._url, timeout=self.connect_timeout, name=self.name, tls=self._tls
                )
            except asyncio.CancelledError:
                raise
            except (*_TRANSIENT, ValueError) as exc:
                delay = self._connect_failed(exc)
                if self._next_node():  # a whole round failed (or one URL): back off
                    await self._sleep(delay)
                continue
            self._failing = None
            started = loop.time()
            refused = other_node = False
            try:
                await self._session(connection)
            except asyncio.CancelledError:
                raise
            except SessionLost as exc:
                refused, other_node = exc.refused, exc.other_node
                if not self._stopping.is_set():
                    log.warning("broker session lost: %s", exc)
            except Exception as exc:  # keep publishing whatever the library throws
                refused = refusal(exc)
                log.warning("broker session failed: %s", safe_error(exc))
            finally:
                await self._end_session(connection, refused=refused)
            self._backoff.session_ended(loop.time() - started)
            # A lost session retries the same node first: it was good a moment ago —
            # unless the node itself was the trouble.
            if other_node:
                self._next_node()
            if not self._stopping.is_set():
                await self._sleep(self._backoff.next_delay())

    def _connect_failed(self, exc: BaseException) -> float:
        """Count and explain a failed attempt; returns how long to wait. The first failure
        of a kind says what was tried and what to check; repeats are one line a minute."""
        problem = connect_problem(exc)
        delay = self._backoff.next_delay()
        if problem.config_error:
            delay = max(delay, SLOW_RETRY)
        extra = {"amqp_url": self.safe_url, "reason": problem.kind}
        if self.quiet:
            log.debug("%s: cannot connect (%s)", self.name, problem.what, extra=extra)
            return delay
        self.metrics.amqp_connect_failures.labels(problem.kind).inc()
        if problem.kind != self._failing:
            self._failing = problem.kind
            log.error(
                "cannot connect to RabbitMQ at %s (%s): %s; check %s. Retrying in %.1fs",
                self.safe_url,
                describe_target(self._url),
                problem.what,
                problem.check,
                delay,
                extra=extra,
            )
        else:
            self._retry_log(
                logging.WARNING,
                "still cannot connect to RabbitMQ (%s); retrying in %.1fs",
                problem.what,
                delay,
                extra=extra,
            )
        return delay

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        except TimeoutError:
            pass

    async def _session(self, connection: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()
        self._lost = lost
        session = Session(connection, lost)
        connection.close_callbacks.add(session.on_close)
        works = []
        try:
            for hook in self.session_hooks:
                works.append((await hook.open(session), hook.name))
        except BaseException:
            for work, _ in works:  # opened, never started: close the coroutines
                if asyncio.iscoroutine(work):
                    work.close()
            raise
        self.connection = connection
        self._up.set()
        if not self.quiet:  # the event link's metrics (the readiness signal)
            self.metrics.amqp_connected.set(1)
            self.metrics.amqp_connects.inc()
        log.info("broker connected", extra={"amqp_url": self.safe_url, "link": self.name})
        workers = [
            loop.create_task(_guard(work, lost, what), name=f"amqp:{what}") for work, what in works
        ]
        stop: asyncio.Future[Any] = loop.create_task(self._stopping.wait())
        try:
            await asyncio.wait((lost, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*workers, stop):
                task.cancel()
            await asyncio.wait([*workers, stop])
        if lost.done():
            lost.result()  # raises SessionLost

    async def _end_session(self, connection: AbstractConnection, *, refused: bool) -> None:
        lost, self._lost = self._lost, None
        if lost is not None and not lost.done():
            lost.cancel()
        self._up.clear()
        if not self.quiet:
            self.metrics.amqp_connected.set(0)
        self.connection = None
        for hook in self.session_hooks:
            await hook.closed(refused=refused)
        try:
            async with asyncio.timeout(2):
                await connection.close()
        except Exception:  # already dead; nothing more to do
            pass


async def _guard(work: Awaitable[None], lost: asyncio.Future[None], what: str) -> None:
    """Run one session worker; its end (return or error) ends the session."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except SessionLost as exc:
        if not lost.done():
            lost.set_exception(exc)
    except Exception as exc:
        log.exception("%s failed", what)
        if not lost.done():
            lost.set_exception(SessionLost(f"{what} failed: {safe_error(exc)}"))
    else:
        if not lost.done():
            lost.set_exception(SessionLost(f"{what} ended"))
