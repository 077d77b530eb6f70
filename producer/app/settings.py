"""Configuration from the environment, validated once at start.

Every setting is an environment variable whose name is the field name upper-cased
(``phonet_domain`` is ``PHONET_DOMAIN``). :func:`load_settings` turns any validation
failure into :class:`~producer.core.errors.ConfigError` whose text is one line per bad
setting, naming it, e.g. ``PHONET_SUBSCRIBERS: item 2 is empty``. The README's
configuration table is generated from the same field descriptions (see
``tests/unit/test_config.py``, which keeps the two in step).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from producer.click2call.policy import compile_numbers
from producer.core.errors import ConfigError
from producer.core.rules import (
    AUTO,
    Problems,
    check_subscriber_list,
    cross_problems,
    format_validation_error,
    mask_url,
    read_subscribers_file,
    subscriber_url,
    tls_context,
)

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?")


class Settings(BaseSettings):
    """All settings; see the README table for meanings and defaults."""

    model_config = SettingsConfigDict(case_sensitive=False, frozen=True, extra="ignore")

    # --- Phonet -------------------------------------------------------------------------
    phonet_domain: str = Field(description="PBX API host, also sent as `domain=`")
    phonet_api_key: SecretStr | None = Field(
        None, description="the API key (or use PHONET_API_KEY_FILE)"
    )
    phonet_api_key_file: Path | None = Field(
        None, description="a file holding the API key (a k8s Secret mount)"
    )
    phonet_subscribers: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated extensions or e-mails, one socket each; `auto`: every"
        " employee the REST API lists",
    )
    phonet_subscribers_file: Path | None = Field(
        None, description="a file with one subscriber a line (`#` comments), re-read on change"
    )
    phonet_subscribers_exclude: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated patterns (`*`, `?`) of subscribers never to hold"
    )
    phonet_discovery_field: Literal["ext", "email"] = Field(
        "ext", description="with `auto`: the employee field that names the subscriber"
    )
    phonet_discovery_interval: float = Field(
        300.0, gt=0, description="with `auto`: seconds between looks at the employee list"
    )
    phonet_rest_url: str | None = Field(
        None, description="REST API base, default `https://{PHONET_DOMAIN}`"
    )
    phonet_rest_timeout: float = Field(10.0, gt=0, description="seconds for one REST request")
    phonet_backfill: Literal["on", "off"] = Field(
        "on", description="after a gap, publish the calls missed meanwhile from the REST API"
    )
    phonet_url: str | None = Field(
        None,
        description="base socket URL, default `wss://{PHONET_DOMAIN}/live/connector/v3/easy`;"
        " the query `domain`, `apiKey`, `subscriber` is always added",
    )
    phonet_open_timeout: float = Field(10.0, gt=0, description="seconds for a socket handshake")
    phonet_ping_interval: float = Field(20.0, gt=0, description="seconds between keepalive pings")
    phonet_ping_timeout: float = Field(20.0, gt=0, description="seconds to wait for a pong")
    phonet_max_frame_bytes: int = Field(
        1_048_576, ge=4096, description="largest frame accepted; a larger one closes the socket"
    )
    phonet_handshake_concurrency: int = Field(
        50, ge=1, le=10_000, description="socket handshakes in progress at once, at most"
    )
    phonet_handshake_rate: float = Field(
        200.0, gt=0, description="socket handshakes started per second, at most"
    )
    phonet_reconnect_min_delay: float = Field(1.0, gt=0, description="backoff start, seconds")
    phonet_reconnect_max_delay: float = Field(60.0, gt=0, description="backoff cap, seconds")
    phonet_healthy_after: float = Field(
        10.0, ge=0, description="a socket up this long resets its backoff"
    )
    phonet_auth_retry_delay: float = Field(
        60.0, gt=0, description="wait after an HTTP 401/403 handshake before retrying"
    )
    phonet_api_key_check_interval: float = Field(
        10.0, gt=0, description="seconds between looks at PHONET_API_KEY_FILE for a new key"
    )

    # --- RabbitMQ -----------------------------------------------------------------------
    amqp_url: SecretStr = Field(
        SecretStr(DEFAULT_AMQP_URL), description="broker URL (`amqp://` or `amqps://`)"
    )
    phonet_exchange: str = Field(
        "phonet.events", description="topic exchange, durable, declared at start"
    )
    phonet_click2call_queue: str = Field(
        "phonet.click2call", description="click2call command queue, durable"
    )
    phonet_click2call_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for the PBX's answer to a command"
    )
    phonet_click2call_max_age: float = Field(
        60.0, gt=0, description="a command older than this is answered 'expired', not dialed"
    )
    phonet_click2call_prefetch: int = Field(
        32, ge=1, le=10000, description="commands taken off the queue at once"
    )
    phonet_click2call_connect_wait: float = Field(
        3.0, ge=0, description="seconds a command waits for its subscriber's socket"
    )
    phonet_click2call_queue_type: Literal["classic", "quorum"] = Field(
        "classic", description="`classic` or `quorum`"
    )
    phonet_click2call_dead_letter_exchange: str = Field(
        "", description="exchange for rejected commands (empty: none)"
    )
    phonet_history_stream: str = Field(
        "",
        description="a RabbitMQ stream that keeps every event for replay (empty: none)",
    )
    phonet_history_max_age: float = Field(
        7 * 86400.0, gt=0, description="seconds the history stream keeps events"
    )
    phonet_history_max_bytes: int = Field(
        2 * 1024**3, ge=1024 * 1024, description="bytes the history stream keeps at most"
    )
    phonet_click2call_allowed_users: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="RabbitMQ users whose commands are dialed (the `user_id` property);"
        " empty: anyone who may publish to the queue",
    )
    phonet_click2call_allowed_numbers: str = Field(
        "",
        description="regular expression the normalised number (`+`, digits) must match in"
        " full, e.g. `\\+?380\\d{9}`; empty: any number",
    )
    phonet_click2call_rate_limit: float = Field(
        60.0,
        ge=0,
        allow_inf_nan=False,
        description="commands a minute per subscriber (bursts of 10 s worth); 0: off",
    )
    amqp_ca_file: Path | None = Field(
        None, description="CA bundle to verify an `amqps://` broker (default: the system's)"
    )
    amqp_cert_file: Path | None = Field(
        None, description="client certificate (PEM) for `amqps://`, with AMQP_KEY_FILE"
    )
    amqp_key_file: Path | None = Field(None, description="the client certificate's private key")
    amqp_connect_timeout: float = Field(10.0, gt=0, description="seconds to open a connection")
    amqp_reconnect_min_delay: float = Field(0.5, gt=0, description="broker backoff start")
    amqp_reconnect_max_delay: float = Field(15.0, gt=0, description="broker backoff cap")
    phonet_buffer_size: int = Field(
        100_000, ge=10, description="events held in memory while unconfirmed; oldest dropped"
    )
    phonet_buffer_max_bytes: int = Field(
        268_435_456,
        ge=1_048_576,
        description="bytes of memory those events may take (256 MiB: fits the chart's 512Mi)",
    )
    phonet_publish_window: int = Field(
        1024, ge=1, le=65535, description="publishes awaiting broker confirmation at once"
    )
    phonet_publish_timeout: float = Field(
        30.0, gt=0, description="a confirm not received this long reopens the connection"
    )

    phonet_spool_dir: Path | None = Field(
        None, description="directory where unconfirmed events survive a crash (empty: memory only)"
    )
    phonet_spool_max_bytes: int = Field(
        268_435_456, ge=1_048_576, description="largest size of the spool on disk"
    )
    phonet_spool_fsync: Literal["never", "batch", "always"] = Field(
        "never", description="`never`, `batch` (once a second) or `always` (every event)"
    )

    # --- Service ------------------------------------------------------------------------
    phonet_replica_id: str = Field(
        "",
        max_length=64,
        description="this replica's name in logs, /readyz and the broker (default: the pod"
        " name in Kubernetes, else host name and process id)",
    )
    phonet_standby: Literal["hot", "off"] = Field(
        "hot",
        description="with several replicas: `hot` (a second replica keeps a socket per"
        " subscriber too) or `off`",
    )
    phonet_standby_window: float = Field(
        10.0, gt=0, description="seconds of events a standby keeps, published at a takeover"
    )
    phonet_handover_grace: float = Field(
        5.0,
        gt=0,
        description="seconds a replica keeps publishing a subscriber it handed over (at least"
        " twice PHONET_PRESENCE_INTERVAL)",
    )
    phonet_presence_interval: float = Field(
        0.5, gt=0, description="seconds between a replica's heartbeats"
    )
    phonet_presence_timeout: float = Field(
        2.0, gt=0, description="a replica not heard this long is gone (its share is taken)"
    )
    metrics_host: str = Field("0.0.0.0", description="address of /metrics /healthz /readyz")
    metrics_port: int = Field(9120, ge=0, le=65535, description="port of the same (0: any free)")
    phonet_metrics_per_subscriber: Literal["connected", "all", "off"] = Field(
        "connected", description="per-subscriber series: `connected`, `all` or `off`"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    log_format: Literal["json", "text"] = Field("json", description="`json` or `text`")
    phonet_event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="`auto` (uvloop when installed), `asyncio` or `uvloop`"
    )
    phonet_shutdown_timeout: float = Field(
        8.0, gt=0, description="seconds SIGTERM may spend flushing before exit"
    )

    # --- validators ---------------------------------------------------------------------
    @field_validator(
        "log_level",
        "log_format",
        "phonet_click2call_queue_type",
        "phonet_spool_fsync",
        "phonet_event_loop",
        "phonet_metrics_per_subscriber",
        "phonet_standby",
        mode="before",
    )
    @classmethod
    def _case(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("phonet_discovery_field", "phonet_backfill", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("phonet_click2call_allowed_users", mode="before")
    @classmethod
    def _split_users(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("phonet_click2call_allowed_numbers")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            compile_numbers(value)
        except re.error as exc:  # the pattern is the user's own: safe to quote the reason
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value.strip()

    @field_validator(
        "phonet_spool_dir",
        "amqp_ca_file",
        "amqp_cert_file",
        "amqp_key_file",
        "phonet_subscribers_file",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("phonet_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip()
        if not _HOST.fullmatch(value):
            raise ValueError("must be a host name like acme.phonet.com.ua (no scheme, no path)")
        return value

    @field_validator("phonet_subscribers", mode="before")
    @classmethod
    def _split_subscribers(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() == "auto":
                return (AUTO,)
            items = [item.strip() for item in value.split(",")]
            if items == [""]:
                raise ValueError("lists no subscriber")
            for position, item in enumerate(items, start=1):
                if not item:
                    raise ValueError(f"item {position} is empty")
            return tuple(items)
        return value

    @field_validator("phonet_subscribers")
    @classmethod
    def _check_subscribers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value == (AUTO,) or not value:
            return value
        return check_subscriber_list(value)

    @field_validator("phonet_subscribers_exclude", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("phonet_rest_url")
    @classmethod
    def _check_rest_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            # The login sends the API key in the body: only over TLS, or on this machine.
            raise ValueError("must be https:// (http:// only for localhost)")
        return value.strip().rstrip("/")

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

    @field_validator("phonet_history_stream")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        if value:
            return cls._check_name(value)
        return value

    @field_validator("phonet_exchange", "phonet_click2call_queue")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or len(value.encode()) > 255:
            raise ValueError("must be 1..255 bytes")
        if value.startswith("amq."):
            raise ValueError("must not start with 'amq.' (reserved by RabbitMQ)")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _check_together(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """Rules across settings, checked even when single settings fail, so that every
        problem is reported at once (a missing key next to a missing domain)."""
        if not isinstance(data, dict):
            return handler(data)
        try:
            settings = handler(data)
        except ValidationError as exc:
            problems = cross_problems(lambda name: _lenient(data, name))
            if problems:
                raise Problems([format_validation_error(exc), *problems]) from None
            raise
        problems = cross_problems(lambda name: getattr(settings, name))
        if problems:
            raise Problems(problems)
        if settings.phonet_api_key_file is not None:
            key = settings.phonet_api_key_file.read_text(encoding="utf-8").strip()
            object.__setattr__(settings, "phonet_api_key", SecretStr(key))
        return settings

    # --- derived values -----------------------------------------------------------------
    @property
    def api_key(self) -> str:
        """The key: PHONET_API_KEY, or the content of PHONET_API_KEY_FILE read at start."""
        assert self.phonet_api_key is not None  # guaranteed by _check_together
        return self.phonet_api_key.get_secret_value().strip()

    @property
    def replica_id(self) -> str:
        """PHONET_REPLICA_ID, else a default that two producers cannot share: in
        Kubernetes the pod's name (its host name: stable across a container restart,
        unique per pod), elsewhere the host name and the process id (two units or two
        containers on one host differ; a restart is a new replica, which the others take
        as a leave and a join)."""
        given = self.phonet_replica_id.strip()
        if given:
            return given
        host = socket.gethostname()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return host
        return f"{host}-{os.getpid()}"[:64]

    @property
    def discovery(self) -> bool:
        """True with ``PHONET_SUBSCRIBERS=auto``: the REST API's employees are the list."""
        return self.phonet_subscribers == (AUTO,)

    @property
    def subscribers(self) -> tuple[str, ...]:
        """The subscribers to hold at start: the list, the file's content, or none yet
        (``auto``: the first discovery fills it)."""
        if self.discovery:
            return ()
        if self.phonet_subscribers_file is not None:
            return read_subscribers_file(self.phonet_subscribers_file)
        return self.phonet_subscribers

    @property
    def rest_base_url(self) -> str:
        return self.phonet_rest_url or f"https://{self.phonet_domain}"

    @property
    def socket_base_url(self) -> str:
        return self.phonet_url or f"wss://{self.phonet_domain}/live/connector/v3/easy"

    def socket_url(self, subscriber: str) -> str:
        """The full socket URL for ``subscriber``. It holds the API key: never log it."""
        return subscriber_url(self.socket_base_url, self.phonet_domain, self.api_key, subscriber)

    def amqp_tls(self) -> ssl.SSLContext | None:
        """The TLS context for the broker from AMQP_CA_FILE / AMQP_CERT_FILE / AMQP_KEY_FILE
        (checked at start); None when none is set (aiormq then uses the system's CAs)."""
        if self.amqp_ca_file is None and self.amqp_cert_file is None:
            return None
        return tls_context(self.amqp_ca_file, self.amqp_cert_file, self.amqp_key_file)

    @property
    def safe_amqp_url(self) -> str:
        return ",".join(mask_url(u) for u in self.amqp_url.get_secret_value().split(","))


def _lenient(data: dict[str, Any], name: str) -> Any:
    """``name``'s value from raw input as its type, or None when absent and required, or
    when it does not parse (its own error is reported already)."""
    field = Settings.model_fields[name]
    if name not in data:
        return None if field.is_required() else field.default
    assert field.annotation is not None
    value = data[name]
    if isinstance(value, str) and not value.strip() and not field.is_required():
        return None  # an empty optional setting means "not set" (see _empty_is_none)
    if isinstance(value, str) and field.annotation == tuple[str, ...]:
        # A comma-separated list (NoDecode): split as its own validator does.
        items = tuple(item.strip() for item in value.split(",") if item.strip())
        return items or None  # an empty list is its own error, reported already
    try:
        return TypeAdapter(field.annotation).validate_python(value)
    except ValidationError:
        return None


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (``overrides`` win) and validate.

    Raises:
        ConfigError: one line per bad setting, each naming its variable, all at once.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    except Problems as exc:
        raise ConfigError(str(exc)) from None
