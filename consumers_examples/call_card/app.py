#!/usr/bin/env python3
"""The CRM pop-up: a live card per call in the browser, with a "call back" button.

    python consumers_examples/call_card/app.py [--subscriber 001] [--port 8080]
    # then open http://127.0.0.1:8080/

It binds its own exclusive queue to every call event on the events exchange (one
employee's with ``--subscriber``: the toolkit's ``binding_key``), pushes each event to every
open page over a WebSocket, and turns the page's "call back" clicks into click2call commands
through the toolkit's client (``phonet_client.Click2Call``), sending the answer back to the
page.

One small program on the toolkit and websockets, which also serves the static files.
Settings: ``AMQP_URL``, ``PHONET_EXCHANGE``, ``PHONET_CLICK2CALL_QUEUE`` or the matching
options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from phonet_client import Click2Call, Click2CallError, binding_key

STATIC = Path(__file__).resolve().parent / "static"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


def to_page(message: AbstractIncomingMessage) -> str:
    """What the page gets for one event: the producer's headers and the Phonet body."""
    headers = {k: v for k, v in message.headers.items() if isinstance(v, str | int | float)}
    try:
        body = json.loads(message.body)
    except ValueError:
        body = None
    return json.dumps(
        {"type": "event", "routing_key": message.routing_key, "headers": headers, "body": body},
        ensure_ascii=False,
    )


class CallCard:
    """The web app. :meth:`start` connects and listens; :meth:`close` stops everything."""

    def __init__(
        self,
        amqp_url: str,
        exchange: str,
        commands: str,
        *,
        subscriber: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        timeout: float = 15.0,
    ) -> None:
        self.amqp_url, self.exchange, self.commands = amqp_url, exchange, commands
        self.subscriber, self.host, self.port, self.timeout = subscriber, host, port, timeout
        self.pages: set[ServerConnection] = set()
        self._server: Server | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self.connection.channel()
        events = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(events, binding_key("call.*", self.subscriber))
        await queue.consume(self._on_event, no_ack=True)
        self.client = Click2Call(self.connection, self.commands)
        self._server = await serve(self._page, self.host, self.port, process_request=self._http)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.connection.close()

    # --- HTTP and WebSocket ------------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None  # upgrade to a WebSocket
        if path not in FILES:
            return connection.respond(404, "not found\n")
        name, content_type = FILES[path]
        body = (STATIC / name).read_bytes()
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ]
        )
        return Response(200, "OK", headers, body)

    async def _page(self, ws: ServerConnection) -> None:
        self.pages.add(ws)
        try:
            async for text in ws:
                request = json.loads(text)
                if request.get("type") == "callback":
                    task = asyncio.ensure_future(self._call_back(ws, request))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except (ConnectionClosed, ValueError):
            pass
        finally:
            self.pages.discard(ws)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        text = to_page(message)
        for ws in list(self.pages):
            try:
                await ws.send(text)
            except ConnectionClosed:
                self.pages.discard(ws)

    # --- click2call -------------------------------------------------------------------
    async def _call_back(self, ws: ServerConnection, request: dict[str, Any]) -> None:
        ref = str(request.get("ref", ""))
        try:
            reply = await self.click2call(str(request["subscriber"]), str(request["to"]))
        except KeyError:
            reply = {"event": "error", "message": "bad request"}
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"type": "callback-result", "ref": ref, "reply": reply}))

    async def click2call(self, subscriber: str, to: str) -> dict[str, Any]:
        """Place one call through phonet-producer: the answer as the page reads it."""
        try:
            answer = await self.client.call(
                subscriber, to, timeout=self.timeout, command_id="call-card"
            )
        except Click2CallError as exc:
            return {"event": "error", "message": str(exc), "result": exc.result}
        return {"event": "success", "subscriber": answer.subscriber, "to": answer.to}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriber", help="show only this employee's calls")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument("--exchange", default=os.environ.get("PHONET_EXCHANGE", "phonet.events"))
    parser.add_argument(
        "--queue", default=os.environ.get("PHONET_CLICK2CALL_QUEUE", "phonet.click2call")
    )
    args = parser.parse_args(argv)

    async def run() -> None:
        app = CallCard(
            args.amqp_url,
            args.exchange,
            args.queue,
            subscriber=args.subscriber,
            host=args.host,
            port=args.port,
        )
        await app.start()
        print(f"call card on http://{args.host}:{app.port}/", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await app.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
