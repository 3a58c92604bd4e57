"""Derive a loopback Prometheus config from deploy/prometheus/prometheus.yaml.

The `ghalistener` job keeps its relabel rules; its kubernetes_sd_configs become one static
target whose labels are the __meta_kubernetes_* labels Kubernetes discovery would give the
listener pod ARC's controller creates (component label, `metrics` port, scale set labels,
scrape annotations). Debian's Prometheus is built without Kubernetes discovery, and the
rules, not the discovery, are what this checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploy-config", required=True)
    parser.add_argument("--target", required=True, help="host:port of the listener's metrics")
    parser.add_argument("--listener-config", required=True, help="the listener's config.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    deploy = yaml.safe_load(Path(args.deploy_config).read_text())
    listener = json.loads(Path(args.listener_config).read_text())
    jobs = [j for j in deploy["scrape_configs"] if j["job_name"] == "ghalistener"]
    if len(jobs) != 1:
        raise SystemExit("deploy config must have exactly one ghalistener job")
    job = jobs[0]
    if "kubernetes_sd_configs" not in job:
        raise SystemExit("the ghalistener job is expected to use kubernetes_sd_configs")
    del job["kubernetes_sd_configs"]

    name = listener["ephemeral_runner_set_name"]
    namespace = listener["ephemeral_runner_set_namespace"]
    meta = "__meta_kubernetes_"
    job["static_configs"] = [{
        "targets": [args.target],
        "labels": {
            f"{meta}pod_label_app_kubernetes_io_component": "runner-scale-set-listener",
            f"{meta}pod_label_actions_github_com_scale_set_name": name,
            f"{meta}pod_label_actions_github_com_scale_set_namespace": namespace,
            f"{meta}pod_container_port_name": "metrics",
            f"{meta}pod_annotation_prometheus_io_scrape": "true",
            f"{meta}pod_annotation_prometheus_io_path": listener.get("metrics_endpoint") or "/metrics",
            f"{meta}pod_name": f"{name}-listener",
            f"{meta}namespace": "arc-systems",
        },
    }]
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"

    rules = Path(args.deploy_config).resolve().parent
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / f) for f in deploy.get("rule_files", [])],
        "scrape_configs": [job],
    }
    Path(args.out).write_text(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main()
