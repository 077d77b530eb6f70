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
