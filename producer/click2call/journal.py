"""What the replicas remember of click2call commands: the journal's state. Pure.

Every replica writes to one RabbitMQ stream, the *journal* (the adapter is
:mod:`producer.click2call.journal_link`), and reads all of it, in the stream's one order:

* ``claim(identity, owner, token)`` — *owner* (a replica instance) is answering one
  delivery of the command (and will dial it if it is fresh); ``token`` names that claim.
  Written and confirmed, and read back, **before** anything is answered or dialed;
* ``release(identity, token)`` — that claim answered and dialed nothing (the message was
  given back, or the broker link went first);
* ``reply(identity, remembered, concludes, reply id)`` — the reply was published: the
  journal's copy *is* the reply (one publish routed to the caller and to the journal), so
  "replied" in the journal means "the caller was sent this". ``concludes`` are the claims
  it settles (its own, and those of gone replicas it answered for);
* ``settled(identity, reply id)`` — the message that reply answered is surely settled
  (acked or rejected, and a round trip on its channel came back after that): it will not
  be delivered again;
* ``orphaned(identity, reply id)`` — that message could not be settled (its channel was
  gone): the broker delivers it again, and that redelivery is to be settled silently;
* ``dispatch(identity, dispatch id, holder claim, the command)`` — a replica that got a
  command for a subscriber it does not own holds the message and hands the command to the
  owner through the journal (nothing goes back to the queue: a quorum queue would count
  it, and may hand it back to the same replicas again and again). The owner answers it —
  its reply names the dispatch, and the holder settles the message once it reads that
  reply. The holder's claim is *transparent* to the owner: it stands for the dispatch.

:meth:`Journal.decide` turns that into what to do with a delivered command:

============ ============================================================================
``FRESH``     nothing stands against dialing it (it may still be refused by the rules)
``SILENT``    a redelivery of a command whose answered delivery could not be settled
              (its channel was gone, or its replica is gone): this is that delivery
              again; settle it, no second reply
``REPEAT``    a caller's retry of a command already dialed: the remembered reply again,
              no second dial (every earlier answer is known settled, so this delivery is
              another send — also when a replica gave it back to the queue on its way)
``WAIT``      a live replica (this one included) has claimed it and not answered yet, or
              (for a redelivery) answered it and not yet settled it: wait
``UNKNOWN``   only replicas that are gone claimed it, and never answered: it may have
              been dialed, so it is not dialed again; answered "outcome unknown"
============ ============================================================================

Every delivery that is to be answered (or dialed) is claimed first, and :meth:`Journal.leads`
settles the race between two deliveries of one command — a redelivery while the first is
still being answered, a caller's retry that arrived before the first send was answered, two
replicas that both think they own a subscriber (a takeover in progress, a partition): each
claims, reads the journal up to its claim, and only the first live claim in the stream's
order goes on; the other releases its claim and asks the journal again (it then waits for
that answer, or repeats it). The leader decides once more, holding its claim
(``holder=``): claims of gone replicas before it make it answer "outcome unknown".

Without a ``message_id`` a command has no identity of its own across sends: a repeat of
the same body is a new command (judged afresh), and only redeliveries are recognised.
Memory is bounded by age (``horizon``) and count: about 900 bytes per command remembered,
kept ``horizon`` (10 minutes) and at most 100,000 — per command, not per subscriber.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from producer.click2call.effects import Settle

Owner = tuple[str, str]
"""A replica instance: ``(replica id, instance)``; a restarted process is a new instance."""

HORIZON = 600.0
"""Seconds a command is remembered: a retry later than this is a new command."""
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Remembered:
    """A reply as the journal holds it: its body (sent again to a retry), its ``result``
    label, whether the PBX may have been asked (``dialed``), and how its message was
    settled (a redelivery is settled the same way)."""

    body: bytes
    result: str
    dialed: bool
    settle: Settle


class Verdict(Enum):
    FRESH = "fresh"
    SILENT = "silent"
    REPEAT = "repeat"
    WAIT = "wait"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    remembered: Remembered | None = None
    owner: Owner | None = None
    """For ``WAIT``: the replica whose claim stands."""
    reply_id: str = ""
    """For ``SILENT``: the answered delivery this one is taken to be (now settled)."""
    gone: tuple[str, ...] = ()
    """For ``UNKNOWN``: the tokens of the gone replicas' claims (the answer concludes them)."""


FRESH = Decision(Verdict.FRESH)


@dataclass(frozen=True, slots=True)
class Claim:
    owner: Owner
    token: str


class Fate(Enum):
    """What became of the message a reply answered."""

    PENDING = "pending"  # not known yet (the replica is settling it)
    SETTLED = "settled"  # acked or rejected for sure: it will not come again
    ORPHANED = "orphaned"  # could not be settled: it comes again, redelivered


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A command handed to its subscriber's owner by the replica holding its message."""

    id: str
    identity: str
    subscriber: str
    holder: Claim
    body: bytes
    properties: dict[str, Any]
    """The command's properties, as the holder read them (``reply_to``, ``correlation_id``,
    ``message_id``, ``user_id``, ``app_id``, ``timestamp``)."""
    at: float


@dataclass(slots=True)
class Entry:
    open: list[Claim] = field(default_factory=list)
    """Claims not yet released or concluded by a reply, in the stream's order."""
    reply: Remembered | None = None
    at: float = 0.0
    replies: dict[str, tuple[Owner, Fate]] = field(default_factory=dict)
    """Every reply published for it (by id): who published it, and its message's fate."""
    holding: set[str] = field(default_factory=set)
    """Claims that handed the command over (a dispatch): they never dial it themselves."""


class Journal:
    """The state read from the journal so far. ``alive(owner)`` tells whether a replica
    instance is live (this one, or heard in its heartbeats)."""

    def __init__(self, *, horizon: float = HORIZON, max_entries: int = MAX_ENTRIES) -> None:
        self.horizon = horizon
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._dispatches: dict[str, Dispatch] = {}
        self._answered: OrderedDict[str, str] = OrderedDict()  # dispatch id -> reply id

    def __len__(self) -> int:
        return len(self._entries)

    # --- what the stream says ---------------------------------------------------------
    def claimed(self, identity: str, owner: Owner, token: str, now: float) -> None:
        entry = self._entry(identity, now)
        if all(c.token != token for c in entry.open):
            entry.open.append(Claim(owner, token))

    def released(self, identity: str, token: str) -> None:
        entry = self._entries.get(identity)
        if entry is not None:
            entry.open = [c for c in entry.open if c.token != token]
            self._void_dispatches(identity, (token,))

    def replied(
        self,
        identity: str,
        remembered: Remembered,
        concludes: tuple[str, ...],
        now: float,
        reply_id: str = "",
        owner: Owner = ("", ""),
        dispatch: str = "",
    ) -> None:
        """A reply; ``owner`` is the replica that settles its message (the publisher, or
        the holder of a dispatched command), ``dispatch`` the dispatch it answers."""
        if dispatch:
            self._dispatches.pop(dispatch, None)
            self._answered[dispatch] = reply_id
            while len(self._answered) > self.max_entries:
                self._answered.popitem(last=False)
        entry = self._entry(identity, now)
        entry.reply = remembered
        if reply_id and len(entry.replies) < 64:
            entry.replies.setdefault(reply_id, (owner, Fate.PENDING))
        if concludes:
            entry.open = [c for c in entry.open if c.token not in concludes]
            self._void_dispatches(identity, concludes)

    def settled(self, identity: str, reply_id: str) -> None:
        self._fate(identity, reply_id, Fate.SETTLED)

    def orphaned(self, identity: str, reply_id: str) -> None:
        self._fate(identity, reply_id, Fate.ORPHANED)

    def _fate(self, identity: str, reply_id: str, fate: Fate) -> None:
        entry = self._entries.get(identity)
        if entry is not None and reply_id in entry.replies:
            owner, was = entry.replies[reply_id]
            if was is not Fate.SETTLED:  # settled is final (a silent redelivery took it)
                entry.replies[reply_id] = (owner, fate)

    def dispatched(self, dispatch: Dispatch, now: float) -> None:
        entry = self._entry(dispatch.identity, now)
        entry.holding.add(dispatch.holder.token)
        if dispatch.id not in self._answered and dispatch.holder in entry.open:
            self._dispatches[dispatch.id] = dispatch

    def _void_dispatches(self, identity: str, tokens: tuple[str, ...]) -> None:
        """A holder's claim released or concluded: its dispatch is no longer to be dialed
        (its message went back to the queue, or the command is answered)."""
        for key in [
            k
            for k, d in self._dispatches.items()
            if d.identity == identity and d.holder.token in tokens
        ]:
            del self._dispatches[key]

    def open_dispatches(self) -> list[Dispatch]:
        """Dispatches nobody has answered yet, oldest first."""
        return sorted(self._dispatches.values(), key=lambda d: d.at)

    def dispatch_open(self, dispatch: str) -> bool:
        """Whether ``dispatch`` still waits for its owner (not answered, not voided)."""
        return dispatch in self._dispatches

    def answer_to(self, dispatch: str) -> str | None:
        """The id of the reply that answered ``dispatch``, once read."""
        return self._answered.get(dispatch)

    def expire(self, now: float) -> None:
        """Forget what is older than the horizon (called now and then)."""
        for key in [k for k, d in self._dispatches.items() if now - d.at > self.horizon]:
            del self._dispatches[key]
        while self._entries:
            identity, entry = next(iter(self._entries.items()))
            if now - entry.at <= self.horizon:
                return
            del self._entries[identity]

    # --- what to do -------------------------------------------------------------------
    def decide(
        self,
        identity: str,
        *,
        redelivered: bool,
        has_id: bool,
        alive: Callable[[Owner], bool],
        holder: str | None = None,
        transparent: frozenset[str] = frozenset(),
    ) -> Decision:
        """What to do with a delivered command (see the module docstring). ``has_id``:
        the command carries a ``message_id`` (only then is a repeat a retry).
        ``holder``: the token of the caller's claim, when it leads (:meth:`leads`): live
        claims behind it are ignored (they back off), gone ones make it ``UNKNOWN``.
        ``transparent``: claims that do not count (a dispatch's holder, for its owner)."""
        entry = self._entries.get(identity)
        if entry is None:
            return FRESH
        others = [c for c in entry.open if c.token != holder and c.token not in transparent]
        live = [c for c in others if alive(c.owner)]
        # A gone replica's claim may have dialed — unless it only handed the command over.
        gone = tuple(c.token for c in others if not alive(c.owner) and c.token not in entry.holding)
        if holder is None and live:
            return Decision(Verdict.WAIT, owner=live[0].owner)
        if gone:
            return Decision(Verdict.UNKNOWN, gone=gone)
        reply = entry.reply
        if reply is None:
            return FRESH  # claimed and released: never dialed
        if redelivered:
            # The broker sets the redelivered flag on an answered message whose settlement
            # was lost — and also on another send of the command that a replica gave back
            # on its way, or that waited in a session that broke: only the answered
            # message's fate tells them apart.
            orphans = sorted(
                rid
                for rid, (owner, fate) in entry.replies.items()
                if fate is Fate.ORPHANED or (fate is Fate.PENDING and not alive(owner))
            )
            if orphans:
                return Decision(Verdict.SILENT, reply, reply_id=orphans[0])
            pending = [o for o, fate in entry.replies.values() if fate is Fate.PENDING]
            if pending:
                return Decision(Verdict.WAIT, owner=pending[0])
        if reply.dialed and has_id:
            return Decision(Verdict.REPEAT, reply)
        return FRESH  # refused before dialing, or no id of its own: judged afresh

    def leads(
        self,
        identity: str,
        token: str,
        alive: Callable[[Owner], bool],
        transparent: frozenset[str] = frozenset(),
    ) -> bool:
        """Read after claiming ``identity`` with ``token``: True when that claim is the
        first one of a live replica (claims of gone replicas, and ``transparent`` ones,
        do not count)."""
        entry = self._entries.get(identity)
        if entry is None:
            return False
        first = next(
            (
                c
                for c in entry.open
                if c.token == token or (c.token not in transparent and alive(c.owner))
            ),
            None,
        )
        return first is not None and first.token == token

    def claims(self, identity: str) -> list[Claim]:
        """The open claims of ``identity``, in the stream's order."""
        entry = self._entries.get(identity)
        return list(entry.open) if entry is not None else []

    def is_open(self, identity: str, token: str) -> bool:
        """Whether the claim ``token`` is neither released nor concluded."""
        entry = self._entries.get(identity)
        return entry is not None and any(c.token == token for c in entry.open)

    def has_reply(self, identity: str, reply_id: str) -> bool:
        """Whether the reply ``reply_id`` was read back (it reached the broker)."""
        entry = self._entries.get(identity)
        return entry is not None and reply_id in entry.replies

    def reply_of(self, identity: str) -> Remembered | None:
        entry = self._entries.get(identity)
        return None if entry is None else entry.reply

    # --- internals --------------------------------------------------------------------
    def _entry(self, identity: str, now: float) -> Entry:
        entry = self._entries.get(identity)
        if entry is None:
            entry = self._entries[identity] = Entry(at=now)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            entry.at = now
            self._entries.move_to_end(identity)
        return entry
