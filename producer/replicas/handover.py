"""Subscribers a replica still holds after its role for them moved on. Pure: clocks passed in.

When the roles change, a replica that owned a subscriber *hands it over*: it keeps its
socket and keeps publishing until the new owner is warm (its owned sockets up, with the
same view of who is live and of the list), at least ``grace`` seconds and at most
:data:`HANDOVER_CAP` more — so the new owner's socket is up before the old one closes:
duplicates, never a gap. A replica that stood by for a subscriber and no longer does
*steps down* on the same terms, keeping its socket and its window unpublished: should the
old owner die before the handover ends, the window and the socket are there to cover for
the new owner. A subscriber this replica owns again ends its handover at once, and one
it stands by for again ends its stepping down; but a subscriber it handed over and now
stands by for is still published until the new owner is warm (the new owner's socket may
not be open yet: ending there would leave nobody publishing it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

HANDOVER_CAP = 120.0
"""Seconds a handover waits beyond the grace for the new owner to say it is warm."""


@dataclass
class Handovers:
    """``handing``: subscriber → (held at least until, the new owner), still published;
    ``stepping``: the same for former standby subscribers, kept unpublished."""

    grace: float
    handing: dict[str, tuple[float, str]] = field(default_factory=dict)
    stepping: dict[str, tuple[float, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.handing) + len(self.stepping)

    def start(
        self,
        handed: Iterable[str],
        stepped: Iterable[str],
        now: float,
        new_owner: Callable[[str], str],
    ) -> None:
        for held, subscribers in ((self.handing, handed), (self.stepping, stepped)):
            for subscriber in subscribers:
                held[subscriber] = (now + self.grace, new_owner(subscriber))

    def end(
        self,
        now: float,
        owned: Callable[[str], bool],
        has_role: Callable[[str], bool],
        warm: Callable[[str], bool],
        busy: Callable[[str], bool] = lambda _subscriber: False,
    ) -> bool:
        """End the handovers that are over; True when any ended (the sockets to hold
        changed). A handing one ends when ``owned`` again, a stepping one when it
        ``has_role`` again (owned or standby); neither while ``busy`` (a click2call
        command waits for the PBX's answer on that socket), up to the cap."""
        ended = False
        for held, back in ((self.handing, owned), (self.stepping, has_role)):
            done = [
                s
                for s, (until, owner) in held.items()
                if back(s)
                or (now >= until and warm(owner) and not busy(s))
                or now >= until + HANDOVER_CAP
            ]
            for subscriber in done:
                del held[subscriber]
            ended = ended or bool(done)
        return ended

    def owners(self) -> set[str]:
        """The new owners still awaited."""
        return {owner for _, owner in (*self.handing.values(), *self.stepping.values())}

    def held(self) -> list[str]:
        """Every subscriber still held for a handover, handing first."""
        return [*self.handing, *(s for s in self.stepping if s not in self.handing)]
