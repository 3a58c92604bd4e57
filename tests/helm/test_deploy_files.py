"""Static checks of deploy/: the collector config, Prometheus config and rules, dashboard.

The e2e scripts (tests/e2e-deploy) run Prometheus and a collector for real; these checks
are the cheap part that needs no binary: every metric the dashboard and the alerts query
exists in the listener's metric set, and the configs hold together.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# protocol.md section 5 (ARC's metric names; dashboards depend on them being exact).
GAUGES = {
    "gha_assigned_jobs", "gha_running_jobs", "gha_registered_runners", "gha_busy_runners",
    "gha_idle_runners", "gha_min_runners", "gha_max_runners", "gha_desired_runners",
}
COUNTERS = {"gha_started_jobs_total", "gha_completed_jobs_total"}
HISTOGRAMS = {"gha_job_startup_duration_seconds", "gha_job_execution_duration_seconds"}
# The Rust listener's own operational metrics (docs/metrics.md, "Listener metrics").
LISTENER = {
    "gha_listener_metric_series_evicted_total", "gha_listener_spans_exported_total",
    "gha_listener_spans_export_failed_total", "gha_listener_spans_dropped_total",
    "gha_listener_spans_pending",
}
KNOWN = GAUGES | COUNTERS | LISTENER | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
METRIC = re.compile(r"\bgha_[a-z_]+")


def referenced_metrics(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def test_collector_receives_otlp_http_and_exports_traces() -> None:
    config = yaml.safe_load((DEPLOY / "otel-collector" / "collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in config[kind], f"{kind} {name} used but not defined"
    assert {"otlp/tempo", "otlp/jaeger"} <= set(config["exporters"])
    assert pipeline["processors"][0] == "memory_limiter"  # first, as the collector advises


def test_dashboard_queries_only_listener_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ghalistener-dashboard.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = referenced_metrics(target["expr"])
            assert names <= KNOWN, (panel["title"], names - KNOWN)
            used |= names
    # Every metric the listener exports has a place on the dashboard.
    assert GAUGES | COUNTERS <= used
    assert all(any(u.startswith(h) for u in used) for h in HISTOGRAMS)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "scale_set_namespace", "scale_set_name"} <= variables


def test_alerts_query_only_listener_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert referenced_metrics(rule["expr"]) <= KNOWN, rule["alert"]


def test_scrape_job_avoids_label_collisions() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yaml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ghalistener"]
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    # The listener's own labels must not be shadowed by target labels.
    assert not targets & {"name", "namespace", "repository", "organization", "enterprise", "job_name"}
    assert {"scale_set_name", "scale_set_namespace"} <= targets


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
