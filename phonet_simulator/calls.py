"""Realistic Phonet call lifecycles as frames, for the simulator. Pure and seedable.

A :class:`CallFactory` turns a random choice of scenario into a :class:`Script`: the
frames each subscriber's socket would receive, with their offsets in seconds. Scenarios:

* ``incoming`` — a client calls an employee: dial → bridge → hangup (or dial → hangup when
  missed); sometimes from an unknown number (``otherLegs`` with null id/name/company);
* ``outgoing`` — the employee calls a client: dial → bridge → hangup;
* ``internal`` — one employee calls another (``lgDirection`` 1, ``leg2`` set): both
  sockets get the events;
* ``group`` — a client calls a group: every member's socket rings with a call whose
  ``parentUuid`` is the group call; one member answers, all get a hangup;
* ``pause`` / ``unpause`` — an agent goes away / comes back (``lgDirection`` 32 / 64).

Quirks seen in the wild, each switchable on :class:`Quirks`: ``serverTime`` as a string,
``dialAt``/``bridgeAt`` in seconds, an event delivered twice, and unknown extra fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]

VENDOR_SAMPLE: Frame = {
    "event": "call.dial",
    "uuid": "23-1453990999.41",
    "parentUuid": None,
    "lgDirection": 4,
    "leg": {"id": 120, "type": 1, "displayName": "Support Phonet", "ext": "911"},
    "leg2": None,
    "otherLegs": [
        {
            "id": "29",
            "name": "Тест",
            "num": "+380567777777",
            "companyName": "Рекламное агентство",
            "url": "https://qwerty.phonet.com.ua/features/crm/contacts/edit.jsp#/?id=1",
            "priority": 2,
        }
    ],
    "dialAt": 1473973200000,
    "bridgeAt": None,
    "serverTime": "1473973201000",
    "trunkNum": "567850550",
    "trunkName": "567850550",
}
"""The vendor's documented ``call.dial`` sample, made valid JSON (the original has a trailing
comma and is split in two snippets)."""

NAMES = ("Тест", "Олена Коваль", "Ivan Petrenko", "Марія Шевченко", "Acme Buyer", "Андрій")
COMPANIES = ("Рекламное агентство", "Acme Ltd", "ТОВ Світанок", None)
SCENARIOS = (
    "incoming",
    "incoming",
    "incoming",
    "outgoing",
    "outgoing",
    "internal",
    "group",
    "pause",
    "unpause",
)


@dataclass(frozen=True)
class Quirks:
    """Probabilities of the vendor's documented and observed oddities."""

    server_time_string: float = 0.5
    seconds_timestamps: float = 0.1
    duplicate: float = 0.05
    extra_field: float = 0.1

    @classmethod
    def none(cls) -> Quirks:
        return cls(0.0, 0.0, 0.0, 0.0)


@dataclass
class Script:
    """Frames to send: ``(offset_seconds, subscriber, frame)``, sorted by offset."""

    kind: str
    steps: list[tuple[float, str, Frame]] = field(default_factory=list)

    def add(self, at: float, subscriber: str, frame: Frame) -> None:
        self.steps.append((at, subscriber, frame))

    def sorted(self) -> list[tuple[float, str, Frame]]:
        return sorted(self.steps, key=lambda step: step[0])


class CallFactory:
    """Makes call scripts for ``subscribers`` (extensions or e-mails) of ``domain``."""

    def __init__(
        self,
        subscribers: list[str],
        *,
        domain: str = "demo.phonet.com.ua",
        seed: int | None = None,
        quirks: Quirks | None = None,
        time_scale: float = 1.0,
    ) -> None:
        if not subscribers:
            raise ValueError("at least one subscriber")
        self.subscribers = list(subscribers)
        self.domain = domain
        self.rng = random.Random(seed)
        self.quirks = quirks or Quirks()
        self.time_scale = time_scale
        self._call_no = 0
        self._leg_ids = {s: 100 + i for i, s in enumerate(self.subscribers)}

    # --- helpers ----------------------------------------------------------------------
    def _uuid(self) -> str:
        self._call_no += 1
        return f"{self.rng.randint(10, 99)}-{1_700_000_000 + self._call_no}.{self._call_no}"

    def _leg(self, subscriber: str) -> Frame:
        ext = subscriber if subscriber.isdigit() else f"{self._leg_ids[subscriber]}"
        return {
            "id": self._leg_ids[subscriber],
            "type": 1,
            "displayName": f"Agent {subscriber}",
            "ext": ext,
        }

    def _client(self, known: bool) -> list[Frame]:
        number = f"+380{self.rng.randint(500000000, 999999999)}"
        if not known:
            return [
                {
                    "id": None,
                    "name": None,
                    "num": number,
                    "companyName": None,
                    "url": f"https://{self.domain}/features/crm/contacts/new?num={number[1:]}",
                    "priority": 1,
                }
            ]
        contact = str(self.rng.randint(1, 9999))
        return [
            {
                "id": contact,
                "name": self.rng.choice(NAMES),
                "num": number,
                "companyName": self.rng.choice(COMPANIES),
                "url": f"https://{self.domain}/features/crm/contacts/edit.jsp#/?id={contact}",
                "priority": 2,
            }
        ]

    def _frame(self, event: str, base: Frame, now_ms: int, *, bridged: int | None) -> Frame:
        q, rng = self.quirks, self.rng
        frame = dict(base)
        frame["event"] = event
        dial_at = frame["dialAt"]
        if rng.random() < q.seconds_timestamps:
            frame["dialAt"] = dial_at // 1000
            frame["bridgeAt"] = bridged // 1000 if bridged else None
        else:
            frame["bridgeAt"] = bridged
        frame["serverTime"] = str(now_ms) if rng.random() < q.server_time_string else now_ms
        if rng.random() < q.extra_field:
            frame["crmTag"] = {"source": "simulator", "n": rng.randint(1, 9)}
        return frame

    def _emit(self, script: Script, at: float, subscriber: str, frame: Frame) -> None:
        script.add(at * self.time_scale, subscriber, frame)
        if self.rng.random() < self.quirks.duplicate:
            script.add(at * self.time_scale + 0.001, subscriber, dict(frame))

    def _lifecycle(
        self,
        script: Script,
        subscriber: str,
        base: Frame,
        start_ms: int,
        *,
        answered: bool,
        ring: float,
        talk: float,
    ) -> None:
        self._emit(script, 0.0, subscriber, self._frame("call.dial", base, start_ms, bridged=None))
        if answered:
            bridge_ms = start_ms + int(ring * 1000)
            self._emit(
                script,
                ring,
                subscriber,
                self._frame("call.bridge", base, bridge_ms, bridged=bridge_ms),
            )
            end = ring + talk
            self._emit(
                script,
                end,
                subscriber,
                self._frame("call.hangup", base, start_ms + int(end * 1000), bridged=bridge_ms),
            )
        else:
            self._emit(
                script,
                ring,
                subscriber,
                self._frame("call.hangup", base, start_ms + int(ring * 1000), bridged=None),
            )

    # --- scenarios --------------------------------------------------------------------
    def make(self, now_ms: int, kind: str | None = None) -> Script:
        """One call (or pause change) starting at ``now_ms``; ``kind`` picks the scenario."""
        kind = kind or self.rng.choice(SCENARIOS)
        if kind == "internal" and len(self.subscribers) < 2:
            kind = "outgoing"
        script = Script(kind)
        rng = self.rng
        ring, talk = rng.uniform(0.5, 3.0), rng.uniform(1.0, 6.0)
        trunk = f"{rng.randint(100000000, 999999999)}"
        base: Frame = {
            "uuid": self._uuid(),
            "parentUuid": None,
            "leg2": None,
            "dialAt": now_ms,
            "trunkNum": trunk,
            "trunkName": f"Line {trunk[-3:]}",
        }
        who = rng.choice(self.subscribers)
        if kind in ("incoming", "outgoing"):
            base.update(
                lgDirection=4 if kind == "incoming" else 2,
                leg=self._leg(who),
                otherLegs=self._client(known=rng.random() < 0.7),
            )
            answered = kind == "outgoing" or rng.random() < 0.75
            self._lifecycle(script, who, base, now_ms, answered=answered, ring=ring, talk=talk)
        elif kind == "internal":
            callee = rng.choice([s for s in self.subscribers if s != who])
            base.update(
                lgDirection=1,
                leg=self._leg(who),
                leg2=self._leg(callee),
                otherLegs=[],
                trunkNum=None,
                trunkName=None,
            )
            for subscriber in (who, callee):
                self._lifecycle(
                    script, subscriber, base, now_ms, answered=True, ring=ring, talk=talk
                )
        elif kind == "group":
            group_uuid = base["uuid"]
            client = self._client(known=rng.random() < 0.7)
            members = rng.sample(self.subscribers, k=min(3, len(self.subscribers)))
            answerer = members[0]
            for member in members:
                child = dict(
                    base,
                    uuid=self._uuid(),
                    parentUuid=group_uuid,
                    lgDirection=4,
                    leg=self._leg(member),
                    otherLegs=client,
                )
                self._lifecycle(
                    script, member, child, now_ms, answered=member == answerer, ring=ring, talk=talk
                )
        elif kind in ("pause", "unpause"):
            base.update(
                lgDirection=32 if kind == "pause" else 64,
                leg=self._leg(who),
                otherLegs=[],
                trunkNum=None,
                trunkName=None,
            )
            self._emit(script, 0.0, who, self._frame("call.dial", base, now_ms, bridged=None))
        else:
            raise ValueError(f"unknown scenario {kind!r}")
        return script


def click2call_reply(action: Frame) -> Frame | None:
    """The PBX's default answer to a client→server action.

    ``{"action": "call", "to": <digits>}`` succeeds; a ``to`` starting with ``000`` is
    refused (a number the PBX cannot reach); anything else is an error.
    """
    if action.get("action") != "call":
        return {"event": "error", "message": "unknown action"}
    to = action.get("to")
    if not isinstance(to, str) or not to.lstrip("+").isdigit():
        return {"event": "error", "message": "invalid number"}
    if to.lstrip("+").startswith("000"):
        return {"event": "error", "message": "number unreachable"}
    return {"event": "success"}
