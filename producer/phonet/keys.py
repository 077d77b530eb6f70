"""The API key the sockets log in with, and its rotation without a restart.

With ``PHONET_API_KEY_FILE`` (a Kubernetes Secret mounted as a file) the key is re-read:

* every ``PHONET_API_KEY_CHECK_INTERVAL`` seconds (:meth:`ApiKey.reread`, driven by the
  app's watcher), and
* when the PBX refuses a handshake with 401/403 (:meth:`ApiKey.refused`), at most once a
  second whatever the number of sockets refused — so a socket refused because the key
  was rotated at the PBX first retries at once with the new key instead of waiting
  ``PHONET_AUTH_RETRY_DELAY``.

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

from producer.config import subscriber_url
from producer.logs import BurstLog

log = logging.getLogger("producer.phonet")

REREAD_AFTER_REFUSAL = 1.0
"""Seconds between two re-reads caused by refused handshakes (10,000 sockets refused at
once read the file once)."""


class ApiKey:
    """The current key and its version; builds the socket URLs."""

    def __init__(self, key: str, path: Path | None, *, base_url: str, domain: str) -> None:
        self.key = key
        self.path = path
        self.version = 1
        self.base_url = base_url
        self.domain = domain
        self._last_read = float("-inf")
        self._problems = BurstLog(log, interval=60.0)

    def url(self, subscriber: str) -> str:
        """The socket URL for ``subscriber`` with the current key. Never log it."""
        return subscriber_url(self.base_url, self.domain, self.key, subscriber)

    def reread(self, now: float) -> bool:
        """Read the file; True when it holds a new (non-empty) key, which becomes current
        with the next version. Without a file, or on a read error, False."""
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
        if text == self.key:
            return False
        self.key = text
        self.version += 1
        log.info(
            "new Phonet API key read from PHONET_API_KEY_FILE", extra={"key_version": self.version}
        )
        return True

    def refused(self, version: int, now: float) -> bool:
        """A handshake made with key ``version`` got 401/403: True when a newer key is
        known (already, or after a re-read allowed now), i.e. retry at once."""
        if self.version > version:
            return True
        if now - self._last_read < REREAD_AFTER_REFUSAL:
            return False
        return self.reread(now)
