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
import time
from functools import partial
from types import TracebackType

from producer import __version__
from producer.app.frames import Frames
from producer.app.gcpolicy import GcPolicy
from producer.app.loopwatch import watch_loop
from producer.app.settings import Settings
from producer.app.topology import topology
from producer.app.wiring import broker_link, shared_settings, socket_options, stop_link
from producer.broker import lenient_frames
from producer.broker.link import broker_user
from producer.broker.session import EachSession
from producer.click2call.service import Click2Call
from producer.core.errors import ConfigError
from producer.core.rules import mask_url
from producer.phonet import (
    ApiKey,
    HandshakeGate,
    SocketPool,
    StateHandler,
    SubscriberSocket,
)
from producer.phonet.settings import OPEN_TIMEOUT
from producer.publish.history import HistoryStream
from producer.publish.pipeline import Pipeline
from producer.publish.publisher import Publisher
from producer.publish.settings import PUBLISH_WINDOW
from producer.publish.spool import Spool
from producer.publish.spool_keeper import SpoolKeeper
from producer.replicas.coordinator import Coordinator
from producer.subscribers.service import RestService
from producer.telemetry.exposition import exposition
from producer.telemetry.metrics import Metrics
from producer.web.server import Health, OpsServer

log = logging.getLogger("producer")


class Producer:
    """One running service. Use ``async with Producer(settings) as p:`` or start/stop."""

    def __init__(
        self, settings: Settings, *, metrics: Metrics | None = None, manage_gc: bool = False
    ) -> None:
        self.settings = settings
        phonet, broker, publish = settings.phonet, settings.broker, settings.publish
        replicas, service = settings.replicas, settings.service
        self.topology = wanted = topology(settings)
        self.metrics = metrics or Metrics(per_subscriber=service.phonet_metrics_per_subscriber)
        self.spool: Spool | None = None
        if publish.phonet_spool_dir is not None:
            self.spool = Spool(
                publish.phonet_spool_dir,
                max_bytes=publish.phonet_spool_max_bytes,
                fsync=publish.phonet_spool_fsync,
                on_evict=self._spool_evicted,
            )
        self.pipeline = Pipeline(
            max_events=publish.phonet_buffer_size,
            max_bytes=publish.phonet_buffer_max_bytes,
            window=PUBLISH_WINDOW,
            journal=self.spool,
        )
        self.publisher = Publisher(
            self.pipeline,
            self.metrics,
            publish_timeout=publish.phonet_publish_timeout,
            exchange=wanted.events,
        )
        self.spool_keeper = (
            None
            if self.spool is None
            else SpoolKeeper(self.spool, self.pipeline, self.publisher, self.metrics)
        )
        self.broker = broker_link(broker, self.metrics, replicas.replica_id, quiet=False)
        self.broker.session_hooks.append(self.publisher)  # first: it declares the exchange
        # Commands have a connection of their own: nothing a command does (a frame the
        # client library cannot decode, a channel error) can interrupt event publishing.
        name = f"{replicas.replica_id} click2call"
        self.commands_link = broker_link(broker, self.metrics, name, quiet=True)
        self.socket_options = socket_options(phonet)
        self.api_key = ApiKey(
            phonet.api_key,
            phonet.phonet_api_key_file,
            base_url=phonet.socket_base_url,
            domain=phonet.phonet_domain,
        )
        self.gate = HandshakeGate(phonet.phonet_handshake_concurrency, phonet.phonet_handshake_rate)
        self.sockets = SocketPool(self._socket_for, self.metrics, on_state=self._socket_state)
        self.known: frozenset[str] = frozenset(settings.roster.subscribers)
        self.coordinator = Coordinator(
            replicas.replica_id,
            wanted.presence,
            hold=self._hold,
            publish=self.publisher.put,
            metrics=self.metrics.replicas,
            standby=replicas.phonet_standby == "hot",
            window=replicas.standby_window,
            # A standby window holds at most a quarter of the buffer's memory budget.
            window_bytes=publish.phonet_buffer_max_bytes // 4,
            grace=replicas.handover_grace,
            interval=replicas.phonet_presence_interval,
            timeout=replicas.presence_timeout,
            settings=shared_settings(settings),
            all_up=self.sockets.all_up,
            is_up=self._socket_up,
            on_roster_mismatch=lambda: self.rest.look_again(),
        )
        self.broker.session_hooks.append(EachSession(self.coordinator.presence.session))
        self.click2call = Click2Call(
            settings.click2call,
            self.sockets,
            self.publisher,
            self.metrics,
            self.coordinator,
            exchange=wanted.events.name,
            queue=wanted.commands,
            journal=wanted.journal,
            configured=lambda: self.known,
            user=broker_user(broker.amqp_url.get_secret_value()),
        )
        self.coordinator.busy = self.click2call.board.busy_on
        self.commands_link.session_hooks.append(EachSession(self.click2call.session))
        self.history: HistoryStream | None = None
        if wanted.history is not None:
            self.history = HistoryStream(wanted.history)
            self.broker.session_hooks.append(EachSession(self.history.session))
        self.rest = RestService(
            settings.roster,
            self.publisher,
            self.metrics.rest,
            self.api_key,
            self.set_subscribers,
            domain=phonet.phonet_domain,
            exchange=wanted.events.name,
            gap_after=phonet.phonet_ping_interval + phonet.ping_timeout,
        )
        self.frames = Frames(
            wanted.events.name,
            self.metrics,
            offer=self.click2call.offer,
            ended=self.rest.seen_end,
            publishes=self.coordinator.publishes,
            keep=self.coordinator.keep,
            publish=self.publisher.put,
            max_frame_bytes=phonet.phonet_max_frame_bytes,
        )
        self.http = OpsServer(
            service.metrics_host,
            service.metrics_port,
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
        self._safe_socket_url = mask_url(phonet.socket_base_url)

    # --- wiring -----------------------------------------------------------------------
    def _socket_for(self, subscriber: str, on_state: StateHandler) -> SubscriberSocket:
        return SubscriberSocket(
            subscriber,
            self.api_key,
            on_frame=self.frames.on_frame,
            on_too_large=self.frames.too_large,
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
            replica_id=self.settings.replicas.replica_id,
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
        phonet = self.settings.phonet
        if phonet.phonet_api_key_file is not None:
            follow = self.sockets.follow_key(
                self.api_key,
                interval=phonet.phonet_api_key_check_interval,
                at_once=max(1, phonet.phonet_handshake_concurrency // 5),
                timeout=OPEN_TIMEOUT + 5.0,
                busy=self.click2call.board.busy_on,
            )
            self._key_task = asyncio.create_task(follow, name="api-key")
        subscribers = self.settings.roster.subscribers
        self.known = frozenset(subscribers)
        self.coordinator.start(subscribers)
        self.rest.start()
        log.info(
            "producer started",
            extra={
                "version": __version__,
                "replica_id": self.settings.replicas.replica_id,
                "subscribers": len(subscribers),
                "exchange": self.topology.events.name,
                "amqp_url": self.settings.broker.safe_amqp_url,
                "metrics_port": self.http.port,
            },
        )

    async def stop(self) -> None:
        """Drain and stop; returns within about ``PHONET_SHUTDOWN_TIMEOUT`` + 2 seconds."""
        if self.shutting_down:
            return
        self.shutting_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.service.phonet_shutdown_timeout
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
            min(
                self.settings.replicas.handover_grace,
                self.settings.service.phonet_shutdown_timeout / 4,
            )
        )
        await self.coordinator.close()
        await self.click2call.stop(timeout=max(0.0, (deadline - loop.time()) / 2))
        await self.sockets.close(
            timeout=min(2.0, self.settings.service.phonet_shutdown_timeout / 4)
        )
        # A command still being acked is answered now that its socket is gone: its reply
        # joins what is flushed below.
        await self.click2call.settled(timeout=0.5)
        await self.click2call.close()
        await stop_link(self.commands_link, self._commands_task, 0.5)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                await self.publisher.wait_empty()
        # Bounded: the default 8 s budget + 1 s + the spool's 1 s stays under Kubernetes'
        # default 10 s grace period.
        await stop_link(self.broker, self._broker_task, 1.0)
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
