"""The switchboard's vocabulary: what the adapter tells it and what it asks back. Pure.

:class:`Delivery` is a command message as the adapter read it (after the journal found
nothing against dialing it, and the adapter's claim of it stands first); the
:data:`Effect`\\ s are what :class:`~producer.click2call.switchboard.Switchboard` asks the
adapter (:mod:`producer.click2call.service`) to do: write an action on a socket
(:class:`SendAction`), answer a command — publish its reply, then settle its message
(:class:`Answer`) — or settle a message without an answer (:class:`SettleMessage`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

from producer.click2call.commands import Command
from producer.core.errors import CommandError


class Settle(Enum):
    """What to do with a command's queue message."""

    ACK = "ack"
    REJECT = "reject"  # never requeued: dead-lettered when the queue has a DLX
    REQUEUE = "requeue"  # shutting down before its turn: back to the queue, undialed
    ABANDON = "abandon"  # its channel is gone: nothing to do, the broker redelivers it


@dataclass(frozen=True)
class Delivery:
    """A command message as the adapter read it. ``key`` is the adapter's handle for the
    message; ``fresh_until`` is the clock value after which it is stale. ``command`` is
    None when ``error`` says why."""

    key: Hashable
    session: int
    command: Command | None
    error: CommandError | None
    fresh_until: float


@dataclass(frozen=True)
class SettleMessage:
    key: Hashable
    how: Settle


@dataclass(frozen=True)
class SendAction:
    """Write ``action`` on ``subscriber``'s socket, if it is still connection ``conn``;
    report :meth:`~producer.click2call.switchboard.Switchboard.sent`."""

    key: Hashable
    subscriber: str
    conn: int
    action: str


@dataclass(frozen=True)
class Answer:
    """Publish the command's reply (``outcome`` None is success; ``pbx_message`` the PBX's
    own text for a refusal), then settle its message ``settle``. ``dialed``: the PBX may
    have been asked (a retry then gets this answer again instead of a second dial)."""

    key: Hashable
    outcome: CommandError | None
    settle: Settle
    dialed: bool
    pbx_message: str | None = None


Effect = SettleMessage | SendAction | Answer
