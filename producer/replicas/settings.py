"""The replicas' settings. One interval sets the pace; the rest follows from it.

A replica not heard for four heartbeats is gone (2 s by default); a standby keeps twenty
heartbeats' worth of events (10 s: twice what a takeover takes to notice and act, with room
for what the dead owner had not got confirmed); a replica keeps publishing what it handed
over for ten heartbeats (5 s: the new owner says it is warm in a heartbeat, so at least two
of them are needed).
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal

from pydantic import Field

from producer.core.settings import Group, Lower

TIMEOUT_BEATS = 4
WINDOW_BEATS = 20
GRACE_BEATS = 10


class ReplicaSettings(Group):
    """This replica's name and how replicas share the subscribers."""

    phonet_replica_id: str = Field(
        "",
        max_length=64,
        description="this replica's name in logs, /readyz and the broker (default: the pod"
        " name in Kubernetes, else host name and process id)",
    )
    phonet_standby: Annotated[Literal["hot", "off"], Lower] = Field(
        "hot",
        description="with several replicas: `hot` (a second replica keeps a socket per"
        " subscriber too) or `off`",
    )
    phonet_presence_interval: float = Field(
        0.5,
        gt=0,
        description="seconds between a replica's heartbeats; a replica not heard for four is"
        " gone, a standby keeps twenty of them of events, a handover lasts ten at least",
    )

    @property
    def presence_timeout(self) -> float:
        return TIMEOUT_BEATS * self.phonet_presence_interval

    @property
    def standby_window(self) -> float:
        return WINDOW_BEATS * self.phonet_presence_interval

    @property
    def handover_grace(self) -> float:
        return GRACE_BEATS * self.phonet_presence_interval

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
