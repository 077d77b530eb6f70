"""Log hygiene of the simulator: websockets logs request URLs at DEBUG, and the API key
rides in the query."""

from __future__ import annotations

import logging
import re


class HideKeys(logging.Filter):
    """websockets logs request URLs at DEBUG: the API key rides in the query."""

    _KEY = re.compile(r"(?i)(apikey=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "apikey=" in message.lower():
            record.msg, record.args = self._KEY.sub(r"\1***", message), None
        return True


def quiet(ws_log: logging.Logger) -> None:
    """The socket log without the key, and without frames: they carry call data (numbers,
    names), which websockets logs at DEBUG. Only ``phonet-producer simulator --verbose``
    asks for them (it sets the level before this runs)."""
    ws_log.addFilter(HideKeys())
    if ws_log.level == logging.NOTSET:
        ws_log.setLevel(logging.INFO)
