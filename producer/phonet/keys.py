"""The API key the sockets log in with, and its rotation without a restart.

With ``PHONET_API_KEY_FILE`` (a Kubernetes Secret mounted as a file) the key is re-read:

* every ``PHONET_API_KEY_CHECK_INTERVAL`` seconds (:meth:`ApiKey.reread`, driven by
  :meth:`producer.phonet.pool.SocketPool.follow_key`), and
* when the PBX refuses a handshake with 401/403 (:meth:`ApiKey.refused`), at most once a
  second whatever the number of sockets refused — so a socket refused because the key
  was rotated at the PBX first retries at once with the new key instead of waiting
  ``PHONET_RECONNECT_MAX_DELAY`` (the wait after a refused key).

What a new key's probation decides is pure (:mod:`producer.phonet.probation`); this
module is its adapter. Each key has a ``version``; every socket remembers the version it
opened with. After a
change, :meth:`producer.phonet.pool.SocketPool.cycle` reopens the sockets still open under
an older key, a few at a time (see there): no storm, one reconnect each.

An unreadable or empty file keeps the last good key (logged once per burst). The key
itself is never logged; nor is a URL holding it. Everything here runs on the event loop;
a file read is one small ``read()``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from producer.core.rules import subscriber_url
from producer.phonet.probation import KeyProbation, Refusal
from producer.telemetry.logs import SCRUBBER, BurstLog

log = logging.getLogger("producer.phonet")

REREAD_AFTER_REFUSAL = 1.0
"""Seconds between two re-reads caused by refused handshakes (10,000 sockets refused at
once read the file once)."""


class ApiKey:
    """The adapter around :class:`~producer.phonet.probation.KeyProbation`: reads the file,
    paces re-reads after refusals, logs, and builds the socket URLs."""

    def __init__(self, key: str, path: Path | None, *, base_url: str, domain: str) -> None:
        self.path = path
        self.base_url = base_url
        self.domain = domain
        self.probation = KeyProbation(key)
        self._last_read = float("-inf")
        self._problems = BurstLog(log, interval=60.0)
        SCRUBBER.add(key)

    @property
    def key(self) -> str:
        return self.probation.key

    @property
    def version(self) -> int:
        return self.probation.version

    def url(self, subscriber: str) -> str:
        """The socket URL for ``subscriber`` with the current key. Never log it."""
        return subscriber_url(self.base_url, self.domain, self.key, subscriber)

    def is_current(self, version: int) -> bool:
        """True when key ``version`` is the key in use now (same text)."""
        return self.probation.is_current(version)

    def accepted(self, version: int) -> None:
        """A handshake with key ``version`` succeeded: it is no longer on probation."""
        self.probation.accepted(version)

    def reread(self, now: float) -> bool:
        """Read the file; True when it holds a new (non-empty) key, which becomes current
        with the next version. Without a file, on a read error, or when the file still
        holds a key the PBX refused, False."""
        self._last_read = now
        if self.path is None:
            return False
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            self._problems(
                logging.WARNING,
                "cannot read PHONET_API_KEY_FILE (%s); keeping the current key",
                reason,
            )
            return False
        if not text:
            self._problems(logging.WARNING, "PHONET_API_KEY_FILE is empty; keeping the current key")
            return False
        if not self.probation.offer(text):
            return False
        SCRUBBER.add(text)
        log.info(
            "new Phonet API key read from PHONET_API_KEY_FILE", extra={"version": self.version}
        )
        return True

    def refused(self, version: int, now: float) -> bool:
        """A handshake made with key ``version`` got 401/403: True when another key should
        be tried at once — a newer one is known (already, or after a re-read allowed now),
        or the refused key was on probation and the previous one is back."""
        verdict = self.probation.refused(version)
        if verdict is Refusal.NEWER_KNOWN:
            return True
        if verdict is Refusal.PREVIOUS_BACK:
            log.error(
                "Phonet refused the new API key from PHONET_API_KEY_FILE; keeping the previous"
                " key (check the Secret; the file is read again when it changes)"
            )
            return True
        if now - self._last_read < REREAD_AFTER_REFUSAL:
            return False
        return self.reread(now)
