"""Configuration from the environment, validated once at start.

Every setting is an environment variable whose name is the field name upper-cased
(``phonet_domain`` is ``PHONET_DOMAIN``). :func:`load_settings` turns any validation
failure into :class:`~producer.errors.ConfigError` whose text is one line per bad
setting, naming it, e.g. ``PHONET_SUBSCRIBERS: item 2 is empty``. The README's
configuration table is generated from the same field descriptions (see
``tests/unit/test_config.py``, which keeps the two in step).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

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

from producer import routing
from producer.click2call.policy import compile_numbers
from producer.errors import ConfigError

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
        description="comma-separated extensions or e-mails, one socket each"
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
        60.0, ge=0, description="commands a minute per subscriber (bursts of 10 s worth); 0: off"
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
        description="this replica's name in logs, /readyz and the broker (default: host name)",
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
        mode="before",
    )
    @classmethod
    def _case(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

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
        "phonet_spool_dir", "amqp_ca_file", "amqp_cert_file", "amqp_key_file", mode="before"
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
        if not value:
            raise ValueError("lists no subscriber")
        seen: set[str] = set()
        for item in value:
            problem = routing.subscriber_token_error(item)
            if problem:
                raise ValueError(f"{item[:40]!r} {problem}")
            if item in seen:
                raise ValueError(f"{item[:40]!r} is listed twice")
            seen.add(item)
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

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            # Never echo the URL: it may hold a password.
            raise ValueError("must be an amqp:// or amqps:// URL with a host")
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
        return self.phonet_replica_id.strip() or socket.gethostname()

    @property
    def subscribers(self) -> tuple[str, ...]:
        return self.phonet_subscribers

    @property
    def socket_base_url(self) -> str:
        return self.phonet_url or f"wss://{self.phonet_domain}/live/connector/v3/easy"

    def socket_url(self, subscriber: str) -> str:
        """The full socket URL for ``subscriber``. It holds the API key: never log it."""
        return subscriber_url(self.socket_base_url, self.phonet_domain, self.api_key, subscriber)

    def amqp_tls(self) -> ssl.SSLContext | None:
        """The TLS context for the broker from AMQP_CA_FILE / AMQP_CERT_FILE / AMQP_KEY_FILE;
        None when none is set (aiormq then uses the system's CAs for amqps://)."""
        if self.amqp_ca_file is None and self.amqp_cert_file is None:
            return None
        context = ssl.create_default_context(
            cafile=str(self.amqp_ca_file) if self.amqp_ca_file else None
        )
        if self.amqp_cert_file is not None:
            context.load_cert_chain(
                str(self.amqp_cert_file), str(self.amqp_key_file) if self.amqp_key_file else None
            )
        return context

    @property
    def safe_amqp_url(self) -> str:
        return mask_url(self.amqp_url.get_secret_value())


def subscriber_url(base: str, domain: str, api_key: str, subscriber: str) -> str:
    """``base`` with ``domain``, ``apiKey`` and ``subscriber`` added to its query."""
    parts = urlsplit(base)
    query = urlencode({"domain": domain, "apiKey": api_key, "subscriber": subscriber})
    query = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` and any ``apiKey`` value hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:***@{host}"
    query = re.sub(r"(?i)(apikey=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Problems(Exception):
    """Setting problems found across settings: each line names its setting. (Not a
    ValueError, so pydantic passes it through as it is.)"""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))


def _lenient(data: dict[str, Any], name: str) -> Any:
    """``name``'s value from raw input as its type, or None when absent and required, or
    when it does not parse (its own error is reported already)."""
    field = Settings.model_fields[name]
    if name not in data:
        return None if field.is_required() else field.default
    assert field.annotation is not None
    try:
        return TypeAdapter(field.annotation).validate_python(data[name])
    except ValidationError:
        return None


def cross_problems(get: Callable[[str], Any]) -> list[str]:
    """Every rule that spans settings, as one line per problem naming the setting.
    ``get(field)`` gives a setting's value, or None when it is unknown."""
    problems: list[str] = []
    key, key_file = get("phonet_api_key"), get("phonet_api_key_file")
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
    pairs = (
        ("phonet_reconnect_min_delay", "phonet_reconnect_max_delay", "must not exceed"),
        ("amqp_reconnect_min_delay", "amqp_reconnect_max_delay", "must not exceed"),
    )
    for low, high, words in pairs:
        a, b = get(low), get(high)
        if a is not None and b is not None and a > b:
            problems.append(f"{env_name(low)}: {words} {env_name(high)}")
    problems.extend(tls_problems(get))
    frame, budget = get("phonet_max_frame_bytes"), get("phonet_buffer_max_bytes")
    if frame is not None and budget is not None and budget < 2 * frame:
        problems.append("PHONET_BUFFER_MAX_BYTES: must be at least twice PHONET_MAX_FRAME_BYTES")
    return problems


def tls_problems(get: Callable[[str], Any]) -> list[str]:
    """The AMQP TLS files: readable, a key only with a certificate, and only for amqps://."""
    problems: list[str] = []
    files = [name for name in ("amqp_ca_file", "amqp_cert_file", "amqp_key_file") if get(name)]
    for name in files:
        path = get(name)
        if not os.access(path, os.R_OK) or not path.is_file():
            problems.append(f"{env_name(name)}: cannot read {path}")
    if get("amqp_key_file") and not get("amqp_cert_file"):
        problems.append("AMQP_KEY_FILE: needs AMQP_CERT_FILE")
    url = get("amqp_url")
    if files and url is not None and not url.get_secret_value().startswith("amqps://"):
        problems.append(f"{env_name(files[0])}: needs an amqps:// AMQP_URL")
    return problems


def key_file_problem(path: Path) -> str | None:
    """Why the key file cannot be used, or None."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return f"cannot read {path}: {reason}"
    return None if text else f"{path} is empty"


def env_name(field: str) -> str:
    return field.upper()


def format_validation_error(exc: ValidationError) -> str:
    """One line per bad setting: ``NAME: what is wrong``. Values are never echoed."""
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error.get("loc") or ()
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "required (not set)"
        if loc:
            lines.append(f"{env_name(str(loc[0]))}: {message}")
        else:
            lines.append(message)
    return "\n".join(dict.fromkeys(lines))


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
