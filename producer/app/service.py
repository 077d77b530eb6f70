"""The producer: wires sockets → parse → publish pipeline → broker, plus the ops server.

:class:`Producer` owns one :class:`~producer.phonet.SocketPool`, one
:class:`~producer.publish.publisher.Publisher` (with its pure
:class:`~producer.publish.pipeline.Pipeline` and optional spool) and one
:class:`~producer.broker.link.BrokerLink`. Each frame is parsed
(:mod:`producer.core.events`), wrapped (:mod:`producer.core.envelope`) and put in the
pipeline in the socket's task, synchronously: no queue between reading and buffering, so
order per socket is preserved and a frame is buffered before the next one is read.

The click2call service (:mod:`producer.click2call`) runs as a broker session hook, sees
each frame first (to take the PBX's answers to its commands) and each socket's state.
Beside them run the replica coordinator (:mod:`producer.replicas`), the REST backfill
(:mod:`producer.subscribers`), the spool's keeper (:mod:`producer.publish.spool_keeper`), the
API key file's watcher (:meth:`~producer.phonet.SocketPool.follow_key`) and the loop's
watch (:mod:`producer.app.loopwatch`: lag, and in the service the garbage collector).

Shutdown (:meth:`Producer.stop`, also on SIGTERM/SIGINT via :func:`serve`): readiness goes
503, the click2call consumer stops (commands in progress finish), sockets close with 1001,
what was received is flushed to the broker for up to ``PHONET_SHUTDOWN_TIMEOUT`` seconds, then the
broker connection and HTTP server close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from functools import partial
from types import TracebackType

from producer import __version__
from producer.app.gcpolicy import GcPolicy
from producer.app.loopwatch import watch_loop
from producer.app.settings import Settings
from producer.broker import lenient_frames
from producer.broker.link import BrokerLink, broker_user
from producer.click2call.service import Click2Call
from producer.core.envelope import Envelope, event_envelope
from producer.core.errors import ConfigError
from producer.core.events import CallEvent, InvalidReason, metric_event, parse_frame
from producer.core.pacing import Backoff
from producer.core.rules import mask_url
from producer.phonet import (
    ApiKey,
    HandshakeGate,
    SocketOptions,
    SocketPool,
    StateHandler,
    SubscriberSocket,
)
from producer.publish.history import HistoryStream
from producer.publish.pipeline import Pipeline
from producer.publish.publisher import Publisher
from producer.publish.spool import Spool
from producer.publish.spool_keeper import SpoolKeeper
from producer.replicas.coordinator import Coordinator
from producer.replicas.membership import digest
from producer.subscribers.service import RestService
from producer.telemetry.exposition import exposition
from producer.telemetry.logs import BurstLog, trimmed
from producer.telemetry.metrics import Metrics
from producer.web.server import Health, OpsServer

log = logging.getLogger("producer")


class Producer:
    """One running service. Use ``async with Producer(settings) as p:`` or start/stop."""

    def __init__(
        self, settings: Settings, *, metrics: Metrics | None = None, manage_gc: bool = False
    ) -> None:
        self.settings = s = settings
        self.metrics = metrics or Metrics(per_subscriber=s.phonet_metrics_per_subscriber)
        self.spool: Spool | None = None
        if s.phonet_spool_dir is not None:
            self.spool = Spool(
                s.phonet_spool_dir,
                max_bytes=s.phonet_spool_max_bytes,
                fsync=s.phonet_spool_fsync,
                on_evict=self._spool_evicted,
            )
        self.pipeline = Pipeline(
            max_events=s.phonet_buffer_size,
            max_bytes=s.phonet_buffer_max_bytes,
            window=s.phonet_publish_window,
            journal=self.spool,
        )
        self.publisher = Publisher(
            self.pipeline, self.metrics, publish_timeout=s.phonet_publish_timeout
        )
        self.spool_keeper = (
            None
            if self.spool is None
            else SpoolKeeper(self.spool, self.pipeline, self.publisher, self.metrics)
        )
        self.broker = self._link(self.publisher, s.replica_id, quiet=False)
        # Commands have a connection of their own: nothing a command does (a frame the
        # client library cannot decode, a channel error) can interrupt event publishing.
        self.commands_link = self._link(None, f"{s.replica_id} click2call", quiet=True)
        self.socket_options = SocketOptions(
            open_timeout=s.phonet_open_timeout,
            ping_interval=s.phonet_ping_interval,
            ping_timeout=s.phonet_ping_timeout,
            max_frame_bytes=s.phonet_max_frame_bytes,
            reconnect_min=s.phonet_reconnect_min_delay,
            reconnect_max=s.phonet_reconnect_max_delay,
            healthy_after=s.phonet_healthy_after,
            auth_retry_delay=s.phonet_auth_retry_delay,
            # One context for every socket: a context each costs ~0.5 MB at 10,000 sockets.
            ssl=ssl.create_default_context() if s.socket_base_url.startswith("wss:") else None,
        )
        self.api_key = ApiKey(
            s.api_key,
            s.phonet_api_key_file,
            base_url=s.socket_base_url,
            domain=s.phonet_domain,
        )
        self.gate = HandshakeGate(s.phonet_handshake_concurrency, s.phonet_handshake_rate)
        self.sockets = SocketPool(self._socket_for, self.metrics, on_state=self._socket_state)
        self.known: frozenset[str] = frozenset(s.subscribers)
        self.coordinator = Coordinator(
            s.replica_id,
            s.phonet_exchange,
            hold=self._hold,
            publish=self.publisher.put,
            metrics=self.metrics.replicas,
            standby=s.phonet_standby == "hot",
            window=s.phonet_standby_window,
            # A standby window holds at most a quarter of the buffer's memory budget.
            window_bytes=s.phonet_buffer_max_bytes // 4,
            grace=s.phonet_handover_grace,
            interval=s.phonet_presence_interval,
            timeout=s.phonet_presence_timeout,
            settings=shared_settings(s),
            all_up=self.sockets.all_up,
            is_up=self._socket_up,
            on_roster_mismatch=lambda: self.rest.look_again(),
        )
        self.broker.session_hooks.append(self.coordinator.presence.session)
        self.click2call = Click2Call(
            s,
            self.sockets,
            self.publisher,
            self.metrics,
            self.coordinator,
            configured=lambda: self.known,
            user=broker_user(s.amqp_url.get_secret_value()),
        )
        self.coordinator.busy = self.click2call.board.busy_on
        self.commands_link.session_hooks.append(self.click2call.session)
        self.history: HistoryStream | None = None
        if s.phonet_history_stream:
            self.history = HistoryStream(
                s.phonet_history_stream,
                s.phonet_exchange,
                s.phonet_history_max_age,
                s.phonet_history_max_bytes,
            )
            self.broker.session_hooks.append(self.history.session)
        self.rest = RestService(
            s, self.publisher, self.metrics.rest, self.api_key, self.set_subscribers
        )
        self.http = OpsServer(
            s.metrics_host,
            s.metrics_port,
            self.health,
            partial(exposition, self.metrics),
        )
        self._lag_task: asyncio.Task[None] | None = None
        self._key_task: asyncio.Task[None] | None = None
        # The collector's view of the heap is the process's: only the service manages it.
        self.gc_policy = GcPolicy() if manage_gc else None
        self.shutting_down = False
        self._broker_task: asyncio.Task[None] | None = None
        self._commands_task: asyncio.Task[None] | None = None
        self._invalid_log = BurstLog(log)
        self._safe_socket_url = mask_url(s.socket_base_url)

    # --- wiring -----------------------------------------------------------------------
    def _link(self, publisher: Publisher | None, name: str, *, quiet: bool) -> BrokerLink:
        s = self.settings
        return BrokerLink(
            url=s.amqp_url.get_secret_value(),
            tls=s.amqp_tls(),
            exchange=s.phonet_exchange,
            publisher=publisher,
            metrics=self.metrics,
            connect_timeout=s.amqp_connect_timeout,
            name=name,
            quiet=quiet,
            backoff=Backoff(
                min_delay=s.amqp_reconnect_min_delay,
                max_delay=s.amqp_reconnect_max_delay,
                initial=s.amqp_reconnect_min_delay,
                healthy_after=5.0,
            ),
        )

    def _socket_for(self, subscriber: str, on_state: StateHandler) -> SubscriberSocket:
        return SubscriberSocket(
            subscriber,
            self.api_key,
            on_frame=self.on_frame,
            on_too_large=self._too_large,
            metrics=self.metrics,
            options=self.socket_options,
            safe_url=self._safe_socket_url,
            gate=self.gate,
            on_state=on_state,
        )

    def _socket_up(self, subscriber: str) -> bool:
        sock = self.sockets.get(subscriber)
        return sock is not None and sock.connected

    def _socket_state(self, subscriber: str, connection: int, up: bool) -> None:
        if self.gc_policy is not None:
            self.gc_policy.socket_changed(asyncio.get_running_loop().time(), closed=not up)
        self.click2call.socket_state(subscriber, connection, up)
        sock = self.sockets.get(subscriber)
        code = sock.last_close if sock is not None else None
        wall_ms = time.time_ns() // 1_000_000
        # An owner's socket down: its standby covers for it (told in the heartbeat).
        self.coordinator.socket_state(
            subscriber, up, wall_ms if up else self.rest.book.last_good(wall_ms, code)
        )
        # Gaps are the publishing replica's to report: a standby's reconnect is no gap in
        # the published stream.
        self.rest.socket_state(subscriber, up, code, self.coordinator.publishes(subscriber))

    async def set_subscribers(self, wanted: tuple[str, ...]) -> None:
        """The configured subscribers are now ``wanted``; this replica holds its share of
        them (all of them when it runs alone). Click2call's "unknown subscriber" follows."""
        self.known = frozenset(wanted)
        self.click2call.policy.rate.forget(wanted)
        await self.coordinator.set_universe(wanted)

    async def _hold(self, order: list[str]) -> None:
        """Hold exactly these sockets, opened in this order: new ones open, removed ones
        close cleanly (what they already delivered is still published)."""
        wanted = set(order)
        before = set(self.sockets.subscribers)
        await self.sockets.update(order)
        for subscriber in before - wanted:
            self.rest.removed(subscriber)
            self.coordinator.window.forget(subscriber)
        for subscriber in order:
            if subscriber not in before:
                self.rest.added(subscriber)

    def on_frame(
        self, subscriber: str, connection: int, payload: bytes, is_text: bool, received: float
    ) -> None:
        """Parse one frame and buffer its envelope. Never raises for any payload."""
        parsed = parse_frame(payload, is_text=is_text)
        if isinstance(parsed, CallEvent):
            if self.click2call.offer(subscriber, connection, parsed):
                return  # the PBX's answer to a click2call command, not a call event
            if parsed.event == "call.hangup" and parsed.uuid is not None:
                self.rest.seen_end(subscriber, parsed.uuid)  # backfill must not repeat it
            self.metrics.received[metric_event(parsed.event)].inc()
        else:
            self.metrics.received["invalid"].inc()
        envelope = event_envelope(
            self.settings.phonet_exchange,
            subscriber,
            parsed,
            payload,
            received=received,
            wall_ms=time.time_ns() // 1_000_000,
        )
        if not self.coordinator.publishes(subscriber):
            self.coordinator.keep(subscriber, envelope)  # standing by: held, unpublished
            return
        if envelope.kind == "invalid":
            self._invalid(subscriber, envelope, payload)
        self.publisher.put(envelope)

    def _invalid(self, subscriber: str, envelope: Envelope, payload: bytes) -> None:
        reason = envelope.headers["invalid_reason"]
        self.metrics.events_invalid.labels(reason).inc()
        self._invalid_log(
            logging.WARNING,
            "invalid frame (%s: %s), published as %s: %s",
            reason,
            envelope.headers["invalid_detail"],
            envelope.routing_key,
            trimmed(payload),
            extra={"subscriber": subscriber},
        )

    def _too_large(self, subscriber: str) -> None:
        self.metrics.events_invalid.labels(InvalidReason.TOO_LARGE.value).inc()
        log.warning(
            "frame larger than PHONET_MAX_FRAME_BYTES=%d; socket closed, frame not kept",
            self.settings.phonet_max_frame_bytes,
            extra={"subscriber": subscriber},
        )

    def _spool_evicted(self, first: int, last: int) -> None:
        self.publisher.drop_range(first, last, "spool_full")

    def health(self) -> Health:
        return Health(
            amqp_connected=self.broker.connected,
            sockets_up=self.sockets.connected_count,
            sockets_total=len(self.sockets),
            shutting_down=self.shutting_down,
            buffered=len(self.pipeline),
            amqp_blocked=self.pipeline.blocked,
            spool_degraded=self.spool is not None and self.spool.degraded,
            version=__version__,
            replica_id=self.settings.replica_id,
            amqp_node=self.broker.safe_url if self.broker.connected else "",
            rest=self.rest.status(),
            click2call=self.click2call.status(),
            history=None if self.history is None else self.history.status(),
            replicas={
                "replicas_seen": 1
                + len(self.coordinator.membership.heard_any(asyncio.get_running_loop().time())),
                "owned": len(self.coordinator.roles.owned),
                "standby": len(self.coordinator.roles.standby),
                "handing_over": self.coordinator.handing_over,
            },
        )

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the spool, listen for ops HTTP, start the broker link and the sockets.

        Raises:
            ConfigError: the ops HTTP port cannot be bound.
            SpoolError: the spool directory cannot be used (another producer holds it).
        """
        try:
            await self.http.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(
                f"METRICS_PORT: cannot listen on {self.http.host}:{self.http.port}: {reason}"
            ) from None
        if self.spool_keeper is not None:
            self.spool_keeper.start()
        if not lenient_frames.install():
            self.metrics.fallbacks["pamqp_header"].inc()
            log.warning(
                "pamqp internals changed: a click2call command whose properties cannot be"
                " decoded closes the command connection (event publishing is not affected)"
            )
        self._broker_task = asyncio.create_task(self.broker.run(), name="amqp")
        self._commands_task = asyncio.create_task(self.commands_link.run(), name="amqp:commands")
        self._lag_task = asyncio.create_task(
            watch_loop(self.metrics.loop_lag.observe, self.gc_policy, lambda: len(self.sockets)),
            name="loop-lag",
        )
        if self.settings.phonet_api_key_file is not None:
            s = self.settings
            follow = self.sockets.follow_key(
                self.api_key,
                interval=s.phonet_api_key_check_interval,
                at_once=max(1, s.phonet_handshake_concurrency // 5),
                timeout=s.phonet_open_timeout + 5.0,
                busy=self.click2call.board.busy_on,
            )
            self._key_task = asyncio.create_task(follow, name="api-key")
        self.known = frozenset(self.settings.subscribers)
        self.coordinator.start(self.settings.subscribers)
        self.rest.start()
        log.info(
            "producer started",
            extra={
                "version": __version__,
                "replica_id": self.settings.replica_id,
                "subscribers": len(self.settings.subscribers),
                "exchange": self.settings.phonet_exchange,
                "amqp_url": self.settings.safe_amqp_url,
                "metrics_port": self.http.port,
            },
        )

    async def stop(self) -> None:
        """Drain and stop; returns within about ``PHONET_SHUTDOWN_TIMEOUT`` + 2 seconds."""
        if self.shutting_down:
            return
        self.shutting_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.phonet_shutdown_timeout
        log.info("shutting down", extra={"buffered": len(self.pipeline)})
        # Commands in progress need their socket: let them finish (bounded) first.
        if self._key_task is not None:
            self._key_task.cancel()
            await asyncio.wait([self._key_task])
        await self.rest.close()
        # Several replicas: take no new command (this one is about to own nothing), hand
        # over (the others take over while this one still reads), then finish commands.
        await self.click2call.stop_taking()
        await self.coordinator.leave(
            min(self.settings.phonet_handover_grace, self.settings.phonet_shutdown_timeout / 4)
        )
        await self.coordinator.close()
        await self.click2call.stop(timeout=max(0.0, (deadline - loop.time()) / 2))
        await self.sockets.close(timeout=min(2.0, self.settings.phonet_shutdown_timeout / 4))
        # A command still being acked is answered now that its socket is gone: its reply
        # joins what is flushed below.
        await self.click2call.settled(timeout=0.5)
        await self.click2call.close()
        await _stop_link(self.commands_link, self._commands_task, 0.5)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                await self.publisher.wait_empty()
        # Bounded: the default 8 s budget + 1 s + the spool's 1 s stays under Kubernetes'
        # default 10 s grace period.
        await _stop_link(self.broker, self._broker_task, 1.0)
        left = len(self.pipeline)
        await self.http.close()
        if self._lag_task is not None:
            self._lag_task.cancel()
            await asyncio.wait([self._lag_task])
        lost = left
        if self.spool_keeper is not None:
            lost = await self.spool_keeper.close()
        if left - lost:
            log.warning(
                "shutdown: %d unconfirmed events stay in the spool for the next start",
                left - lost,
            )
        if lost:
            self.metrics.events_dropped.labels("shutdown").inc(lost)
            log.error(
                "shutdown: %d events could not be confirmed by the broker%s",
                lost,
                "" if self.spool is None else " and were in memory only (the spool disk failed)",
            )
        log.info("stopped", extra={"unconfirmed": left})

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _stop_link(link: BrokerLink, task: asyncio.Task[None] | None, timeout: float) -> None:
    """Ask ``link`` to close; cancel it after ``timeout`` seconds."""
    link.stop()
    if task is None:
        return
    try:
        async with asyncio.timeout(timeout):
            await task
    except TimeoutError:
        task.cancel()
        await asyncio.wait([task])


def shared_settings(s: Settings) -> str:
    """The digest of what replicas must agree on to share the work (else each acts alone):
    the PBX domain, the exchange, the command queue and the standby mode."""
    return digest([s.phonet_domain, s.phonet_exchange, s.phonet_click2call_queue, s.phonet_standby])


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
