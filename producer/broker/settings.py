"""The broker's settings: where it is, TLS, and the connection's backoff."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from producer.core.rules import mask_url, tls_context, tls_problems
from producer.core.settings import Group, OptionalPath

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"


class BrokerSettings(Group):
    """The RabbitMQ connection (both links: events and commands)."""

    amqp_url: SecretStr = Field(
        SecretStr(DEFAULT_AMQP_URL), description="broker URL (`amqp://` or `amqps://`)"
    )
    amqp_ca_file: OptionalPath = Field(
        None, description="CA bundle to verify an `amqps://` broker (default: the system's)"
    )
    amqp_cert_file: OptionalPath = Field(
        None, description="client certificate (PEM) for `amqps://`, with AMQP_KEY_FILE"
    )
    amqp_key_file: OptionalPath = Field(None, description="the client certificate's private key")
    amqp_connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    amqp_reconnect_min_delay: float = Field(0.5, gt=0, description="broker backoff start")
    amqp_reconnect_max_delay: float = Field(15.0, gt=0, description="broker backoff cap")

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp(cls, value: SecretStr) -> SecretStr:
        urls = [u.strip() for u in value.get_secret_value().split(",")]
        for position, url in enumerate(urls, start=1):
            parts = urlsplit(url)
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                # Never echo the URL: it may hold a password.
                where = f" (URL {position} of {len(urls)})" if len(urls) > 1 else ""
                raise ValueError(f"must be an amqp:// or amqps:// URL with a host{where}")
        return SecretStr(",".join(urls))

    def problems(self) -> list[str]:
        problems = tls_problems(lambda name: getattr(self, name))
        if self.amqp_reconnect_min_delay > self.amqp_reconnect_max_delay:
            problems.append("AMQP_RECONNECT_MIN_DELAY: must not exceed AMQP_RECONNECT_MAX_DELAY")
        return problems

    def amqp_tls(self) -> ssl.SSLContext | None:
        """The TLS context from AMQP_CA_FILE / AMQP_CERT_FILE / AMQP_KEY_FILE (checked at
        start); None when none is set (aiormq then uses the system's CAs)."""
        if self.amqp_ca_file is None and self.amqp_cert_file is None:
            return None
        return tls_context(self.amqp_ca_file, self.amqp_cert_file, self.amqp_key_file)

    @property
    def safe_amqp_url(self) -> str:
        return ",".join(mask_url(u) for u in self.amqp_url.get_secret_value().split(","))
