"""Which subscribers to hold (a list, a file, or the REST API's employees) and the REST API
that fills gaps. The subscribers file is read once here, at start; the service re-reads it
only when it changes."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, field_validator
from pydantic_settings import NoDecode

from producer.core.rules import AUTO, check_subscriber_list, read_subscribers_file
from producer.core.settings import CommaList, Group, Lower, OptionalPath


class SubscriberSettings(Group):
    """The subscribers and the REST API."""

    phonet_subscribers: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated extensions or e-mails, one socket each; `auto`: every"
        " employee the REST API lists",
    )
    phonet_subscribers_file: OptionalPath = Field(
        None, description="a file with one subscriber a line (`#` comments), re-read on change"
    )
    phonet_subscribers_exclude: CommaList = Field(
        (), description="comma-separated patterns (`*`, `?`) of subscribers never to hold"
    )
    phonet_discovery_field: Annotated[Literal["ext", "email"], Lower] = Field(
        "ext", description="with `auto`: the employee field that names the subscriber"
    )
    phonet_discovery_interval: float = Field(
        300.0, gt=0, description="with `auto`: seconds between looks at the employee list"
    )
    phonet_rest_url: str | None = Field(
        None, description="REST API base, default `https://{PHONET_DOMAIN}`"
    )
    phonet_rest_timeout: float = Field(10.0, gt=0, description="seconds for one REST request")
    phonet_backfill: Annotated[Literal["on", "off"], Lower] = Field(
        "on", description="after a gap, publish the calls missed meanwhile from the REST API"
    )
    _from_file: tuple[str, ...] = PrivateAttr(())
    _file_problem: str | None = PrivateAttr(None)

    @field_validator("phonet_subscribers", mode="before")
    @classmethod
    def _split_subscribers(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() == AUTO:
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

    def model_post_init(self, context: Any, /) -> None:
        if self.phonet_subscribers_file is not None and not self.phonet_subscribers:
            try:
                self._from_file = read_subscribers_file(self.phonet_subscribers_file)
            except ValueError as exc:
                self._file_problem = f"PHONET_SUBSCRIBERS_FILE: {exc}"

    def problems(self) -> list[str]:
        listed, listed_file = self.phonet_subscribers, self.phonet_subscribers_file
        if listed and listed_file is not None:
            return [
                "PHONET_SUBSCRIBERS: set PHONET_SUBSCRIBERS or PHONET_SUBSCRIBERS_FILE, not both"
            ]
        if not listed and listed_file is None:
            return ["PHONET_SUBSCRIBERS: required (a list, `auto`, or PHONET_SUBSCRIBERS_FILE)"]
        return [self._file_problem] if self._file_problem else []

    @property
    def discovery(self) -> bool:
        """True with ``PHONET_SUBSCRIBERS=auto``: the REST API's employees are the list."""
        return self.phonet_subscribers == (AUTO,)

    @property
    def subscribers(self) -> tuple[str, ...]:
        """The subscribers to hold at start: the list, the file's content as read at start,
        or none yet (``auto``: the first discovery fills it)."""
        if self.discovery:
            return ()
        return (
            self._from_file if self.phonet_subscribers_file is not None else self.phonet_subscribers
        )

    def rest_base_url(self, domain: str) -> str:
        return self.phonet_rest_url or f"https://{domain}"
