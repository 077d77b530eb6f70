"""A small asyncio TCP proxy that tests put between the producer and RabbitMQ (or the
simulator) to cut, stall and restore the link without touching the server.

* :meth:`TcpProxy.cut` aborts every connection and stops listening (new connections are
  refused, like a broker that went away);
* :meth:`TcpProxy.stall` keeps connections open but forwards nothing (a black hole:
  only heartbeats or timeouts can notice);
* :meth:`TcpProxy.restore` listens again on the same port and resumes forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl


class TcpProxy:
    """``tls``: terminate TLS on the listening side (a TLS front for a plain broker)."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.tls = tls
        self.host = host
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        await self._listen()
        return self

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock, ssl=self.tls)

    def url(self, scheme_url: str) -> str:
        """``scheme_url`` (e.g. an AMQP URL) with its host:port replaced by the proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(scheme_url)
        netloc = parts.netloc.rsplit("@", 1)
        where = f"{self.host}:{self.port}"
        new = f"{netloc[0]}@{where}" if len(netloc) == 2 else where
        return urlunsplit((parts.scheme, new, parts.path, parts.query, parts.fragment))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            self._tasks.difference_update(pumps)
            self._links.discard(link)
            for w in link:
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        """Abort every connection and refuse new ones until :meth:`restore`."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            for w in link:
                w.transport.abort()
        await asyncio.sleep(0)

    def stall(self) -> None:
        """Keep connections open but forward nothing."""
        self._flowing.clear()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        self._flowing.set()
