"""Tests of charts/gha-runner-scale-set-rs rendered by Helm's own engine.

helm-python-sdk binds libhelm_c (Helm v4's Go SDK behind a C ABI), so rendering, schema
validation and lint are Helm's, with no helm binary and no cluster. Rendered core objects
are validated against the Kubernetes OpenAPI schemas by kubernetes-validate (strict: unknown
fields fail); the AutoscalingRunnerSet and PodMonitor are custom resources, so their
structure is asserted here and the pod templates they embed are validated as core
PodTemplates.

Run: tests/helm/run.sh, or `pytest tests/helm` inside a venv holding helm-python-sdk,
kubernetes-validate, pytest and pyyaml.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gha-runner-scale-set-rs"
VALUES = Path(__file__).resolve().parent / "values"
ARC_SWAP_SNIPPET = ROOT / "deploy" / "arc-gha-runner-scale-set-values.yaml"

# Kubernetes schema version to validate against (kubernetes-validate ships 1.25..1.29; the
# ARC controller supports the versions Kubernetes itself supports).
KUBE_VERSION = "1.29"
RELEASE = "arc-runner-set"
NAMESPACE = "arc-runners"
CORE_KINDS = {"Secret", "ServiceAccount", "Role", "RoleBinding"}
CUSTOM_KINDS = {"AutoscalingRunnerSet", "PodMonitor"}
VALUES_FILES = sorted(p.name for p in VALUES.glob("*.yaml"))

# Fields of AutoscalingRunnerSetSpec (ARC apis/actions.github.com/v1alpha1).
ARS_SPEC_FIELDS = {
    "githubConfigUrl", "githubConfigSecret", "runnerGroup", "runnerScaleSetName",
    "runnerScaleSetLabels", "proxy", "githubServerTLS", "vaultConfig", "template",
    "autoscalingListener", "listenerMetrics", "listenerTemplate",
    "listenerServiceAccountMetadata", "listenerRoleMetadata", "listenerRoleBindingMetadata",
    "listenerConfigSecretMetadata", "ephemeralRunnerSetMetadata", "ephemeralRunnerMetadata",
    "ephemeralRunnerConfigSecretMetadata", "maxRunners", "minRunners",
}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES / name).read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """base with override merged in; non-dict values replace, a None value deletes."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(chart: helm.Chart, values: dict[str, Any], release: str = RELEASE) -> list[dict]:
    manifests = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    docs: list[dict] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def listener_container(ars: dict) -> dict:
    containers = ars["spec"]["listenerTemplate"]["spec"]["containers"]
    named = [c for c in containers if c["name"] == "listener"]
    assert len(named) == 1, containers
    # ARC merges template containers by name; ours must come first so that its index in the
    # template does not matter, but the name must be exactly "listener".
    assert containers[0]["name"] == "listener"
    return named[0]


def env_map(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def validate_pod_template(template: dict, what: str) -> None:
    """Validate an embedded PodTemplateSpec as the core PodTemplate that wraps one."""
    wrapper = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "embedded"},
        "template": template,
    }
    try:
        kubernetes_validate.validate(wrapper, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path)
        pytest.fail(f"{what}: {path}: {err.message}")


# ---------------------------------------------------------------- lint and schema validity


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_is_clean_in_strict_mode(values_file: str) -> None:
    report = helm.lint(CHART, load_values(values_file), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_rendered_object_is_valid(chart: helm.Chart, values_file: str) -> None:
    docs = render(chart, load_values(values_file))
    kinds = {d["kind"] for d in docs}
    assert kinds <= CORE_KINDS | CUSTOM_KINDS, kinds
    for doc in docs:
        name = f'{doc["kind"]}/{doc["metadata"]["name"]}'
        if doc["kind"] in CORE_KINDS:
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = ".".join(str(p) for p in err.path)
                pytest.fail(f"{values_file}: {name}: {path}: {err.message}")
        # Every object sits in the target namespace and carries the chart's labels.
        expected_ns = values_file == "existing-secret.yaml" and "runners" or NAMESPACE
        if doc["kind"] != "PodMonitor":
            assert doc["metadata"]["namespace"] == expected_ns, name
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "gha-rs"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    ars = one(docs, "AutoscalingRunnerSet")
    validate_pod_template(ars["spec"]["listenerTemplate"], f"{values_file}: listenerTemplate")
    validate_pod_template(ars["spec"]["template"], f"{values_file}: template")


def test_core_kinds_are_all_covered(chart: helm.Chart) -> None:
    seen: set[str] = set()
    for values_file in VALUES_FILES:
        seen |= {d["kind"] for d in render(chart, load_values(values_file))}
    assert CORE_KINDS | CUSTOM_KINDS <= seen


# ---------------------------------------------------------------- the AutoscalingRunnerSet


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_autoscaling_runner_set_structure(chart: helm.Chart, values_file: str) -> None:
    values = load_values(values_file)
    docs = render(chart, values)
    ars = one(docs, "AutoscalingRunnerSet")
    assert ars["apiVersion"] == "actions.github.com/v1alpha1"
    spec = ars["spec"]
    assert set(spec) <= ARS_SPEC_FIELDS, set(spec) - ARS_SPEC_FIELDS
    assert spec["githubConfigUrl"] == values["githubConfigUrl"].rstrip("/")
    assert isinstance(spec["githubConfigSecret"], str) and spec["githubConfigSecret"]
    for key in ("minRunners", "maxRunners"):
        if values.get(key) is None:
            assert key not in spec
        else:
            assert spec[key] == values[key] and isinstance(spec[key], int)
    # The object name is the scale set name with "_" made DNS-safe, at most 45 characters.
    scale_set = values.get("runnerScaleSetName") or RELEASE
    assert ars["metadata"]["name"] == scale_set.replace("_", "-")
    assert spec.get("runnerScaleSetName", scale_set) == scale_set
    # The controller deletes sets whose version label is not its own major.minor.
    version = values["controllerVersion"].lstrip("v")
    assert ars["metadata"]["labels"]["app.kubernetes.io/version"] == version
    # Cleanup annotations name objects this release really renders (the controller removes
    # their finalizers by these names when the set is deleted).
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    annotations = ars["metadata"]["annotations"]
    cleanup = {
        "actions.github.com/cleanup-manager-role-name": "Role",
        "actions.github.com/cleanup-manager-role-binding": "RoleBinding",
        "actions.github.com/cleanup-github-secret-name": "Secret",
        "actions.github.com/cleanup-no-permission-service-account-name": "ServiceAccount",
    }
    for key, kind in cleanup.items():
        if key in annotations:
            assert (kind, annotations[key]) in rendered, key
    for doc in docs:
        if doc.get("metadata", {}).get("finalizers"):
            assert doc["metadata"]["name"] in annotations.values(), doc["metadata"]["name"]
    assert len(annotations["actions.github.com/values-hash"]) == 63
    # Runner template: a runner container, restartPolicy and a service account always set.
    runner_spec = spec["template"]["spec"]
    assert any(c["name"] == "runner" for c in runner_spec["containers"])
    assert runner_spec["restartPolicy"] == "Never"
    assert runner_spec["serviceAccountName"]


def test_listener_container_runs_our_image_hardened(chart: helm.Chart) -> None:
    ars = one(render(chart, load_values("pat.yaml")), "AutoscalingRunnerSet")
    container = listener_container(ars)
    app_version = chart.metadata["appVersion"]
    assert container["image"] == f"ghcr.io/gha-listener-rs/ghalistener:{app_version}"
    assert container["command"] == ["/ghalistener"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    # The controller adds LISTENER_CONFIG_PATH, the config volume and the `metrics` port
    # itself; repeating them here would duplicate them in the pod.
    assert "LISTENER_CONFIG_PATH" not in env_map(container)
    assert "ports" not in container and "volumeMounts" not in container
    assert "args" not in container
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["limits"]["memory"] == "128Mi"
    pod = ars["spec"]["listenerTemplate"]["spec"]
    # ARC copies terminationGracePeriodSeconds from the template (nil would mean 30 s).
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_listener_otel_settings_are_env_vars(chart: helm.Chart) -> None:
    container = listener_container(one(render(chart, load_values("pat.yaml")), "AutoscalingRunnerSet"))
    assert env_map(container) == {
        "OTEL_ENDPOINT": "otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "GHALISTENER_OTEL_ID_SCHEME": "runner-contract",
    }
    # Environment values must be strings for the Kubernetes API.
    assert all(isinstance(e["value"], str) for e in container["env"])


def test_no_otel_endpoint_means_no_otel_env(chart: helm.Chart) -> None:
    container = listener_container(one(render(chart, load_values("minimal.yaml")), "AutoscalingRunnerSet"))
    assert "env" not in container
    https = deep_merge(load_values("minimal.yaml"), {"otel": {"endpoint": "https://otel.example.com"}})
    env = env_map(listener_container(one(render(chart, https), "AutoscalingRunnerSet")))
    assert env == {
        "OTEL_ENDPOINT": "https://otel.example.com",
        "OTEL_EXPORTER_OTLP_INSECURE": "false",
        "GHALISTENER_OTEL_ID_SCHEME": "otel-explorer",
    }


def test_probes_use_readyz_for_readiness_and_healthz_for_liveness_when_enabled(chart: helm.Chart) -> None:
    off = listener_container(one(render(chart, load_values("pat.yaml")), "AutoscalingRunnerSet"))
    assert "readinessProbe" not in off and "livenessProbe" not in off
    values = deep_merge(load_values("existing-secret.yaml"), {"listener": {"probes": {"enabled": True}}})
    ars = one(render(chart, values), "AutoscalingRunnerSet")
    container = listener_container(ars)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9102}
    # A degraded listener is not ready but alive: liveness must not restart it.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9102}
    assert container["livenessProbe"]["failureThreshold"] == 4
    validate_pod_template(ars["spec"]["listenerTemplate"], "listenerTemplate with probes")


def test_scrape_annotations_follow_metrics_values(chart: helm.Chart) -> None:
    meta = one(render(chart, load_values("pat.yaml")), "AutoscalingRunnerSet")["spec"]["listenerTemplate"]["metadata"]
    assert meta["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    minimal = one(render(chart, load_values("minimal.yaml")), "AutoscalingRunnerSet")
    assert "metadata" not in minimal["spec"]["listenerTemplate"]
    custom = one(render(chart, load_values("existing-secret.yaml")), "AutoscalingRunnerSet")
    annotations = custom["spec"]["listenerTemplate"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9102"
    assert annotations["prometheus.io/path"] == "/custom-metrics"
    assert annotations["example.com/team"] == "ci"


def test_pod_monitor_selects_the_listener_pod(chart: helm.Chart) -> None:
    docs = render(chart, load_values("pat.yaml"))
    monitor = one(docs, "PodMonitor")
    ars = one(docs, "AutoscalingRunnerSet")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The labels ARC's controller puts on the listener pod, in the controller's namespace.
    assert monitor["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/component": "runner-scale-set-listener",
            "actions.github.com/scale-set-name": ars["metadata"]["name"],
            "actions.github.com/scale-set-namespace": NAMESPACE,
        }
    }
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["arc-systems"]}
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    assert by_kind(render(chart, load_values("minimal.yaml")), "PodMonitor") == []


def test_pat_secret_holds_only_the_token(chart: helm.Chart) -> None:
    docs = render(chart, load_values("pat.yaml"))
    secret = one(docs, "Secret")
    ars = one(docs, "AutoscalingRunnerSet")
    assert ars["spec"]["githubConfigSecret"] == secret["metadata"]["name"]
    assert secret["metadata"]["finalizers"] == ["actions.github.com/cleanup-protection"]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"github_token": "ghp_exampleexampleexampleexample0000"}


def test_app_secret_and_listener_metrics(chart: helm.Chart) -> None:
    values = load_values("app.yaml")
    docs = render(chart, values)
    secret = one(docs, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # The default empty github_token is dropped; the numeric installation id is a string.
    assert set(decoded) == {"github_app_id", "github_app_installation_id", "github_app_private_key"}
    assert decoded["github_app_id"] == "123456"
    assert decoded["github_app_installation_id"] == "654321"
    assert decoded["github_app_private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    ars = one(docs, "AutoscalingRunnerSet")
    assert ars["spec"]["listenerMetrics"] == values["listenerMetrics"]
    assert ars["metadata"]["labels"]["app.kubernetes.io/version"] == "0.14.1"


def test_existing_secret_user_template_and_overrides(chart: helm.Chart) -> None:
    docs = render(chart, load_values("existing-secret.yaml"))
    assert by_kind(docs, "Secret") == []
    # The runner template names its own service account: no no-permission one.
    assert by_kind(docs, "ServiceAccount") == []
    ars = one(docs, "AutoscalingRunnerSet")
    assert ars["metadata"]["name"] == "acme-big-runners"
    assert ars["metadata"]["namespace"] == "runners"
    assert ars["spec"]["runnerScaleSetName"] == "acme_big_runners"
    assert ars["spec"]["githubConfigSecret"] == "acme-github-credentials"
    assert (ars["spec"]["minRunners"], ars["spec"]["maxRunners"]) == (0, 0)
    annotations = ars["metadata"]["annotations"]
    assert "actions.github.com/cleanup-github-secret-name" not in annotations
    assert "actions.github.com/cleanup-no-permission-service-account-name" not in annotations
    assert ars["spec"]["proxy"]["https"]["credentialSecretRef"] == "proxy-auth"
    assert ars["spec"]["githubServerTLS"]["certificateFrom"]["configMapKeyRef"]["name"] == "ghes-ca"
    role = one(docs, "Role")
    assert any(r["resources"] == ["configmaps"] for r in role["rules"])

    template = ars["spec"]["listenerTemplate"]
    containers = template["spec"]["containers"]
    assert [c["name"] for c in containers] == ["listener", "log-shipper"]
    listener = containers[0]
    assert listener["image"] == (
        "registry.example.com/mirror/ghalistener@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert listener["command"] == ["/ghalistener"]
    # Chart env first, then the user's listenerTemplate env, appended (ARC appends too).
    assert [e["name"] for e in listener["env"]] == ["RUST_LOG", "RUST_BACKTRACE"]
    # Fields the user's listener container sets override the chart's; others stay.
    assert listener["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert listener["securityContext"]["readOnlyRootFilesystem"] is True
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    assert template["spec"]["imagePullSecrets"] == [{"name": "mirror-pull"}]
    assert template["metadata"]["labels"] == {"example.com/tier": "infra"}
    runner = ars["spec"]["template"]
    assert runner["spec"]["serviceAccountName"] == "runner-sa"
    assert runner["metadata"]["labels"] == {"example.com/pool": "big"}


def test_key_vault_becomes_vault_config_and_mounts_the_certificate(chart: helm.Chart) -> None:
    docs = render(chart, load_values("key-vault.yaml"))
    # The credentials are in the vault: no GitHub Secret is rendered.
    assert by_kind(docs, "Secret") == []
    ars = one(docs, "AutoscalingRunnerSet")
    assert ars["spec"]["githubConfigSecret"] == "arc-github-credentials"
    vault = ars["spec"]["vaultConfig"]
    assert vault["type"] == "azure_key_vault"
    assert vault["azureKeyVault"] == {
        "url": "https://acme-vault.vault.azure.net",
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "clientId": "0f2a4c1e-1111-2222-3333-444455556666",
        "certificatePath": "/etc/key-vault/cert.pem",
    }
    assert vault["proxy"]["https"]["url"] == "http://proxy.example.com:3128"
    template = ars["spec"]["listenerTemplate"]
    mounts = listener_container(ars)["volumeMounts"]
    assert {"name": "key-vault-cert", "mountPath": "/etc/key-vault", "readOnly": True} in mounts
    assert template["spec"]["volumes"][0]["secret"]["secretName"] == "arc-key-vault-cert"
    validate_pod_template(template, "listenerTemplate")


def test_key_vault_workload_identity_labels_the_listener_pod(chart: helm.Chart) -> None:
    values = deep_merge(load_values("key-vault.yaml"), {
        "keyVault": {"azureKeyVault": {"certificatePath": ""}},
        "listenerTemplate": None,
    })
    values["listenerTemplate"] = {"metadata": {"labels": {"azure.workload.identity/use": "true"}}}
    ars = one(render(chart, values), "AutoscalingRunnerSet")
    assert ars["spec"]["vaultConfig"]["azureKeyVault"]["certificatePath"] == ""
    labels = ars["spec"]["listenerTemplate"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"


def test_manager_role_binding_targets_the_controller(chart: helm.Chart) -> None:
    docs = render(chart, load_values("pat.yaml"))
    binding = one(docs, "RoleBinding")
    role = one(docs, "Role")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "arc-gha-rs-controller", "namespace": "arc-systems"}
    ]


def test_user_labels_never_override_reserved_ones(chart: helm.Chart) -> None:
    values = deep_merge(load_values("minimal.yaml"), {
        "labels": {
            "app.kubernetes.io/version": "9.9.9",
            "actions.github.com/scale-set-name": "other",
            "app.kubernetes.io/component": "x",
            "team": "ci",
        },
        "annotations": {"actions.github.com/values-hash": "forged", "owner": "me"},
    })
    for doc in render(chart, values):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/version"] == "0.14.2"
        assert labels["actions.github.com/scale-set-name"] == RELEASE
        assert labels["team"] == "ci"
        assert doc["metadata"]["annotations"]["owner"] == "me"
    ars = one(render(chart, values), "AutoscalingRunnerSet")
    assert ars["metadata"]["annotations"]["actions.github.com/values-hash"] != "forged"


def test_arc_chart_swap_snippet_is_a_valid_listener_template() -> None:
    """deploy/arc-gha-runner-scale-set-values.yaml: for ARC's own chart, listener only."""
    values = yaml.safe_load(ARC_SWAP_SNIPPET.read_text())
    assert set(values) <= {"listenerTemplate", "listenerMetrics"}, set(values)
    template = values["listenerTemplate"]
    validate_pod_template(template, "ARC swap snippet")
    listener = [c for c in template["spec"]["containers"] if c["name"] == "listener"]
    assert len(listener) == 1
    assert listener[0]["image"].startswith("ghcr.io/gha-listener-rs/ghalistener:")
    assert listener[0]["command"] == ["/ghalistener"]
    assert listener[0]["securityContext"]["runAsNonRoot"] is True
    assert listener[0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert template["spec"]["terminationGracePeriodSeconds"] == 60
    assert {e["name"] for e in listener[0]["env"]} == {
        "OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_INSECURE", "GHALISTENER_OTEL_ID_SCHEME",
    }


# ---------------------------------------------------------------- bad values are rejected

BAD_VALUES = [
    ("missing URL", {"githubConfigUrl": ""}, '/githubConfigUrl'),
    ("URL without scheme", {"githubConfigUrl": "github.com/acme"}, '/githubConfigUrl'),
    ("URL with too many path segments", {"githubConfigUrl": "https://github.com/a/b/c"}, '/githubConfigUrl'),
    ("empty token", {"githubConfigSecret": {"github_token": ""}}, '/githubConfigSecret'),
    ("token and App at once", {"githubConfigSecret": {
        "github_app_id": "1", "github_app_installation_id": "2",
        "github_app_private_key": "-----BEGIN RSA PRIVATE KEY-----\nx"}}, '/githubConfigSecret'),
    ("incomplete App", {"githubConfigSecret": {"github_token": None, "github_app_id": "1"}}, '/githubConfigSecret'),
    ("App key that is not PEM", {"githubConfigSecret": {"github_token": "", "github_app_id": "1",
        "github_app_installation_id": "2", "github_app_private_key": "not a key"}}, 'github_app_private_key'),
    ("unknown secret key", {"githubConfigSecret": {"github_tokn": "x"}}, 'github_tokn'),
    ("empty secret name", {"githubConfigSecret": ""}, '/githubConfigSecret'),
    ("negative minRunners", {"minRunners": -1}, '/minRunners'),
    ("string maxRunners", {"maxRunners": "5"}, '/maxRunners'),
    ("fractional maxRunners", {"maxRunners": 2.5}, '/maxRunners'),
    ("minRunners above maxRunners", {"minRunners": 5, "maxRunners": 2}, 'maxRunners must be greater than or equal to minRunners'),
    ("scale set name too long", {"runnerScaleSetName": "a" * 46}, '/runnerScaleSetName'),
    ("scale set name with upper case", {"runnerScaleSetName": "Linux"}, '/runnerScaleSetName'),
    ("release name too long for a scale set", {"__release__": "r" * 46, "runnerScaleSetName": None}, 'at most 45 characters'),
    ("runner template without a runner container", {"template": {"spec": {"containers": [
        {"name": "worker", "image": "x"}]}}}, '/template'),
    ("unknown otel key", {"otel": {"endpoints": "x:4318"}}, 'endpoints'),
    ("otel endpoint without port or scheme", {"otel": {"endpoint": "collector"}}, '/otel/endpoint'),
    ("otel endpoint with a bad scheme", {"otel": {"endpoint": "grpc://collector:4317"}}, '/otel/endpoint'),
    ("otel insecure as a string", {"otel": {"insecure": "true"}}, '/otel/insecure'),
    ("unknown otel id scheme", {"otel": {"idScheme": "md5"}}, '/otel/idScheme'),
    ("listener as root", {"listener": {"securityContext": {"runAsUser": 0}}}, '/listener/securityContext/runAsUser'),
    ("listener runAsNonRoot false", {"listener": {"securityContext": {"runAsNonRoot": False}}}, '/listener/securityContext/runAsNonRoot'),
    ("privileged listener", {"listener": {"securityContext": {"privileged": True}}}, '/listener/securityContext/privileged'),
    ("listener privilege escalation", {"listener": {"securityContext": {"allowPrivilegeEscalation": True}}}, '/listener/securityContext/allowPrivilegeEscalation'),
    ("bad pull policy", {"listener": {"image": {"pullPolicy": "Sometimes"}}}, '/listener/image/pullPolicy'),
    ("bad image digest", {"listener": {"image": {"digest": "sha256:abc"}}}, '/listener/image/digest'),
    ("image tag with a space", {"listener": {"image": {"tag": "1.0 beta"}}}, '/listener/image/tag'),
    ("unknown listener key", {"listener": {"replicas": 2}}, 'replicas'),
    ("probe period of zero", {"listener": {"probes": {"liveness": {"periodSeconds": 0}}}},
     '/listener/probes/liveness/periodSeconds'),
    ("probes enabled as a string", {"listener": {"probes": {"enabled": "true"}}}, '/listener/probes/enabled'),
    ("zero grace period", {"listener": {"terminationGracePeriodSeconds": 0}}, '/listener/terminationGracePeriodSeconds'),
    ("extraEnv without a name", {"listener": {"extraEnv": [{"value": "x"}]}}, '/listener/extraEnv/0'),
    ("listenerTemplate changing the listener command", {"listenerTemplate": {"spec": {
        "containers": [{"name": "listener", "command": ["/bin/sh"]}]}}}, '/listenerTemplate/spec/containers/0/command'),
    ("listenerTemplate sidecar without an image", {"listenerTemplate": {"spec": {
        "containers": [{"name": "sidecar"}]}}}, '/listenerTemplate/spec/containers/0'),
    ("unknown metric name", {"listenerMetrics": {"gauges": {"gha_desired_runner": {"labels": []}}}}, "invalid propertyName 'gha_desired_runner'"),
    ("counter under gauges", {"listenerMetrics": {"gauges": {"gha_started_jobs_total": {"labels": []}}}}, "invalid propertyName 'gha_started_jobs_total'"),
    ("unknown metric label", {"listenerMetrics": {"counters": {"gha_started_jobs_total": {
        "labels": ["repo"]}}}}, '/listenerMetrics/counters/gha_started_jobs_total/labels/0'),
    ("buckets on a counter", {"listenerMetrics": {"counters": {"gha_started_jobs_total": {
        "labels": [], "buckets": [1]}}}}, 'buckets'),
    ("non-numeric buckets", {"listenerMetrics": {"histograms": {"gha_job_startup_duration_seconds": {
        "labels": [], "buckets": ["1s"]}}}}, '/buckets/0'),
    ("metrics port out of range", {"metrics": {"port": 70000}}, '/metrics/port'),
    ("metrics path without slash", {"metrics": {"path": "metrics"}}, '/metrics/path'),
    ("bad PodMonitor interval", {"metrics": {"podMonitor": {"interval": "30 seconds"}}}, '/metrics/podMonitor/interval'),
    ("podMonitor enabled as a string", {"metrics": {"podMonitor": {"enabled": "yes"}}}, '/metrics/podMonitor/enabled'),
    ("proxy URL without scheme", {"proxy": {"https": {"url": "proxy:3128"}}}, '/proxy/https/url'),
    ("TLS without a key", {"githubServerTLS": {"certificateFrom": {"configMapKeyRef": {"name": "ca"}}}}, 'configMapKeyRef'),
    ("unsupported runnerMountPath", {"githubServerTLS": {"runnerMountPath": "/certs"}}, 'runnerMountPath'),
    ("bad controller version", {"controllerVersion": "latest"}, '/controllerVersion'),
    ("unknown keyVault type", {"keyVault": {"type": "hashicorp"}}, '/keyVault/type'),
    ("keyVault without its vault", {"keyVault": {"type": "azure_key_vault"}}, 'azureKeyVault'),
    ("keyVault URL over http", {"keyVault": {"type": "azure_key_vault",
        "azureKeyVault": {"url": "http://v.vault.azure.net"}}}, '/keyVault/azureKeyVault/url'),
    ("keyVault with inline credentials", {"keyVault": {"type": "azure_key_vault",
        "azureKeyVault": {"url": "https://v.vault.azure.net"}}}, 'githubConfigSecret must be the name'),
    ("controller service account unknown offline", {"controllerServiceAccount": None}, 'controllerServiceAccount'),
    ("controller version unknown offline", {"controllerVersion": None}, 'controllerVersion is required'),
    ("label value that is a map", {"labels": {"team": {"a": "b"}}}, '/labels/team'),
]


@pytest.mark.parametrize(
    ("override", "names"), [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES]
)
def test_bad_values_are_rejected(chart: helm.Chart, override: dict[str, Any], names: str) -> None:
    """Each case fails `helm template`, and the error names what is wrong."""
    override = dict(override)
    release = override.pop("__release__", RELEASE)
    values = deep_merge(load_values("pat.yaml"), override)
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        render(chart, values, release=release)
    assert names in str(caught.value), str(caught.value)


GOOD_VALUES = [
    ("numeric App ids", {"githubConfigSecret": {"github_token": "", "github_app_id": 1,
        "github_app_installation_id": 2,
        "github_app_private_key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"}}),
    ("GHES URL", {"githubConfigUrl": "https://ghes.example.com/acme/repo"}),
    ("ghe.com enterprise", {"githubConfigUrl": "https://acme.ghe.com/enterprises/acme"}),
    ("https otel URL with path", {"otel": {"endpoint": "https://otel.example.com/otlp"}}),
    ("IPv6 otel endpoint", {"otel": {"endpoint": "[::1]:4318"}}),
    ("equal min and max", {"minRunners": 3, "maxRunners": 3}),
    ("only maxRunners", {"minRunners": None, "maxRunners": 3}),
    ("underscored name", {"runnerScaleSetName": "linux_x64"}),
    ("release name of 45 characters", {"__release__": "r" * 45, "runnerScaleSetName": None}),
]


@pytest.mark.parametrize("override", [g[1] for g in GOOD_VALUES], ids=[g[0] for g in GOOD_VALUES])
def test_good_values_are_accepted(chart: helm.Chart, override: dict[str, Any]) -> None:
    override = dict(override)
    release = override.pop("__release__", RELEASE)
    docs = render(chart, deep_merge(load_values("pat.yaml"), override), release=release)
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
