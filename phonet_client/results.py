"""The documented results of a click2call command, in one place.

Every reply carries one in its ``result`` header, the producer counts each under the
``result`` label of ``phonet_click2call_commands_total``, and :mod:`phonet_client.click2call`
raises one exception per error result. The producer imports this list (as it imports the
routing escape from :mod:`phonet_client.keys`), so the service and its clients cannot name
a result differently.
"""

from __future__ import annotations

from enum import StrEnum


class Result(StrEnum):
    SUCCESS = "success"
    PBX_ERROR = "pbx_error"
    """The PBX refused the call (its own words in the reply's ``message``)."""
    INVALID = "invalid"
    UNKNOWN_SUBSCRIBER = "unknown_subscriber"
    FORBIDDEN = "forbidden"
    NUMBER_NOT_ALLOWED = "number_not_allowed"
    RATE_LIMITED = "rate_limited"
    NOT_CONNECTED = "not_connected"
    TIMEOUT = "timeout"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    """A replica that had claimed the command stopped without answering: it may have
    dialed, and is never dialed again."""
