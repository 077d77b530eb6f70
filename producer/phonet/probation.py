"""Which API key the sockets log in with, and whether a new one is on probation: pure.

A key read from the file (:meth:`KeyProbation.offer`) becomes current at once, *on
probation* until a handshake with it succeeds (:meth:`~KeyProbation.accepted`). If the PBX
refuses it first (a mistyped Secret, or one updated before the key is active at Phonet),
:meth:`~KeyProbation.refused` brings the previous key back — the open sockets still use it —
and the refused text is not offered again until the file says something else: a bad key
costs one socket one reconnect, not every socket. The adapter
(:class:`producer.phonet.keys.ApiKey`) reads the file, logs and paces re-reads.

Every key has a version; a socket remembers the version it opened with.
"""

from __future__ import annotations

from enum import Enum


class Refusal(Enum):
    """What a refused handshake means for the key."""

    NEWER_KNOWN = "newer_known"
    """The socket used an older key: retry at once with the current one."""
    PREVIOUS_BACK = "previous_back"
    """The refused key was on probation: the previous one is current again (retry)."""
    CURRENT_REFUSED = "current_refused"
    """The key in use is refused: only a new key in the file can help (read it again)."""


class KeyProbation:
    """The current key, its version, and the previous key while the current one is on
    probation. Memory: every key text ever current (a handful over a process's life)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.version = 1
        self._texts: dict[int, str] = {1: key}
        self._previous: tuple[int, str] | None = None  # while the current one is on probation
        self._refused_text: str | None = None

    @property
    def on_probation(self) -> bool:
        return self._previous is not None

    def is_current(self, version: int) -> bool:
        """True when key ``version`` is the key in use now (same text)."""
        return self._texts.get(version) == self.key

    def offer(self, text: str) -> bool:
        """The file holds ``text`` (stripped, not empty): True when it becomes the current
        key (on probation), False when it is the current one or the one refused last."""
        if text == self.key or text == self._refused_text:
            return False
        self._refused_text = None
        if self._previous is None:
            self._previous = (self.version, self.key)
        self._set(text)
        return True

    def accepted(self, version: int) -> None:
        """A handshake with key ``version`` succeeded: it is no longer on probation."""
        if version == self.version:
            self._previous = None

    def refused(self, version: int) -> Refusal:
        """A handshake made with key ``version`` got 401/403."""
        if not self.is_current(version):
            return Refusal.NEWER_KNOWN
        if version == self.version and self._previous is not None:
            self._refused_text = self.key
            _, previous = self._previous
            self._previous = None
            self._set(previous)
            return Refusal.PREVIOUS_BACK
        return Refusal.CURRENT_REFUSED

    def _set(self, text: str) -> None:
        self.version += 1
        self.key = text
        self._texts[self.version] = text
