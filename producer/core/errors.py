"""Every exception phonet-producer raises on purpose has one root.

The tree::

    PhonetProducerError
    ├── ConfigError             a setting is missing or wrong; startup stops with one line
    ├── BrokerUnavailable       RabbitMQ did not answer (the demo and startup checks say so)
    ├── SpoolError              the spool directory cannot be used
    ├── RestUnavailable         a Phonet REST request failed (``result`` says how)
    └── CommandError            a click2call command was answered with an error
        ├── InvalidCommand      body not JSON, not an object, a field missing or malformed
        ├── UnknownSubscriber   the subscriber is not configured on this producer
        ├── Forbidden           the sender is not in PHONET_CLICK2CALL_ALLOWED_USERS
        ├── NumberNotAllowed    the number does not match PHONET_CLICK2CALL_ALLOWED_NUMBERS
        ├── RateLimited         the subscriber's PHONET_CLICK2CALL_RATE_LIMIT is used up
        ├── NotConnected        the subscriber's socket stayed down
        ├── CommandExpired      the command waited in the queue for too long
        ├── CommandTimeout      the PBX did not answer in time
        └── PbxRefused          the PBX answered ``{"event": "error"}``

Messages never carry the API key or a URL with credentials: they are built from the
service's own words and from values the user already sent us (a subscriber, a number).
"""

from __future__ import annotations

from phonet_client.results import Result


class PhonetProducerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(PhonetProducerError):
    """A setting is missing or invalid. ``str()`` is one line per bad setting."""


class BrokerUnavailable(PhonetProducerError):
    """RabbitMQ cannot be reached; the message names the URL with its password masked."""


class SpoolError(PhonetProducerError):
    """The spool directory is unusable (not writable, not a directory, locked by another)."""


class RestUnavailable(PhonetProducerError):
    """A REST request failed; ``result`` is its metric label (auth, http, timeout, network,
    bad_json), the text says what happened without a URL or a key."""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result


class CommandError(PhonetProducerError):
    """A click2call command failed; ``result`` is its metric label, ``str()`` the reply text."""

    result: str = Result.INVALID


class InvalidCommand(CommandError):
    result: str = Result.INVALID


class UnknownSubscriber(CommandError):
    result: str = Result.UNKNOWN_SUBSCRIBER


class Forbidden(CommandError):
    result: str = Result.FORBIDDEN


class NumberNotAllowed(CommandError):
    result: str = Result.NUMBER_NOT_ALLOWED


class RateLimited(CommandError):
    result: str = Result.RATE_LIMITED


class NotConnected(CommandError):
    result: str = Result.NOT_CONNECTED


class CommandExpired(CommandError):
    result: str = Result.EXPIRED


class CommandTimeout(CommandError):
    result: str = Result.TIMEOUT


class PbxRefused(CommandError):
    result: str = Result.PBX_ERROR


class OutcomeUnknown(CommandError):
    """A replica that stopped had claimed the command (it may have dialed it) and never
    answered: it is not dialed again, and its outcome cannot be known."""

    result: str = Result.UNKNOWN
