"""The adapters made from their settings groups (broker links, socket options), and what
replicas compare of the settings."""

from __future__ import annotations

import asyncio
import ssl

from producer.app.settings import Settings
from producer.broker.link import BrokerLink
from producer.broker.settings import BrokerSettings
from producer.core.pacing import Backoff
from producer.phonet import SocketOptions
from producer.phonet.settings import OPEN_TIMEOUT, PhonetSettings
from producer.replicas.membership import digest
from producer.telemetry.metrics import Metrics


def broker_link(
    settings: BrokerSettings, metrics: Metrics, name: str, *, quiet: bool
) -> BrokerLink:
    """A link to the broker, its session hooks still to add. ``quiet``: a second link to
    the same broker (its failures are the first link's news already)."""
    return BrokerLink(
        url=settings.amqp_url.get_secret_value(),
        tls=settings.amqp_tls(),
        metrics=metrics,
        connect_timeout=settings.amqp_connect_timeout,
        name=name,
        quiet=quiet,
        backoff=Backoff(
            min_delay=settings.amqp_reconnect_min_delay,
            max_delay=settings.amqp_reconnect_max_delay,
            initial=settings.amqp_reconnect_min_delay,
            healthy_after=5.0,
        ),
    )


def socket_options(settings: PhonetSettings) -> SocketOptions:
    return SocketOptions(
        open_timeout=OPEN_TIMEOUT,
        ping_interval=settings.phonet_ping_interval,
        ping_timeout=settings.ping_timeout,
        max_frame_bytes=settings.phonet_max_frame_bytes,
        reconnect_min=settings.phonet_reconnect_min_delay,
        reconnect_max=settings.phonet_reconnect_max_delay,
        healthy_after=settings.healthy_after,
        auth_retry_delay=settings.auth_retry_delay,
        # One context for every socket: a context each costs ~0.5 MB at 10,000 sockets.
        ssl=ssl.create_default_context() if settings.socket_base_url.startswith("wss:") else None,
    )


async def stop_link(link: BrokerLink, task: asyncio.Task[None] | None, timeout: float) -> None:
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
    return digest(
        [
            s.phonet.phonet_domain,
            s.publish.phonet_exchange,
            s.click2call.phonet_click2call_queue,
            s.replicas.phonet_standby,
        ]
    )
