//! The real `ghalistener` binary against the simulator's fakes, through a kubeconfig.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use simulator::support::{
    ListenerProcess, environment_command, http_get, http_ok, listener_command, metric_value,
    observed_environment, wait_until,
};
use simulator::workload::{
    DEMO_TOKEN, Environment, EnvironmentOptions, NAMESPACE, SET_NAME, WorkloadOptions,
    run_workload, wait_for_replicas,
};

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");

/// The listener on `env`, its output in `dir`/listener.log (returned for the failure messages).
fn spawn_listener(env: &Environment, dir: &std::path::Path) -> (PathBuf, ListenerProcess) {
    let log = dir.join("listener.log");
    let child = ListenerProcess::start(environment_command(LISTENER, env), &log, None)
        .expect("spawn ghalistener");
    (log, child)
}

async fn sigterm(child: &mut ListenerProcess) -> (Option<i32>, Duration) {
    let stopped = child
        .terminate(Duration::from_secs(30))
        .await
        .expect("sigterm");
    assert!(stopped.exit.is_some(), "listener exits after SIGTERM");
    (stopped.code(), stopped.took)
}

/// SIGTERM ends the listener with status 0 within `within`.
async fn sigterm_exits_zero(child: &mut ListenerProcess, log: &std::path::Path, within: Duration) {
    let (code, took) = sigterm(child).await;
    assert_eq!(
        code,
        Some(0),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    assert!(took < within, "took {took:?}");
}

/// The fake logs path and query; kube-rs may add an empty query.
fn bare_path(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_and_down_reports_metrics_and_spans_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (env, sink) = observed_environment(dir.path()).await.expect("environment");
    let metrics_addr = env.options.metrics_addr.expect("metrics on");
    let (log, mut child) = spawn_listener(&env, dir.path());

    // The initial statistics (no jobs) scale to min_runners first.
    assert!(
        wait_until(Duration::from_secs(30), || env
            .kube
            .requests()
            .iter()
            .any(|r| bare_path(&r.path).ends_with(SET_NAME)))
        .await,
        "no initial scale patch; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let workload = WorkloadOptions::waves(
        vec![3, 5],
        Duration::from_secs(2),
        Duration::from_millis(500),
    )
    .failing_every(4);
    let summary = run_workload(&env, &workload, |_| {}).await;
    assert!(
        !summary.timed_out,
        "workload timed out: {summary:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(summary.completed, 8);
    assert!(summary.max_replicas >= 3, "{summary:?}");
    assert!(
        wait_for_replicas(&env, 0, Duration::from_secs(20)).await,
        "did not scale back to 0"
    );

    // Only merge patches, on the set and on runners' status.
    let requests = env.kube.requests();
    assert!(
        requests.iter().all(|r| r.method == "PATCH"),
        "non-PATCH request sent"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.content_type.as_deref() == Some("application/merge-patch+json"))
    );
    let scale_patches: Vec<serde_json::Value> = requests
        .iter()
        .filter(|r| {
            bare_path(&r.path).ends_with(&format!("ephemeralrunnersets/{SET_NAME}"))
                && r.status == 200
        })
        .map(|r| r.json())
        .collect();
    let patch_ids: Vec<i64> = scale_patches
        .iter()
        .map(|p| p["spec"]["patchID"].as_i64().unwrap_or(0))
        .collect();
    let nonzero: Vec<i64> = patch_ids.iter().copied().filter(|p| *p != 0).collect();
    assert!(
        nonzero.windows(2).all(|w| w[0] < w[1]),
        "patch ids not increasing: {patch_ids:?}"
    );
    let replicas: Vec<i64> = scale_patches
        .iter()
        .map(|p| p["spec"]["replicas"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(replicas.first(), Some(&0));
    assert_eq!(replicas.last(), Some(&0));
    assert!(replicas.iter().any(|r| *r >= 3), "{replicas:?}");

    let runner_patches: Vec<serde_json::Value> = requests
        .iter()
        .filter(|r| bare_path(&r.path).ends_with("/status"))
        .map(|r| r.json())
        .collect();
    assert_eq!(runner_patches.len(), 8, "one status patch per started job");
    let status = &runner_patches[0]["status"];
    assert_eq!(status["jobRepositoryName"], "my-org/my-repo");
    assert!(status["jobRequestId"].as_i64().unwrap_or(0) > 0);
    assert!(status["workflowRunId"].as_i64().unwrap_or(0) > 0);
    assert!(!status["jobId"].as_str().unwrap_or("").is_empty());

    let stats = env.actions.stats();
    assert_eq!(stats.jobs_acquired, 8);
    assert_eq!(
        stats.messages_acked,
        stats.messages_delivered - stats.messages_redelivered
    );

    // Metrics after the scenario.
    let exposition = http_get(metrics_addr, "/metrics").await;
    assert_eq!(
        metric_value(&exposition, "gha_started_jobs_total"),
        8.0,
        "{exposition}"
    );
    assert_eq!(
        metric_value(&exposition, "gha_completed_jobs_total"),
        8.0,
        "{exposition}"
    );
    assert_eq!(metric_value(&exposition, "gha_desired_runners"), 0.0);
    assert_eq!(metric_value(&exposition, "gha_max_runners"), 10.0);
    assert_eq!(
        metric_value(&exposition, "gha_job_execution_duration_seconds_count"),
        8.0
    );
    assert!(exposition.contains("job_result=\"failed\""), "{exposition}");
    let ready = http_get(metrics_addr, "/readyz").await;
    assert!(http_ok(&ready), "{ready}");

    // Spans: three per completed job, error status on failed executions.
    let spans = sink.wait_for_spans(24, Duration::from_secs(20)).await;
    assert_eq!(spans.len(), 24, "{spans:#?}");
    for name in ["runner.queue", "runner.startup", "runner.execution"] {
        assert_eq!(spans.iter().filter(|s| s.name == name).count(), 8, "{name}");
    }
    let failed = spans
        .iter()
        .filter(|s| s.name == "runner.execution" && s.status_code == 2)
        .count();
    assert_eq!(failed, summary.failed);

    // SIGTERM: session deleted, exit 0, quickly.
    sigterm_exits_zero(&mut child, &log, Duration::from_secs(10)).await;
    assert_eq!(env.actions.stats().sessions_deleted, 1);
    assert_eq!(env.actions.stats().sessions_active, 0);

    // Debug logs hold no secret.
    let output = std::fs::read_to_string(&log).expect("log");
    assert!(
        output.contains("DEBUG") || output.contains("debug"),
        "not at debug level"
    );
    assert!(!output.contains(DEMO_TOKEN), "PAT leaked into logs");
    assert!(!output.contains("eyJ"), "a JWT leaked into logs");
    assert!(!exposition.contains(DEMO_TOKEN));
    let _ = NAMESPACE;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_long_poll_deletes_session_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = EnvironmentOptions::new(dir.path());
    options.long_poll_hold = Duration::from_secs(50);
    let env = Environment::start(options).await.expect("environment");
    let (log, mut child) = spawn_listener(&env, dir.path());
    assert!(
        wait_until(Duration::from_secs(30), || env
            .actions
            .stats()
            .sessions_created
            == 1
            && env.actions.stats().requests > 0
            && env.kube.requests().len() == 1)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // inside the 50 s hold
    sigterm_exits_zero(&mut child, &log, Duration::from_secs(5)).await;
    assert_eq!(env.actions.stats().sessions_deleted, 1);
}

async fn run_with_config(config: &serde_json::Value) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    listener_command(LISTENER)
        .env("LISTENER_CONFIG_PATH", &path)
        .output()
        .await
        .expect("run ghalistener")
}

#[tokio::test]
async fn bad_configs_exit_non_zero_naming_the_field() {
    let good = serde_json::json!({
        "configure_url": "https://github.com/my-org",
        "github_token": "ghp_abcdefghijklmnop",
        "ephemeral_runner_set_namespace": "ns",
        "ephemeral_runner_set_name": "set",
        "min_runners": 0, "max_runners": 5,
        "runner_scale_set_id": 3,
    });
    let cases = [
        ("configure_url", serde_json::json!("")),
        ("configure_url", serde_json::json!("https://github.com/")),
        ("ephemeral_runner_set_name", serde_json::json!("")),
        ("runner_scale_set_id", serde_json::json!(0)),
        ("max_runners", serde_json::json!(-2)),
        ("log_level", serde_json::json!("loud")),
        // Set without vault_lookup_key: the error names both.
        ("vault_type", serde_json::json!("azure_key_vault")),
        ("vault_lookup_key", serde_json::json!("")),
        ("vault_type", serde_json::json!("hashicorp")),
        ("otel_id_scheme", serde_json::json!("random")),
        ("metrics", serde_json::json!({"counters": 5})),
    ];
    for (key, value) in cases {
        let mut config = good.clone();
        config[key] = value.clone();
        if key == "vault_lookup_key" {
            config["vault_type"] = serde_json::json!("azure_key_vault");
        }
        if key == "metrics" {
            config["metrics_addr"] = serde_json::json!("127.0.0.1:0");
        }
        let out = run_with_config(&config).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{key}={value} accepted");
        assert!(
            text.contains(key),
            "{key}={value}: error does not name the key: {text}"
        );
        assert!(
            !text.contains("ghp_abcdefghijklmnop"),
            "secret in error: {text}"
        );
    }

    // The clean environment has no LISTENER_CONFIG_PATH.
    let missing = listener_command(LISTENER).output().await.expect("run");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("LISTENER_CONFIG_PATH"));

    let out = run_with_config(&serde_json::json!("not an object")).await;
    assert_eq!(out.status.code(), Some(1));
}
