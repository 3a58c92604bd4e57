"""Check what a real Prometheus scraped from the listener.

1. Wait until the listener's exposition is stable (the scripted workload has finished).
2. `promtool check metrics` on that exposition.
3. Wait for a Prometheus scrape taken after it, then compare every gha_* series Prometheus
   returns over its HTTP API with the exposition: same series, same values.
4. Check values against the listener's config (min/max, name/namespace labels) and the
   invariants between metrics (a histogram count per counter increment).
5. The alert rules from deploy/prometheus load and evaluate; every PromQL query of the
   Grafana dashboard runs without error and the scale-set panels return data.
6. With --expect-exemplars: Prometheus (exemplar storage on, so it scraped OpenMetrics)
   stores exemplars with a trace_id on both job-duration histograms, some of them the
   ones the listener's OpenMetrics scrape shows now.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ghalistener-dashboard.json"
TARGET_LABELS = {"job", "instance", "scale_set_name", "scale_set_namespace", "pod", "pod_namespace"}
SCALE_SET_GAUGES = [
    "gha_assigned_jobs", "gha_running_jobs", "gha_registered_runners", "gha_busy_runners",
    "gha_idle_runners", "gha_min_runners", "gha_max_runners", "gha_desired_runners",
]
EXPECTED_ALERTS = {"GhaListenerDown", "GhaScaleSetAtMaxRunners", "GhaJobsWaitingForRunners", "GhaSlowRunnerStartup"}

Series = dict[tuple[str, frozenset], float]


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def parse_exposition(text: str) -> Series:
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("gha_"):
                # Prometheus treats an empty label value as an absent label.
                labels = {k: v for k, v in sample.labels.items() if v != ""}
                series[(sample.name, frozenset(labels.items()))] = sample.value
    return series


def prom_query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(get(url))
    if body.get("status") != "success":
        fail(f"query {expr!r}: {body}")
    return body["data"]["result"]


def wait_stable(listener: str, deadline: float, min_completed: int) -> tuple[str, Series]:
    """Poll until three consecutive expositions, 2 s apart, hold the same gha_* values."""
    history: list[Series] = []
    text = ""
    while time.monotonic() < deadline:
        try:
            text = get(listener).decode()
        except OSError as err:
            print(f"listener scrape failed: {err}", file=sys.stderr)
            time.sleep(2)
            continue
        series = parse_exposition(text)
        completed = sum(v for (n, _), v in series.items() if n == "gha_completed_jobs_total")
        history = (history + [series])[-3:]
        if len(history) == 3 and all(h == series for h in history) and completed >= min_completed:
            return text, series
        time.sleep(2)
    fail(f"listener metrics did not settle (last exposition:\n{text})")
    raise AssertionError  # unreachable


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def total(series: Series, name: str) -> float:
    return sum(v for (n, _), v in series.items() if n == name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listener", required=True, help="the listener's metrics URL")
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--listener-config", required=True)
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--min-completed", type=int, default=1,
                        help="completed jobs required before the exposition counts as settled")
    parser.add_argument("--expect-started", type=int, help="jobs the workload started")
    parser.add_argument("--expect-completed", type=int, help="jobs the workload completed")
    parser.add_argument("--expect-exemplars", action="store_true",
                        help="check the stored exemplars of the job-duration histograms")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    config = json.loads(Path(args.listener_config).read_text())

    # 1-2. A settled exposition, linted by promtool.
    if args.expect_completed is not None:
        args.min_completed = max(args.min_completed, args.expect_completed)
    text, expected = wait_stable(args.listener, deadline, args.min_completed)
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True)
    if lint.returncode != 0:
        fail(f"promtool check metrics:\n{lint.stdout}{lint.stderr}")
    print(f"promtool check metrics: OK ({len(expected)} gha_* samples)")

    # 3. A Prometheus scrape after the settled exposition, compared series by series.
    settled_at = time.time()
    while True:
        if time.monotonic() > deadline:
            fail("Prometheus did not scrape the listener")
        up = prom_query(args.prometheus, 'up{job="ghalistener"}')
        scraped = prom_query(args.prometheus, 'timestamp(up{job="ghalistener"})')
        if up and scraped and float(up[0]["value"][1]) == 1 and float(scraped[0]["value"][1]) > settled_at + 1:
            break
        time.sleep(1)
    if parse_exposition(get(args.listener).decode()) != expected:
        fail("listener metrics changed after settling; is the workload still running?")

    target = up[0]["metric"]
    name, namespace = config["ephemeral_runner_set_name"], config["ephemeral_runner_set_namespace"]
    if target.get("scale_set_name") != name or target.get("scale_set_namespace") != namespace:
        fail(f"relabelled target labels {target} do not name scale set {namespace}/{name}")
    if target.get("pod") != f"{name}-listener" or target.get("pod_namespace") != "arc-systems":
        fail(f"pod target labels missing: {target}")

    got: Series = {}
    for result in prom_query(args.prometheus, '{__name__=~"gha_.+"}'):
        metric = dict(result["metric"])
        sample = metric.pop("__name__")
        clashes = [k for k in metric if k.startswith("exported_")]
        if clashes:
            fail(f"{sample}: target labels collide with the listener's labels: {clashes}")
        labels = {k: v for k, v in metric.items() if k not in TARGET_LABELS}
        got[(sample, frozenset(labels.items()))] = float(result["value"][1])
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    if missing or extra:
        fail(f"series differ; missing in Prometheus: {sorted(missing)[:5]}; extra: {sorted(extra)[:5]}")
    wrong = [(k, expected[k], got[k]) for k in expected if not same_value(expected[k], got[k])]
    if wrong:
        fail(f"values differ (series, listener, prometheus): {wrong[:5]}")
    print(f"prometheus API: {len(got)} gha_* series equal to the listener's exposition")

    # 4. Values that follow from the config and invariants between metrics.
    for gauge in SCALE_SET_GAUGES:
        rows = [(dict(k[1]), v) for k, v in got.items() if k[0] == gauge]
        if len(rows) != 1:
            fail(f"{gauge}: expected one series for the scale set, got {len(rows)}")
        labels, _ = rows[0]
        if labels.get("name") != name or labels.get("namespace") != namespace:
            fail(f"{gauge}: labels {labels} do not name {namespace}/{name}")

    def gauge(metric: str) -> float:
        return next(v for k, v in got.items() if k[0] == metric)

    if gauge("gha_min_runners") != config["min_runners"]:
        fail(f"gha_min_runners {gauge('gha_min_runners')} != min_runners {config['min_runners']}")
    if gauge("gha_max_runners") != config["max_runners"]:
        fail(f"gha_max_runners {gauge('gha_max_runners')} != max_runners {config['max_runners']}")
    if not config["min_runners"] <= gauge("gha_desired_runners") <= config["max_runners"]:
        fail(f"gha_desired_runners {gauge('gha_desired_runners')} outside [min, max]")
    started, completed = total(got, "gha_started_jobs_total"), total(got, "gha_completed_jobs_total")
    if started < 1 or completed < 1:
        fail(f"no jobs counted: started {started}, completed {completed}")
    if args.expect_started is not None and started != args.expect_started:
        fail(f"gha_started_jobs_total sums to {started:g}, the workload started {args.expect_started}")
    if args.expect_completed is not None and completed != args.expect_completed:
        fail(f"gha_completed_jobs_total sums to {completed:g}, the workload completed {args.expect_completed}")
    startups = total(got, "gha_job_startup_duration_seconds_count")
    executions = total(got, "gha_job_execution_duration_seconds_count")
    if startups != started:
        fail(f"startup histogram count {startups} != started jobs {started}")
    if executions != completed:
        fail(f"execution histogram count {executions} != completed jobs {completed}")
    for (sample, labels), value in got.items():
        if sample.endswith("_total") and value != int(value):
            fail(f"{sample}{dict(labels)} is not a whole number: {value}")
    print(f"values: min/max/desired consistent with config; {started:g} started, {completed:g} completed")

    # 5. Alert rules and dashboard queries.
    while True:
        groups = json.loads(get(f"{args.prometheus}/api/v1/rules"))["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        evaluated = all(not r.get("lastEvaluation", "0001").startswith("0001") for r in rules)
        if rules and evaluated and all(r.get("health") == "ok" for r in rules):
            break
        if time.monotonic() > deadline:
            fail(f"alert rules not healthy: {rules}")
        time.sleep(1)
    if {r["name"] for r in rules} != EXPECTED_ALERTS:
        fail(f"alert rules loaded: {[r['name'] for r in rules]}")
    print(f"alert rules: {len(rules)} loaded and evaluated")

    dashboard = json.loads(DASHBOARD.read_text())
    substitutions = {
        "$__rate_interval": "1m", "$__range": "5m", "$scale_set_namespace": ".*",
        "$scale_set_name": ".*", "$job": "ghalistener",
    }
    queried = 0
    for panel in dashboard["panels"]:
        for target_def in panel.get("targets", []):
            expr = target_def["expr"]
            for var, value in substitutions.items():
                expr = expr.replace(var, value)
            if "$" in re.sub(r"\{\{[^}]*\}\}", "", expr):
                fail(f"unsubstituted variable in {expr!r}")
            result = prom_query(args.prometheus, expr)
            queried += 1
            if panel["type"] == "stat" and not result:
                fail(f"panel {panel['title']!r} returns no data: {expr}")
    print(f"dashboard: {queried} queries ran")

    if args.expect_exemplars:
        check_exemplars(args.listener, args.prometheus)


def check_exemplars(listener: str, prometheus: str) -> None:
    request = urllib.request.Request(
        listener, headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as response:
        if "application/openmetrics-text" not in response.headers.get("Content-Type", ""):
            fail(f"OpenMetrics not negotiated: {response.headers.get('Content-Type')}")
        open_text = response.read().decode()
    exposed = set(re.findall(r'# \{trace_id="([0-9a-f]{32})"\}', open_text))
    now = time.time()
    for metric in ("gha_job_startup_duration_seconds", "gha_job_execution_duration_seconds"):
        url = f"{prometheus}/api/v1/query_exemplars?" + urllib.parse.urlencode(
            {"query": f"{metric}_bucket", "start": now - 3600, "end": now + 60})
        body = json.loads(get(url))
        if body.get("status") != "success":
            fail(f"query_exemplars {metric}: {body}")
        stored = {e["labels"].get("trace_id", "") for s in body["data"] for e in s["exemplars"]}
        if not stored or not all(re.fullmatch(r"[0-9a-f]{32}", t) for t in stored):
            fail(f"{metric}: no stored exemplar with a trace_id: {body['data'][:2]}")
        # The listener shows the last exemplar per bucket; Prometheus keeps earlier ones too.
        if not stored & exposed:
            fail(f"{metric}: stored trace ids {sorted(stored)[:3]} not in the listener's exposition")
        print(f"exemplars: {metric}: {len(stored)} trace ids stored by Prometheus")


if __name__ == "__main__":
    main()
