"""Which workload runs the producer, and what follows from it (issue 21).

One producer per spool directory (a lock; a second producer stops at start), so a spool on
persistent volumes needs a claim per replica: a StatefulSet with volumeClaimTemplates, its
headless Service, pods that keep their name (the replica id) and their claim across restarts.
Without persistence, a Deployment that starts the new pod first."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.rendering import (
    INLINE,
    MODES,
    container,
    metrics_service,
    one,
    render,
    selects,
    settings_map,
    spool,
    volumes,
    workload,
)

FULLNAME = "phonet-phonet-producer"
HEADLESS = f"{FULLNAME}-headless"
SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


# --- the kind ------------------------------------------------------------------------------
@pytest.mark.parametrize("replicas", [1, 3])
def test_a_persistent_spool_runs_a_statefulset_with_a_claim_per_replica(replicas: int) -> None:
    kinds = render(spool(True, replicas))
    assert "Deployment" not in kinds
    assert "PersistentVolumeClaim" not in kinds  # no claim shared by the replicas
    spec = one(kinds, "StatefulSet")["spec"]
    assert spec["replicas"] == replicas
    (claim,) = spec["volumeClaimTemplates"]  # Kubernetes makes spool-<pod name> per replica
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
    # No pod volume of that name: the mount resolves to the replica's own claim.
    assert "spool" not in volumes(kinds)
    mounts = {m["name"]: m for m in container(kinds)["volumeMounts"]}
    assert mounts["spool"] == {"name": "spool", "mountPath": "/var/lib/phonet-producer/spool"}
    assert settings_map(kinds)["PHONET_SPOOL_DIR"] == mounts["spool"]["mountPath"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Retain",
    }


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({**INLINE, "replicaCount": 1}, id="no-spool-x1"),
        pytest.param({**INLINE, "replicaCount": 3}, id="no-spool-x3"),
        pytest.param(spool(False, 1), id="emptydir-x1"),
        pytest.param(spool(False, 3), id="emptydir-x3"),
    ],
)
def test_without_persistence_a_deployment_starts_the_new_pod_first(values: dict[str, Any]) -> None:
    kinds = render(values)
    assert "StatefulSet" not in kinds
    assert "PersistentVolumeClaim" not in kinds
    assert [s["metadata"]["name"] for s in kinds["Service"]] == [FULLNAME]
    spec = one(kinds, "Deployment")["spec"]
    assert spec["replicas"] == values["replicaCount"]
    assert spec["strategy"] == SURGE
    if "spool" in values:  # each pod's own emptyDir: the surge pod waits for nobody's volume
        assert volumes(kinds)["spool"] == {"name": "spool", "emptyDir": {"sizeLimit": "512Mi"}}
        mounts = {m["name"]: m["mountPath"] for m in container(kinds)["volumeMounts"]}
        assert mounts["spool"] == settings_map(kinds)["PHONET_SPOOL_DIR"]
    else:
        assert "spool" not in volumes(kinds)
        assert "PHONET_SPOOL_DIR" not in settings_map(kinds)


def test_the_statefulset_has_a_headless_service_and_pods_are_scraped_once() -> None:
    kinds = render({**spool(True, 3), "serviceMonitor": {"enabled": True}})
    statefulset = one(kinds, "StatefulSet")
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    assert set(services) == {FULLNAME, HEADLESS}
    assert statefulset["spec"]["serviceName"] == HEADLESS
    headless = services[HEADLESS]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for service in services.values():
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    monitor = one(kinds, "ServiceMonitor")["spec"]
    scraped = [
        n for n, s in services.items() if selects(monitor["selector"], s["metadata"]["labels"])
    ]
    assert scraped == [FULLNAME]


def test_claim_templates_do_not_change_with_the_chart_or_everyday_values() -> None:
    """Kubernetes refuses any change to a StatefulSet's volumeClaimTemplates: one that moved
    with the chart version or an unrelated value would fail every `helm upgrade`."""
    before = one(render(spool(True, 3)), "StatefulSet")["spec"]["volumeClaimTemplates"]
    after = render(
        {
            **spool(True, 5, retentionPolicy={"whenScaled": "Delete"}),
            "image": {"tag": "9.9.9"},
            "logLevel": "DEBUG",
            "podLabels": {"team": "telephony"},
        }
    )
    assert one(after, "StatefulSet")["spec"]["volumeClaimTemplates"] == before
    labels = before[0]["metadata"]["labels"]
    assert "helm.sh/chart" not in labels
    assert "app.kubernetes.io/version" not in labels
    assert labels["app.kubernetes.io/instance"] == "phonet"


def test_an_existing_claim_serves_one_replica() -> None:
    kinds = render(spool(True, 1, existingClaim="phonet-spool"))
    spec = one(kinds, "StatefulSet")["spec"]  # stopped before its successor starts: one lock
    assert "volumeClaimTemplates" not in spec
    assert volumes(kinds)["spool"]["persistentVolumeClaim"] == {"claimName": "phonet-spool"}


def test_a_statefulset_name_of_52_characters_is_accepted() -> None:
    kinds = render({**spool(True, 3), "fullnameOverride": "x" * 52})
    assert one(kinds, "StatefulSet")["metadata"]["name"] == "x" * 52
    assert render({**spool(False, 3), "fullnameOverride": "x" * 63})["Deployment"]  # no hash


def test_the_retention_policy_reaches_the_statefulset() -> None:
    kinds = render(
        spool(True, 3, retentionPolicy={"whenScaled": "Delete", "whenDeleted": "Delete"})
    )
    assert one(kinds, "StatefulSet")["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Delete",
        "whenDeleted": "Delete",
    }


# --- what both kinds share -------------------------------------------------------------------
@pytest.mark.parametrize("values", MODES)
def test_the_replica_id_is_the_pod_name(values: dict[str, Any]) -> None:
    env = {e["name"]: e for e in container(render(values))["env"]}
    assert env["PHONET_REPLICA_ID"] == {
        "name": "PHONET_REPLICA_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }


@pytest.mark.parametrize("values", MODES)
def test_the_disruption_budget_and_selectors_cover_the_producer_pods_only(
    values: dict[str, Any],
) -> None:
    """The `helm test` pod has no controller: a PodDisruptionBudget selecting it refuses
    evictions ("found no controller ref"), and a failed test pod is kept."""
    kinds = render(
        {**values, "podDisruptionBudget": {"enabled": True}, "networkPolicy": {"enabled": True}}
    )
    spec = workload(kinds)["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    test_pod_labels = one(kinds, "Pod", hook=True)["metadata"]["labels"]
    budget = one(kinds, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    selectors = {
        "PodDisruptionBudget": budget["selector"],
        "workload": spec["selector"],
        "NetworkPolicy": one(kinds, "NetworkPolicy")["spec"]["podSelector"],
        "Service": {"matchLabels": metrics_service(kinds)["spec"]["selector"]},
    }
    for name, selector in selectors.items():
        assert selects(selector, pod_labels), name
        assert not selects(selector, test_pod_labels), name


@pytest.mark.parametrize("values", MODES)
def test_the_helm_test_reaches_the_metrics_service(values: dict[str, Any]) -> None:
    kinds = render(values)
    script = " ".join(one(kinds, "Pod", hook=True)["spec"]["containers"][0]["command"])
    assert f"http://{metrics_service(kinds)['metadata']['name']}:9120/readyz" in script


def test_notes_say_where_the_spool_is_and_what_scaling_down_does() -> None:
    notes = render(spool(True, 3))["NOTES"][0]["text"]
    assert f"uses\nthe claim spool-{FULLNAME}-N" in notes
    assert "Scaling down keeps the removed replicas' claims" in notes
    assert "unconfirmed events stay in the spool" in notes  # the producer's own log line
    assert "successor starts" not in notes
    deleting = render(spool(True, 3, retentionPolicy={"whenScaled": "Delete"}))
    assert "Scaling down DELETES the removed replicas' claims" in deleting["NOTES"][0]["text"]
    single = render(spool(True, 1))["NOTES"][0]["text"]
    assert "a rollout stops the pod before its successor starts" in single
    assert "replicaCount=2 or more" in single


# --- what render refuses ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            spool(True, 3, existingClaim="phonet-spool"),
            "spool.persistence.existingClaim (phonet-spool) is one claim and replicaCount is 3:"
            " each replica needs a spool of its own",
            id="existing-claim-shared",
        ),
        pytest.param(
            {**spool(True, 3), "fullnameOverride": "x" * 53},
            f"the StatefulSet's name {'x' * 53} has 53 characters, more than 52",
            id="statefulset-name-too-long",
        ),
        pytest.param(
            {**INLINE, "extraEnv": [{"name": "PHONET_SHUTDOWN_TIMEOUT", "value": "60"}]},
            "extraEnv sets PHONET_SHUTDOWN_TIMEOUT: set shutdownTimeout instead",
            id="extra-env-shutdown-timeout",
        ),
        pytest.param(
            {**spool(True, 3), "extraEnv": [{"name": "PHONET_SPOOL_DIR", "value": "/tmp/s"}]},
            "extraEnv sets PHONET_SPOOL_DIR: set spool.enabled instead",
            id="extra-env-spool-dir",
        ),
        pytest.param(
            {**INLINE, "extraEnv": [{"name": "PHONET_REPLICA_ID", "value": "one"}]},
            "extraEnv sets PHONET_REPLICA_ID: the chart sets it to the pod name",
            id="extra-env-replica-id",
        ),
    ],
)
def test_render_refuses(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as info:
        render(values)
    assert message in str(info.value)
