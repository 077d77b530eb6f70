"""Rules about settings that need no pydantic: socket URLs, masking, the subscriber list
and its file, the broker's TLS files.

Pure functions, used by the settings groups. Every problem is one line that names its
environment variable and never echoes a value.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from producer.core import routing
from producer.core.settings import env_name

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
