"""The WebSocket connection class every subscriber socket uses: websockets' client
connection plus the message kinds, handshake trimming and cycle breaking that thousands of
sockets need.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from producer.telemetry.logs import ScrubFilter

log = logging.getLogger("producer.phonet")

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
        self.kinds: list[bool] = []  # a handful at most; a deque costs 600 bytes per socket
        self.on_fallback: Callable[[], None] | None = None

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.kinds.append(event.opcode is Opcode.TEXT)
        super().process_event(event)

    async def recv_frame(self) -> tuple[bytes, bool]:
        """The next message as ``(bytes, is_text)``. Raises ConnectionClosed at the end."""
        data = await self.recv(decode=False)
        if self.kinds:
            return data, self.kinds.pop(0)
        return data, self._guess(data)

    def release(self) -> None:
        """Once closed (the transport is aborted first if the connection is not lost yet),
        break the cycle websockets' protocol object forms with the error that ended its
        frame parser (the error's traceback holds the parser's frame, which holds the
        protocol), so a dead connection is freed at once by reference counting instead of
        waiting for a full garbage collection (see :mod:`producer.app.gcpolicy`).

        The parser is closed only after the transport reported the loss: asyncio calls
        ``connection_lost`` a loop iteration after an abort, and websockets then feeds the
        end of the stream to the parser — a closed generator there raised StopIteration
        in asyncio's callback (an ERROR traceback per socket when a shutdown cancelled a
        close the PBX did not answer). Until then the waiter's callback holds the
        connection; it runs right after ``connection_lost``.
        websockets internals: should they change, the collector reclaims it later."""
        lost = self.connection_lost_waiter
        if lost.done():
            self._break_cycles()
            return
        transport = self.transport
        if transport is not None:
            # Cancelled mid close handshake: the socket must not stay open without a
            # reader (asyncio would then fail on every byte that arrives); a transport
            # already closing gracefully may wait for a peer that reads nothing.
            transport.abort()
        lost.add_done_callback(self._break_cycles)

    def _break_cycles(self, _lost: object = None) -> None:
        with contextlib.suppress(Exception):
            exc = self.protocol.parser_exc
            if exc is not None:
                exc.__traceback__ = None
                self.protocol.parser_exc = None
            self.protocol.parser.close()
        # asyncio's own transport (not uvloop's) keeps a bound method of itself: a cycle.
        with contextlib.suppress(Exception):
            if getattr(self.transport, "_read_ready_cb", None) is not None:
                self.transport._read_ready_cb = None  # type: ignore[attr-defined]

    def forget_handshake(self) -> None:
        """Drop the opening handshake's headers (~3 KB a socket, never read again once
        open). The response object itself stays: websockets takes ``response is None`` to
        mean the handshake is still running."""
        self.request = None
        if self.response is not None:
            self.response = dataclasses.replace(self.response, headers=Headers())

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


async def abort_connection(ws: ClientConnection) -> None:
    """Close after a failure, without waiting long for a dead peer."""
    try:
        async with asyncio.timeout(1):
            await ws.close()
    except (TimeoutError, ConnectionClosed, OSError):
        ws.transport.abort()
