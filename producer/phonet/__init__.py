"""Phonet sockets: one reconnecting WebSocket per subscriber, kept in a :class:`SocketPool`.

This is the thin I/O adapter. It reads frames and hands each one, with its opcode and
receive time, to a ``FrameHandler``; parsing and routing happen elsewhere (pure modules).
Reconnect delays come from :class:`producer.core.pacing.Backoff`. Its loop follows the shape of
``async for ws in websockets.connect(...)``, but resets the backoff only after a connection
stayed up ``healthy_after`` seconds, and treats HTTP 401/403 as an authentication failure
that is retried slowly. A dropped socket reconnects at once; what keeps ten thousand of
them from hitting the PBX together is the :class:`HandshakeGate` they share, which bounds
handshakes in progress and their rate.

Built for thousands of sockets in one process: one SSL context shared by all, no
per-socket metric objects (counts are plain attributes read at scrape time), and per-socket
log lines only at DEBUG — drops and failures are logged at most once per 10 s, with a count.

The socket URL carries the API key. It is passed to websockets and nowhere else: logs name
the subscriber and the masked base URL, exceptions are logged by type and status only.

Modules: :mod:`.connection` (the websockets connection subclass, behind its one seam),
:mod:`.gate` (options and the handshake gate), :mod:`.keys` (the API key and its
rotation), :mod:`.socket` (one subscriber's loop), :mod:`.pool` (the set of them).
"""

from producer.phonet.connection import PhonetConnection
from producer.phonet.keys import ApiKey
from producer.phonet.options import HandshakeGate, SocketOptions
from producer.phonet.pool import SocketPool
from producer.phonet.socket import (
    FrameHandler,
    SocketStats,
    StateHandler,
    SubscriberSocket,
    TooLargeHandler,
)

__all__ = [
    "ApiKey",
    "FrameHandler",
    "HandshakeGate",
    "PhonetConnection",
    "SocketOptions",
    "SocketPool",
    "SocketStats",
    "StateHandler",
    "SubscriberSocket",
    "TooLargeHandler",
]
