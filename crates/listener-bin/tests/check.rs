//! `ghalistener check` (the real binary) against the simulator's fakes: a healthy setup
//! passes, each broken piece fails naming what to fix, and nothing is changed: no message
//! session, no change to the set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::process::Output;
use std::time::Duration;

use simulator::actions::Endpoint;
use simulator::otlp_sink::OtlpSink;
use simulator::support::{
    ListenerProcess, environment_command, free_addr, http_get, http_ok, wait_until,
};
use simulator::workload::{DEMO_TOKEN, Environment, EnvironmentOptions, NAMESPACE, SET_NAME};

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");
/// A check retries transient failures with the client's backoff; far above a healthy run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment with metrics on a free port and spans to `sink`; the set at 3 replicas,
/// so a dry run of the listener's first patch (to `min_runners`, 0) would change it.
async fn environment(dir: &std::path::Path, sink: &OtlpSink) -> Environment {
    let metrics_addr = free_addr().expect("free port");
    let options = EnvironmentOptions {
        metrics_addr: Some(metrics_addr),
        otel_endpoint: Some(sink.endpoint()),
        ..EnvironmentOptions::new(dir)
    };
    let env = Environment::start(options).await.expect("environment");
    env.kube.put_ephemeral_runner_set(NAMESPACE, SET_NAME, 3);
    env
}

/// A fresh environment (see [`environment`]) with the directory and collector it uses.
async fn setup() -> (tempfile::TempDir, OtlpSink, Environment) {
    let dir = tempfile::tempdir().unwrap();
    let sink = OtlpSink::start().await.unwrap();
    let env = environment(dir.path(), &sink).await;
    (dir, sink, env)
}

/// [`setup`], with `key` of the listener's config set to `value`.
async fn setup_with_config(
    key: &str,
    value: serde_json::Value,
) -> (tempfile::TempDir, OtlpSink, Environment) {
    let (dir, sink, env) = setup().await;
    let mut config = env.listener_config();
    config[key] = value;
    env.write_config(&config).unwrap();
    (dir, sink, env)
}

async fn run_check(env: &Environment, args: &[&str]) -> (Option<i32>, String) {
    let mut command = environment_command(LISTENER, env);
    command.arg("check").args(args);
    let output: Output = tokio::time::timeout(CHECK_TIMEOUT, command.output())
        .await
        .expect("check finishes")
        .expect("run ghalistener check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

/// The line of the check `name`.
fn line<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find(|l| {
            l.get(5..)
                .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no line for {name}:\n{output}"))
}

/// The check `name` reported `status` (`ok` or `skip`).
fn assert_status(output: &str, name: &str, status: &str) {
    assert!(
        line(output, name).starts_with(status),
        "{name}: want {status}:\n{output}"
    );
}

/// The check `name` failed, and its line has each of `words`.
fn assert_failed(output: &str, name: &str, words: &[&str]) {
    let failed = line(output, name);
    assert!(
        failed.starts_with("FAIL") && words.iter().all(|w| failed.contains(w)),
        "{name}: want FAIL with {words:?}:\n{output}"
    );
}

/// `ghalistener check` in `env`, which must exit 1 (a check failed); its output.
async fn run_failing_check(env: &Environment) -> String {
    let (code, output) = run_check(env, &[]).await;
    assert_eq!(code, Some(1), "{output}");
    output
}

/// No message session was asked for, and the set is as it was.
fn nothing_changed(env: &Environment, set_before: &serde_json::Value) {
    assert!(
        !env.actions
            .requests()
            .iter()
            .any(|r| r.endpoint == Some(Endpoint::CreateSession)),
        "the check asked for a message session"
    );
    assert_eq!(env.actions.stats().sessions_created, 0);
    let set_after = env
        .kube
        .get_ephemeral_runner_set(NAMESPACE, SET_NAME)
        .unwrap();
    assert_eq!(&set_after, set_before, "the check changed the set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check_and_changes_nothing() {
    let (_dir, sink, env) = setup().await;
    let set_before = env
        .kube
        .get_ephemeral_runner_set(NAMESPACE, SET_NAME)
        .unwrap();

    let (code, output) = run_check(&env, &[]).await;
    assert_eq!(code, Some(0), "{output}");
    for name in [
        "config",
        "credentials",
        "github-registration-token",
        "actions-service",
        "scale-set",
        "kubernetes-config",
        "kubernetes-set-patch",
        "kubernetes-runner-status-patch",
        "otlp",
        "metrics-addr",
    ] {
        assert_status(&output, name, "ok");
    }
    assert!(output.contains("all checks passed"), "{output}");
    assert!(!output.contains(DEMO_TOKEN), "the PAT was printed");
    assert!(sink.requests() >= 1, "the collector got no export");

    // Both patches went out as dry runs, were authorized and answered (404 for the
    // made-up runner), and the set is unchanged.
    let patches = env.kube.requests();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert!(
        patches.iter().all(|r| r.method == "PATCH"
            && r.query.as_deref().unwrap_or("").contains("dryRun=All")),
        "{patches:#?}"
    );
    assert_eq!(
        patches.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 404]
    );
    nothing_changed(&env, &set_before);

    // The same, for machines.
    let (code, output) = run_check(&env, &["--json"]).await;
    assert_eq!(code, Some(0), "{output}");
    let report: serde_json::Value = serde_json::from_str(&output).expect("JSON report");
    assert_eq!(report["ok"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 10, "{report:#}");
    assert!(checks.iter().all(|c| c["status"] == "ok"), "{report:#}");
    nothing_changed(&env, &set_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_fail_naming_the_credentials() {
    let (_dir, _sink, env) = setup_with_config(
        "github_token",
        serde_json::json!("ghp_notTheRightToken000000000000000000"),
    )
    .await;

    let output = run_failing_check(&env).await;
    assert_failed(
        &output,
        "github-registration-token",
        &["rejected the credentials"],
    );
    assert_status(&output, "scale-set", "skip");
    // The independent checks still ran.
    assert_status(&output, "kubernetes-set-patch", "ok");
    assert!(
        !output.contains("ghp_notTheRightToken"),
        "the token was printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_the_role_does_not_cover_fails_naming_the_right() {
    let (_dir, _sink, env) = setup().await;
    env.kube.allowed_set_name(Some("some-other-set"));
    let set_before = env
        .kube
        .get_ephemeral_runner_set(NAMESPACE, SET_NAME)
        .unwrap();

    let (code, output) = run_check(&env, &["--json"]).await;
    assert_eq!(code, Some(1), "{output}");
    let report: serde_json::Value = serde_json::from_str(&output).expect("JSON report");
    assert_eq!(report["ok"], false);
    let set_patch = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kubernetes-set-patch")
        .unwrap();
    assert_eq!(set_patch["status"], "fail", "{report:#}");
    let text = |field: &str| set_patch[field].as_str().unwrap();
    assert!(text("detail").contains("lacks `patch`"), "{report:#}");
    assert!(
        text("fix").contains(&format!("resourceNames [{SET_NAME}]")),
        "{report:#}"
    );
    assert_eq!(
        env.kube.requests().first().map(|r| r.status),
        Some(403),
        "the dry run was not refused by RBAC"
    );
    nothing_changed(&env, &set_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_runner_status_fails_naming_the_subresource() {
    let (_dir, _sink, env) = setup().await;
    env.kube.grant_runner_status(false);

    let output = run_failing_check(&env).await;
    assert_status(&output, "kubernetes-set-patch", "ok");
    assert_failed(
        &output,
        "kubernetes-runner-status-patch",
        &["ephemeralrunners/status"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scale_set_id_fails_naming_the_key() {
    let (_dir, _sink, env) = setup_with_config("runner_scale_set_id", serde_json::json!(999)).await;

    let output = run_failing_check(&env).await;
    assert_failed(&output, "scale-set", &["`runner_scale_set_id`", "999"]);
    assert_status(&output, "actions-service", "ok");
    assert_eq!(env.actions.stats().sessions_created, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_naming_the_endpoint() {
    let nobody = free_addr().expect("free port");
    let (_dir, _sink, env) = setup_with_config(
        "otel_endpoint",
        serde_json::json!(format!("http://{nobody}")),
    )
    .await;

    let output = run_failing_check(&env).await;
    assert_failed(&output, "otlp", &[&nobody.to_string(), "otel_endpoint"]);
    assert_status(&output, "scale-set", "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_running_listener_the_metrics_address_is_its_and_no_session_is_taken() {
    let (_dir, _sink, env) = setup().await;
    let metrics_addr = env.options.metrics_addr.unwrap();
    let mut listener = ListenerProcess::spawn(LISTENER, &env).expect("spawn the listener");
    assert!(
        wait_until(Duration::from_secs(30), || env
            .actions
            .stats()
            .sessions_active
            == 1)
        .await,
        "{}",
        listener.output()
    );
    let mut healthy = false;
    for _ in 0..50 {
        if http_ok(&http_get(metrics_addr, "/healthz").await) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "{}", listener.output());

    let (code, output) = run_check(&env, &[]).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        line(&output, "metrics-addr").contains("served by a running listener"),
        "{output}"
    );
    let stats = env.actions.stats();
    assert_eq!(
        (stats.sessions_created, stats.session_conflicts),
        (1, 0),
        "{stats:?}"
    );

    let stopped = listener.terminate(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stopped.code(), Some(0), "{}", listener.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_fails_naming_the_key_and_skips_the_rest() {
    let (_dir, _sink, env) = setup_with_config("max_runners", serde_json::json!("ten")).await;

    let output = run_failing_check(&env).await;
    assert_failed(&output, "config", &["max_runners"]);
    assert_status(&output, "scale-set", "skip");
    assert_eq!(
        output.lines().count(),
        11,
        "one line per check and the summary:\n{output}"
    );
    assert!(env.actions.requests().is_empty() && env.kube.requests().is_empty());
}
