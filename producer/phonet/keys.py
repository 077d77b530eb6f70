"""The API key the sockets log in with, and its rotation without a restart.

With ``PHONET_API_KEY_FILE`` (a Kubernetes Secret mounted as a file) the key is re-read:

* every ``PHONET_API_KEY_CHECK_INTERVAL`` seconds (:meth:`ApiKey.reread`, driven by
  :meth:`producer.phonet.pool.SocketPool.follow_key`), and
* when the PBX refuses a handshake with 401/403 (:meth:`ApiKey.refused`), at most once a
  second whatever the number of sockets refused — so a socket refused because the key
  was rotated at the PBX first retries at once with the new key instead of waiting
  ``PHONET_RECONNECT_MAX_DELAY`` (the wait after a refused key).

Each key has a ``version``; every socket remembers the version it opened with. After a
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
from producer.telemetry.logs import SCRUBBER, BurstLog

log = logging.getLogger("producer.phonet")

REREAD_AFTER_REFUSAL = 1.0
"""Seconds between two re-reads caused by refused handshakes (10,000 sockets refused at
once read the file once)."""


class ApiKey:
    """The current key and its version; builds the socket URLs.

    A new key from the file is *on probation* until a handshake with it succeeds
    (:meth:`accepted`). If the PBX refuses it first (a mistyped Secret, or one updated
    before the key is active at Phonet), :meth:`refused` goes back to the previous key —
    which the open sockets still use — logs an error, and ignores that same text in the
    file until it changes: a bad key costs one socket one reconnect, not every socket.
    """

    def __init__(self, key: str, path: Path | None, *, base_url: str, domain: str) -> None:
        self.key = key
        self.path = path
        self.version = 1
        self.base_url = base_url
        self.domain = domain
        self._texts: dict[int, str] = {1: key}
        self._previous: tuple[int, str] | None = None  # while the current one is on probation
        self._refused_text: str | None = None
        self._last_read = float("-inf")
        self._problems = BurstLog(log, interval=60.0)
        SCRUBBER.add(key)

    def url(self, subscriber: str) -> str:
        """The socket URL for ``subscriber`` with the current key. Never log it."""
        return subscriber_url(self.base_url, self.domain, self.key, subscriber)

    def is_current(self, version: int) -> bool:
        """True when key ``version`` is the key in use now (same text)."""
        return self._texts.get(version) == self.key

    def accepted(self, version: int) -> None:
        """A handshake with key ``version`` succeeded: it is no longer on probation."""
        if version == self.version:
            self._previous = None

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
        if text == self.key or text == self._refused_text:
            return False
        self._refused_text = None
        if self._previous is None:
            self._previous = (self.version, self.key)
        self._set(text)
        log.info(
            "new Phonet API key read from PHONET_API_KEY_FILE", extra={"version": self.version}
        )
        return True

    def refused(self, version: int, now: float) -> bool:
        """A handshake made with key ``version`` got 401/403: True when another key should
        be tried at once — a newer one is known (already, or after a re-read allowed now),
        or the refused key was on probation and the previous one is back."""
        if not self.is_current(version):  # a newer key (another text) is known already
            return True
        if version == self.version and self._previous is not None:
            self._refused_text = self.key
            _, previous = self._previous
            self._previous = None
            self._set(previous)
            log.error(
                "Phonet refused the new API key from PHONET_API_KEY_FILE; keeping the previous"
                " key (check the Secret; the file is read again when it changes)"
            )
            return True
        if now - self._last_read < REREAD_AFTER_REFUSAL:
            return False
        return self.reread(now)

    def _set(self, text: str) -> None:
        self.version += 1
        self.key = text
        self._texts[self.version] = text
        SCRUBBER.add(text)
