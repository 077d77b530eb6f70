"""One broker session and the users that run on it.

A :class:`~producer.broker.link.BrokerLink` knows its users only as :class:`SessionHook`\\ s
(as aio-pika's robust connection knows its users only through callbacks): on every new
connection it opens each hook in the order they were added — a hook prepares what it needs
(a channel, its topology) and returns the work that runs for the session — and when the
session ends it tells each hook whether the broker *refused* something sent (so the event
pipeline can look for a poison message). The event publisher, the replicas' presence, the
history stream and the click2call consumer are hooks; the link imports none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiormq
from aio_pika.abc import AbstractConnection

from producer.telemetry.logs import safe_error


class SessionLost(Exception):
    """The connection or a channel closed, or confirmations stalled.

    ``refused``: the broker closed it with an error reply (access refused, not found,
    precondition failed, a frame error): a message in flight may be the cause.
    ``other_node``: this node is the trouble (it nacked every publish for a while): the
    next session should try the next URL of the list first.
    """

    def __init__(self, message: str, *, refused: bool = False, other_node: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.other_node = other_node


REFUSALS = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelNotFoundEntity,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ConnectionFrameError,
    aiormq.exceptions.ConnectionSyntaxError,
    aiormq.exceptions.ConnectionCommandInvalid,
    aiormq.exceptions.ConnectionUnexpectedFrame,
    aiormq.exceptions.ConnectionNotImplemented,
)


def refusal(exc: BaseException | None) -> bool:
    """Whether the broker closed the channel or connection because of something we sent."""
    return isinstance(exc, REFUSALS)


@dataclass(frozen=True)
class Session:
    """One live connection and the future that ends its session.

    ``lost`` gets a :class:`SessionLost` when the connection or any channel registered
    with :meth:`on_close` closes; a hook may also set it (a stalled confirm)."""

    connection: AbstractConnection
    lost: asyncio.Future[None]

    def on_close(self, _sender: object, exc: BaseException | None = None) -> None:
        """A close callback for the connection and for channels whose end ends the
        session (aio-pika's ``close_callbacks``)."""
        if not self.lost.done():
            reason = safe_error(exc) if exc else "by peer"
            self.lost.set_exception(SessionLost(f"closed: {reason}", refused=refusal(exc)))


class SessionHook(Protocol):
    """A user of a link's connection, one session at a time; ``name`` says which in logs
    and task names."""

    @property
    def name(self) -> str: ...

    async def open(self, session: Session) -> Awaitable[None]:
        """Prepare on the new connection, before the link counts as up (an error here ends
        the session), and return the work that runs while it lasts: its return or error
        ends the session too. The work is cancelled when the session ends."""
        ...

    async def closed(self, *, refused: bool) -> None:
        """The session ended (``refused``: the broker closed it over something sent)."""
        ...


@dataclass(frozen=True)
class EachSession:
    """A hook that is only work: ``work(connection)`` runs for every session."""

    work: Callable[[AbstractConnection], Awaitable[None]]
    name: str = "consumer"
    """How logs and task names call it."""

    async def open(self, session: Session) -> Awaitable[None]:
        return self.work(session.connection)

    async def closed(self, *, refused: bool) -> None:
        return None
