"""Renders the chart offline (Helm v4 through helm-python-sdk) and picks manifests out of the
result: what every chart test module shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "phonet-producer"
KUBE = "1.30"
PRODUCTION = helm.values_from_yaml((CHART / "ci" / "production-values.yaml").read_text())
API_KEY, AMQP_URL = "S3Bvc2eNimuQmQWyJt5aEvNjbND1fz0X", "amqp://producer:hunter2@rabbitmq:5672/"
INLINE: dict[str, Any] = {
    "phonet": {"domain": "acme.phonet.com.ua", "subscribers": ["001"], "apiKey": API_KEY},
    "amqp": {"url": AMQP_URL},
}
Kinds = dict[str, list[dict[str, Any]]]


def spool(persistent: bool, replicas: int, **persistence: Any) -> dict[str, Any]:
    """INLINE with the spool on (a claim per replica when ``persistent``, else an emptyDir)."""
    return {
        **INLINE,
        "replicaCount": replicas,
        "spool": {"enabled": True, "persistence": {"enabled": persistent, **persistence}},
    }


# Every workload mode: the kind follows spool persistence, the replica count shapes the rest.
MODES = [
    pytest.param(
        spool(persistent, replicas), id=f"{'claims' if persistent else 'emptydir'}-x{replicas}"
    )
    for persistent in (True, False)
    for replicas in (1, 3)
]

SETS = [
    pytest.param({}, id="defaults"),
    pytest.param(INLINE, id="inline-credentials"),
    *(
        pytest.param(helm.values_from_yaml(path.read_text()), id=path.stem)
        for path in sorted((CHART / "ci").glob("*-values.yaml"))
    ),
    *MODES,
]


def render(values: dict[str, Any] | None = None) -> Kinds:
    """Rendered manifests by kind (NOTES.txt under the key ``NOTES``)."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name="phonet", namespace="telephony")
    kinds: Kinds = {}
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            kinds["NOTES"] = [{"text": text}]
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def one(kinds: Kinds, kind: str, *, hook: bool = False) -> dict[str, Any]:
    docs = [
        d
        for d in kinds[kind]
        if ("helm.sh/hook" in (d["metadata"].get("annotations") or {})) is hook
    ]
    assert len(docs) == 1, (kind, len(docs))
    return docs[0]


def workload(kinds: Kinds) -> dict[str, Any]:
    """The one Deployment or StatefulSet that runs the producer (never both)."""
    found = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def pod_spec(kinds: Kinds) -> dict[str, Any]:
    return workload(kinds)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(kinds: Kinds) -> dict[str, Any]:
    (c,) = pod_spec(kinds)["containers"]
    return c  # type: ignore[no-any-return]


def volumes(kinds: Kinds) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(kinds)["volumes"]}


def metrics_service(kinds: Kinds) -> dict[str, Any]:
    """The Service of the metrics port (not the StatefulSet's headless one)."""
    (service,) = [s for s in kinds["Service"] if s["spec"].get("clusterIP") != "None"]
    return service


def settings_map(kinds: Kinds) -> dict[str, str]:
    """The settings ConfigMap's data (not the dashboard's)."""
    (config,) = [c for c in kinds["ConfigMap"] if not c["metadata"]["name"].endswith("-dashboard")]
    return config["data"]  # type: ignore[no-any-return]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector selects these labels (the chart's use matchLabels only)."""
    assert set(selector) == {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()  # type: ignore[no-any-return]
