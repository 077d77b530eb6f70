"""Logging: JSON lines or plain text on stderr, with secrets scrubbed from every record.

The API key rides in the socket URL, and a broker URL may hold a password, so a filter on
the handler rewrites every formatted record: ``apiKey=...`` query values, ``user:pass@``
URL credentials and any registered secret string become ``***``. This is the last line of
defence; the code also never passes such URLs to a logger (it logs
:func:`producer.app.settings.mask_url` output).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_API_KEY = re.compile(r"(?i)(apikey=)[^&\s\"']+")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",  # set by Formatter.format itself
}
_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)

TRIM = 300
"""Characters of a frame or payload shown in a log line (see :func:`trimmed`)."""


def trimmed(data: bytes | str, limit: int = TRIM) -> str:
    """A printable, bounded preview of untrusted data for a log line."""
    text = (
        data[: limit * 4].decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    )
    if len(text) > limit:
        return f"{text[:limit]}…(+{len(text) - limit} chars)"
    return text


class Scrubber:
    """Removes secrets from text; holds the literal secrets registered at start."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        # Very short values would mangle ordinary words; keys are long in practice.
        if len(secret) >= 4:
            self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        text = _API_KEY.sub(r"\1***", text)
        text = _URL_PASSWORD.sub(r"\1***@", text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


SCRUBBER = Scrubber()


def safe_error(exc: BaseException, limit: int = 160) -> str:
    """An exception as text for a log line or a message: the OS's words when there are some,
    never a URL (aiormq and websockets put URLs, credentials included, in some messages)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return type(exc).__name__ if "://" in text else SCRUBBER(text)[:limit]


class ScrubFilter(logging.Filter):
    """Scrubs a record at its source logger. websockets logs each handshake request line
    (with the query, i.e. ``apiKey``) at DEBUG, on both the client and the simulator."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = SCRUBBER(record.getMessage())
            record.args = None
        elif isinstance(record.msg, str):
            record.msg = SCRUBBER(record.msg)
        return True


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record: plain values only (libraries attach objects, such
    as websockets' connection, whose repr says nothing useful)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_") and isinstance(value, _PLAIN)
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any ``extra=`` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return SCRUBBER(orjson.dumps(entry, default=str).decode())


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = extras(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return SCRUBBER(text)


class _DropDuplicateConnectErrors(logging.Filter):
    """aiormq logs every failed connect at ERROR; the broker link already logs it once,
    with the masked URL and the retry delay, so this copy only adds noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_DropDuplicateConnectErrors())


def setup_logging(level: str = "INFO", fmt: str = "json", *, secrets: tuple[str, ...] = ()) -> None:
    """Install one stderr handler on the root logger (replacing earlier ones)."""
    for secret in secrets:
        SCRUBBER.add(secret)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # websockets logs each handshake request line (with the query, i.e. the API key) at
    # DEBUG; aiormq is chatty at DEBUG. Keep them at INFO whatever LOG_LEVEL says.
    for name in ("websockets", "aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))


class BurstLog:
    """Log the first occurrence of a burst, then at most one line per ``interval`` seconds
    saying how many were not logged. Keeps a hostile or failing stream from flooding logs.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(
        self,
        level: int,
        msg: str,
        *args: object,
        extra: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> bool:
        """Log unless within ``interval`` of the last line; returns whether it logged."""
        now = time.monotonic() if now is None else now
        if now - self._last < self._interval:
            self._suppressed += 1
            return False
        extra = dict(extra or {})
        if self._suppressed:
            extra["suppressed"] = self._suppressed
        self._logger.log(level, msg, *args, extra=extra)
        self._last = now
        self._suppressed = 0
        return True
