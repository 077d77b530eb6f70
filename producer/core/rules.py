"""Rules about settings that need no pydantic: URLs, cross-setting checks, error lines.

Pure functions, used by :mod:`producer.app.settings` (which re-exports what others import). Every
problem is one line that names its environment variable and never echoes a value.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from pydantic import ValidationError

from producer.core import routing

AUTO = "auto"
"""``PHONET_SUBSCRIBERS=auto``: the subscribers are the REST API's employees."""


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


def check_subscriber_list(items: tuple[str, ...]) -> tuple[str, ...]:
    """``items`` when each is a usable subscriber, once. Raises ValueError saying which is
    not (quoted, trimmed: a subscriber is not a secret)."""
    if not items:
        raise ValueError("lists no subscriber")
    seen: set[str] = set()
    for item in items:
        problem = routing.subscriber_token_error(item)
        if problem:
            raise ValueError(f"{item[:40]!r} {problem}")
        if item in seen:
            raise ValueError(f"{item[:40]!r} is listed twice")
        seen.add(item)
    return items


def parse_subscribers_text(text: str) -> tuple[str, ...]:
    """One subscriber a line; blank lines and ``#`` comments (whole-line or trailing) are
    ignored. Raises ValueError naming the line of a bad or repeated subscriber."""
    items: list[str] = []
    lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        problem = routing.subscriber_token_error(item)
        if problem:
            raise ValueError(f"line {number}: {item[:40]!r} {problem}")
        if item in lines:
            raise ValueError(f"line {number}: {item[:40]!r} is listed twice (line {lines[item]})")
        lines[item] = number
        items.append(item)
    if not items:
        raise ValueError("lists no subscriber")
    return tuple(items)


def read_subscribers_file(path: Path) -> tuple[str, ...]:
    """The subscribers in ``path``. Raises ValueError (unreadable, bad line, empty)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(f"cannot read {path}: {reason}") from None
    return parse_subscribers_text(text)


def cross_problems(get: Callable[[str], Any]) -> list[str]:
    """Every rule that spans settings, as one line per problem naming the setting.
    ``get(field)`` gives a setting's value, or None when it is unknown."""
    problems: list[str] = []
    listed, listed_file = get("phonet_subscribers"), get("phonet_subscribers_file")
    if listed and listed_file is not None:
        problems.append(
            "PHONET_SUBSCRIBERS: set PHONET_SUBSCRIBERS or PHONET_SUBSCRIBERS_FILE, not both"
        )
    elif listed == () and listed_file is None:  # None: set but invalid, reported already
        problems.append("PHONET_SUBSCRIBERS: required (a list, `auto`, or PHONET_SUBSCRIBERS_FILE)")
    elif listed_file is not None:
        try:
            read_subscribers_file(listed_file)
        except ValueError as exc:
            problems.append(f"PHONET_SUBSCRIBERS_FILE: {exc}")
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
    interval, timeout = get("phonet_presence_interval"), get("phonet_presence_timeout")
    if interval is not None and timeout is not None and timeout < 2 * interval:
        problems.append("PHONET_PRESENCE_TIMEOUT: must be at least twice PHONET_PRESENCE_INTERVAL")
    grace = get("phonet_handover_grace")
    if grace is not None and interval is not None and 0 < grace < 2 * interval:
        # The new owner says it is warm in a heartbeat: a grace shorter than two of them
        # could end a handover on a heartbeat sent before it heard of the handover.
        problems.append("PHONET_HANDOVER_GRACE: must be at least twice PHONET_PRESENCE_INTERVAL")
    window = get("phonet_standby_window")
    if None not in (window, interval, timeout) and window < 2 * (interval + timeout):
        # A takeover is noticed after timeout + interval; the window must still hold what
        # the dead owner had not got confirmed by then.
        problems.append(
            "PHONET_STANDBY_WINDOW: must be at least twice PHONET_PRESENCE_TIMEOUT +"
            " PHONET_PRESENCE_INTERVAL"
        )
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
    """The AMQP TLS files: readable, usable by OpenSSL (a CA bundle, a certificate with its
    unencrypted key), a key only with a certificate, and only for amqps://."""
    problems: list[str] = []
    files = [name for name in ("amqp_ca_file", "amqp_cert_file", "amqp_key_file") if get(name)]
    unreadable = False
    for name in files:
        path = get(name)
        if not os.access(path, os.R_OK) or not path.is_file():
            problems.append(f"{env_name(name)}: cannot read {path}")
            unreadable = True
    if get("amqp_key_file") and not get("amqp_cert_file"):
        problems.append("AMQP_KEY_FILE: needs AMQP_CERT_FILE")
    url = get("amqp_url")
    if files and url is not None and not url.get_secret_value().startswith("amqps://"):
        problems.append(f"{env_name(files[0])}: needs an amqps:// AMQP_URL")
    if files and not unreadable and not problems:
        problems.extend(
            _tls_load_problems(get("amqp_ca_file"), get("amqp_cert_file"), get("amqp_key_file"))
        )
    return problems


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The broker TLS context. Raises ssl.SSLError / OSError / ValueError when OpenSSL
    refuses a file; an encrypted key is refused (never a pass-phrase prompt)."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None, password=_no_password)
    return context


def _no_password() -> str:
    raise ValueError("the private key is encrypted (give an unencrypted key)")


def _tls_load_problems(ca: Path | None, cert: Path | None, key: Path | None) -> list[str]:
    try:
        tls_context(ca, None, None)
    except (ssl.SSLError, OSError, ValueError):
        return ["AMQP_CA_FILE: not a PEM CA bundle OpenSSL can load"]
    if cert is None:
        return []
    try:
        tls_context(None, cert, key)
    except ValueError as exc:
        return [f"AMQP_KEY_FILE: {exc}"]
    except (ssl.SSLError, OSError):
        return ["AMQP_CERT_FILE: the certificate and its key do not load together (PEM, matching)"]
    return []


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
