"""The settings, in one group per feature, read from the environment once at start.

Every setting is an environment variable named as its field upper-cased (``phonet_domain``
is ``PHONET_DOMAIN``). Each feature declares its group beside its code and is given only
that group: :class:`~producer.phonet.settings.PhonetSettings`,
:class:`~producer.broker.settings.BrokerSettings`,
:class:`~producer.publish.settings.PublishSettings`,
:class:`~producer.click2call.settings.Click2CallSettings`,
:class:`~producer.replicas.settings.ReplicaSettings`,
:class:`~producer.subscribers.settings.SubscriberSettings`, and the process's own
:class:`ServiceSettings` here. :func:`load_settings` builds them all and raises
:class:`~producer.core.errors.ConfigError` with one line per problem, every problem of
every group at once, each naming its variable, values never echoed. The README's tables
are checked against these fields (``tests/unit/producer/app/test_settings.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from producer.broker.settings import DEFAULT_AMQP_URL, BrokerSettings
from producer.click2call.settings import Click2CallSettings
from producer.core.errors import ConfigError
from producer.core.settings import Group, Lower, Upper, error_lines
from producer.phonet.settings import PhonetSettings
from producer.publish.settings import PublishSettings
from producer.replicas.settings import ReplicaSettings
from producer.subscribers.settings import SubscriberSettings

__all__ = ["DEFAULT_AMQP_URL", "RETIRED", "ServiceSettings", "Settings", "load_settings"]


class ServiceSettings(Group):
    """The process: its HTTP endpoints, logs, event loop and shutdown."""

    metrics_host: str = Field("0.0.0.0", description="address of /metrics /healthz /readyz")
    metrics_port: int = Field(9120, ge=0, le=65535, description="port of the same (0: any free)")
    phonet_metrics_per_subscriber: Annotated[Literal["connected", "all", "off"], Lower] = Field(
        "connected", description="per-subscriber series: `connected`, `all` or `off`"
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Upper] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    log_format: Annotated[Literal["json", "text"], Lower] = Field(
        "json", description="`json` or `text`"
    )
    phonet_event_loop: Annotated[Literal["auto", "asyncio", "uvloop"], Lower] = Field(
        "auto", description="`auto` (uvloop when installed), `asyncio` or `uvloop`"
    )
    phonet_shutdown_timeout: float = Field(
        8.0, gt=0, description="seconds SIGTERM may spend flushing before exit"
    )


RETIRED = {
    "PHONET_PING_TIMEOUT": "it is PHONET_PING_INTERVAL",
    "PHONET_HEALTHY_AFTER": "it is half PHONET_PING_INTERVAL",
    "PHONET_AUTH_RETRY_DELAY": "it is PHONET_RECONNECT_MAX_DELAY",
    "PHONET_PRESENCE_TIMEOUT": "it is 4 x PHONET_PRESENCE_INTERVAL",
    "PHONET_STANDBY_WINDOW": "it is 20 x PHONET_PRESENCE_INTERVAL",
    "PHONET_HANDOVER_GRACE": "it is 10 x PHONET_PRESENCE_INTERVAL",
    "PHONET_OPEN_TIMEOUT": "it is 10 s",
    "PHONET_CLICK2CALL_PREFETCH": "it is 32",
    "PHONET_PUBLISH_WINDOW": "it is 1024",
}
"""Settings of earlier versions that are now derived or fixed: set, they are ignored with
a warning at start (not an error: an old ConfigMap keeps working)."""


@dataclass(frozen=True)
class Settings:
    """Every group. The app hands each feature its own; ``settings.<field>`` reads a field
    of whichever group has it (for the app's wiring and for tests)."""

    phonet: PhonetSettings
    broker: BrokerSettings
    publish: PublishSettings
    click2call: Click2CallSettings
    replicas: ReplicaSettings
    roster: SubscriberSettings
    service: ServiceSettings

    def __getattr__(self, name: str) -> Any:
        for group in self.groups():
            if name in type(group).model_fields or hasattr(type(group), name):
                return getattr(group, name)
        raise AttributeError(name)

    def groups(self) -> tuple[Group, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def problems(self) -> list[str]:
        """Rules across groups."""
        if self.publish.phonet_buffer_max_bytes < 2 * self.phonet.phonet_max_frame_bytes:
            return ["PHONET_BUFFER_MAX_BYTES: must be at least twice PHONET_MAX_FRAME_BYTES"]
        return []

    @staticmethod
    def field_names() -> dict[str, type[BaseModel]]:
        """Every setting's field name and the group that holds it."""
        return {name: group for group in _GROUPS.values() for name in group.model_fields}


_GROUPS: dict[str, type[Group]] = {
    "phonet": PhonetSettings,
    "broker": BrokerSettings,
    "publish": PublishSettings,
    "click2call": Click2CallSettings,
    "replicas": ReplicaSettings,
    "roster": SubscriberSettings,
    "service": ServiceSettings,
}


def retired_in_environment() -> list[str]:
    """One warning line per retired setting that is set in the environment."""
    return [
        f"{name} is no longer a setting ({why}); it is ignored"
        for name, why in RETIRED.items()
        if name in {key.upper() for key in os.environ}
    ]


def _rules_beside(group: type[Group], given: dict[str, Any], exc: ValidationError) -> list[str]:
    """The group's rules judged with each bad value replaced by a stand-in (its default, or
    the group's ``STAND_INS`` for a required one), so a first run with nothing set hears of
    every missing setting at once. Rules about the stand-ins themselves are not told."""
    bad = {str(error["loc"][0]) for error in exc.errors() if error.get("loc")}
    stand_ins: dict[str, Any] = {}
    for name in bad:
        field = group.model_fields.get(name)
        if field is None:
            return []
        stand_ins[name] = group.STAND_INS.get(name) if field.is_required() else field.default
    try:
        rules = group(**{**given, **stand_ins}).problems()
    except ValidationError:
        return []
    return [line for line in rules if line.split(":", 1)[0].lower() not in bad]


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (``overrides``, by field name, win) and validate every group:
    every bad value at once, and the rules between settings of each group whose values
    parse (a rule cannot be judged on a value that does not).

    Raises:
        ConfigError: one line per problem, each naming its variable, all at once.
        TypeError: an override that is no setting (a typo in a caller).
    """
    known = Settings.field_names()
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"not settings: {', '.join(unknown)}")
    built: dict[str, Group] = {}
    lines: list[str] = []
    for key, group in _GROUPS.items():
        mine = {name: value for name, value in overrides.items() if name in group.model_fields}
        try:
            built[key] = group(**mine)
        except ValidationError as exc:
            lines.extend(error_lines(exc))
            lines.extend(_rules_beside(group, mine, exc))
            continue
        lines.extend(built[key].problems())
    if len(built) == len(_GROUPS):
        lines.extend(Settings(**built).problems())  # type: ignore[arg-type]
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))
    phonet = built["phonet"]
    assert isinstance(phonet, PhonetSettings)
    built["phonet"] = phonet.with_key_read()
    return Settings(**built)  # type: ignore[arg-type]
