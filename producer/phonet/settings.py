"""The Phonet sockets' settings (``PHONET_DOMAIN``, the key, the socket tuning).

Derived, not set: the pong timeout is the ping interval; a socket up for half a ping
interval resets its backoff; after a refused key (HTTP 401/403) the socket waits the
backoff cap before trying again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from producer.core.rules import key_file_problem, subscriber_url
from producer.core.settings import Group, OptionalPath

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?")

OPEN_TIMEOUT = 10.0
"""Seconds for a socket handshake (TCP, TLS and the HTTP upgrade)."""


class PhonetSettings(Group):
    """Where the PBX is, the key, and how the sockets behave."""

    STAND_INS: ClassVar[dict[str, Any]] = {"phonet_domain": "stand-in.invalid"}

    phonet_domain: str = Field(description="PBX API host, also sent as `domain=`")
    phonet_api_key: SecretStr | None = Field(
        None, description="the API key (or use PHONET_API_KEY_FILE)"
    )
    phonet_api_key_file: OptionalPath = Field(
        None, description="a file holding the API key (a k8s Secret mount)"
    )
    phonet_api_key_check_interval: float = Field(
        10.0, gt=0, description="seconds between looks at PHONET_API_KEY_FILE for a new key"
    )
    phonet_url: str | None = Field(
        None,
        description="base socket URL, default `wss://{PHONET_DOMAIN}/live/connector/v3/easy`;"
        " the query `domain`, `apiKey`, `subscriber` is always added",
    )
    phonet_ping_interval: float = Field(
        20.0, gt=0, description="seconds between keepalive pings (and to wait for the pong)"
    )
    phonet_max_frame_bytes: int = Field(
        1_048_576, ge=4096, description="largest frame accepted; a larger one closes the socket"
    )
    phonet_handshake_concurrency: Annotated[int, Field(ge=1, le=10_000)] = Field(
        50, description="socket handshakes in progress at once, at most"
    )
    phonet_handshake_rate: float = Field(
        200.0, gt=0, description="socket handshakes started per second, at most"
    )
    phonet_reconnect_min_delay: float = Field(1.0, gt=0, description="backoff start, seconds")
    phonet_reconnect_max_delay: float = Field(60.0, gt=0, description="backoff cap, seconds")

    @field_validator("phonet_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip()
        if not _HOST.fullmatch(value):
            raise ValueError("must be a host name like acme.phonet.com.ua (no scheme, no path)")
        return value

    @field_validator("phonet_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL with a host")
        if "apikey=" in parts.query.lower():
            raise ValueError("must not carry apiKey; set PHONET_API_KEY instead")
        return value.strip()

    def problems(self) -> list[str]:
        problems: list[str] = []
        key, key_file = self.phonet_api_key, self.phonet_api_key_file
        if key is not None and key_file is not None:
            problems.append("PHONET_API_KEY: set PHONET_API_KEY or PHONET_API_KEY_FILE, not both")
        elif key is None and key_file is None:
            problems.append("PHONET_API_KEY: required (or PHONET_API_KEY_FILE)")
        elif key is not None and not key.get_secret_value().strip():
            problems.append("PHONET_API_KEY: is empty")
        elif key_file is not None:
            problem = key_file_problem(key_file)
            if problem:
                problems.append(f"PHONET_API_KEY_FILE: {problem}")
        if self.phonet_reconnect_min_delay > self.phonet_reconnect_max_delay:
            problems.append(
                "PHONET_RECONNECT_MIN_DELAY: must not exceed PHONET_RECONNECT_MAX_DELAY"
            )
        return problems

    def with_key_read(self) -> PhonetSettings:
        """These settings with the key file's content as the key (read once, at start)."""
        if self.phonet_api_key_file is None:
            return self
        key = read_key(self.phonet_api_key_file)
        return self.model_copy(update={"phonet_api_key": SecretStr(key)})

    @property
    def api_key(self) -> str:
        """The key: PHONET_API_KEY, or the content of PHONET_API_KEY_FILE read at start."""
        assert self.phonet_api_key is not None  # guaranteed by problems() and with_key_read()
        return self.phonet_api_key.get_secret_value().strip()

    @property
    def socket_base_url(self) -> str:
        return self.phonet_url or f"wss://{self.phonet_domain}/live/connector/v3/easy"

    def socket_url(self, subscriber: str) -> str:
        """The full socket URL for ``subscriber``. It holds the API key: never log it."""
        return subscriber_url(self.socket_base_url, self.phonet_domain, self.api_key, subscriber)

    @property
    def ping_timeout(self) -> float:
        return self.phonet_ping_interval

    @property
    def healthy_after(self) -> float:
        """A socket up this long resets its backoff: it has outlived a keepalive round."""
        return self.phonet_ping_interval / 2

    @property
    def auth_retry_delay(self) -> float:
        return self.phonet_reconnect_max_delay


def read_key(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()
