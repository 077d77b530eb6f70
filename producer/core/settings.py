"""What every settings group shares: the base model, list and path types, error lines.

Each feature declares its own group (``producer/<feature>/settings.py``): a pydantic-settings
model whose fields are the environment variables it reads, named as the variable
lower-cased (``phonet_domain`` is ``PHONET_DOMAIN``), with the rules that span its own
fields in :meth:`Group.problems`. :mod:`producer.app.settings` builds every group and
reports every problem at once, one line each, naming the variable, never echoing a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)]
"""A comma-separated list; blanks around and between items are dropped."""
OptionalPath = Annotated[Path | None, BeforeValidator(_blank_is_none)]
"""A path, or None when unset or blank."""
Lower = BeforeValidator(_lower)
"""Annotate a ``Literal`` of lower-case words to accept any case."""
Upper = BeforeValidator(_upper)
"""The same for upper-case words."""


class Group(BaseSettings):
    """One feature's settings, read from the environment (values given win)."""

    model_config = SettingsConfigDict(case_sensitive=False, frozen=True, extra="ignore")

    STAND_INS: ClassVar[dict[str, Any]] = {}
    """Valid values for required settings, used only to judge the other rules of a group
    whose required setting is missing or bad (never as a setting's value)."""

    def problems(self) -> list[str]:
        """Rules across this group's settings: one line per problem, naming the setting."""
        return []


def env_name(field: str) -> str:
    return field.upper()


def error_lines(exc: ValidationError) -> list[str]:
    """One line per bad setting: ``NAME: what is wrong``. Values are never echoed."""
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error.get("loc") or ()
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "required (not set)"
        lines.append(f"{env_name(str(loc[0]))}: {message}" if loc else message)
    return list(dict.fromkeys(lines))


def check_name(value: str) -> str:
    """An exchange or queue name the service may declare."""
    if not value or len(value.encode()) > 255:
        raise ValueError("must be 1..255 bytes")
    if value.startswith("amq."):
        raise ValueError("must not start with 'amq.' (reserved by RabbitMQ)")
    return value
