#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The scaler against the fake Kubernetes API over HTTPS, through a kubeconfig, exactly as
//! it talks to a cluster.

#[path = "../src/go_listener_cases.rs"]
mod go_listener_cases;

use retry::Classify as _;
use std::time::Duration;

use scaler::{
    DesiredCountState, EphemeralRunnerJobStatus, EphemeralRunnerSetScaler, RetryPolicy,
    RunnerJobStatus, Scaler, ScalerConfig, ScalerError,
};
use serde_json::json;
use simulator::kube_api::{FakeKubeApi, Fault, FaultAction};

const NS: &str = "arc-runners";
const SET: &str = "arc-set-abcde";

async fn fake() -> FakeKubeApi {
    FakeKubeApi::builder()
        .namespace(NS)
        .allowed_set_name(SET)
        .start()
        .await
        .unwrap()
}

async fn kube_config(kubeconfig_yaml: &str) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    // The scaler does the retrying (and counts it).
    config.default_retry = false;
    config
}

async fn client_for(fake: &FakeKubeApi) -> kube::Client {
    kube::Client::try_from(kube_config(&fake.kubeconfig_yaml()).await).unwrap()
}

/// Small delays: 3 retries from 5 ms capped at 20 ms, 10 s per request.
fn config(name: &str, min: i32, max: i32) -> ScalerConfig {
    let fast = Duration::from_millis(20);
    ScalerConfig {
        retry: RetryPolicy {
            max_retries: 3,
            backoff: retry::Backoff::new(Duration::from_millis(5), fast, fast),
        },
        request_timeout: Duration::from_secs(10),
        ..ScalerConfig::new(NS, name, min, max)
    }
}

/// The fake holding SET at 0 replicas and one ephemeral runner, `runner`.
async fn fake_with_runner(runner: &str) -> FakeKubeApi {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    fake.put_ephemeral_runner(NS, runner);
    fake
}

async fn scaler(fake: &FakeKubeApi, name: &str, min: i32, max: i32) -> EphemeralRunnerSetScaler {
    EphemeralRunnerSetScaler::new(client_for(fake).await, config(name, min, max))
}

/// The listener Role grants `patch` only: nothing else may ever be sent.
fn assert_only_patches(fake: &FakeKubeApi) {
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in requests {
        assert_eq!(
            r.method, "PATCH",
            "unexpected request {} {}",
            r.method, r.path
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/merge-patch+json"),
            "{}",
            r.path
        );
    }
}

fn set_patches(fake: &FakeKubeApi, name: &str) -> Vec<serde_json::Value> {
    let path = FakeKubeApi::set_path(NS, name);
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.json())
        .collect()
}

fn job(runner: &str, request_id: i64) -> RunnerJobStatus {
    RunnerJobStatus {
        runner_name: runner.to_owned(),
        status: EphemeralRunnerJobStatus {
            job_request_id: request_id,
            job_repository_name: "octo-org/hello".to_owned(),
            job_id: format!("job-{request_id}"),
            workflow_run_id: 9000 + request_id,
            job_workflow_ref: "octo-org/hello/.github/workflows/ci.yml@refs/heads/main".to_owned(),
            job_display_name: "build (ubuntu)".to_owned(),
        },
    }
}

#[tokio::test]
async fn patch_sequence_equals_the_go_listener_table() {
    let fake = FakeKubeApi::builder().namespace(NS).start().await.unwrap();
    let client = client_for(&fake).await;
    for (i, (case, min, max, steps)) in go_listener_cases::go_listener_cases()
        .into_iter()
        .enumerate()
    {
        let name = format!("set-{i}");
        fake.put_ephemeral_runner_set(NS, &name, 0);
        let scaler = EphemeralRunnerSetScaler::new(client.clone(), config(&name, min, max));
        let mut expected_bodies = Vec::new();
        for (step, (dirty, count, (patch_id, target, _seq))) in steps.into_iter().enumerate() {
            let got = scaler
                .handle_desired_runner_count(count, dirty)
                .await
                .unwrap();
            assert_eq!(got, target, "{case} step {step}");
            let replicas = if target == 0 {
                json!(null)
            } else {
                json!(target)
            };
            let body = json!({"spec": {"patchID": patch_id, "replicas": replicas}});
            assert_eq!(
                set_patches(&fake, &name).last(),
                Some(&body),
                "{case} step {step}"
            );
            expected_bodies.push(body);
            let stored = fake.get_ephemeral_runner_set(NS, &name).unwrap();
            assert_eq!(
                stored["spec"]["patchID"],
                json!(patch_id),
                "{case} step {step}"
            );
            assert_eq!(
                stored["spec"]["replicas"].as_i64().unwrap_or(0),
                i64::from(target),
                "{case} step {step}"
            );
        }
        assert_eq!(set_patches(&fake, &name), expected_bodies, "{case}");
    }
    assert_only_patches(&fake);
}

#[tokio::test]
async fn patch_id_wraps_after_i32_max() {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    let scaler = scaler(&fake, SET, 0, 10)
        .await
        .with_state(DesiredCountState::new(0, 10).with_patch_seq(i32::MAX - 1));
    assert_eq!(
        scaler.handle_desired_runner_count(2, false).await.unwrap(),
        2
    );
    assert_eq!(
        scaler.handle_desired_runner_count(3, false).await.unwrap(),
        3
    );
    assert_eq!(
        set_patches(&fake, SET),
        vec![
            json!({"spec": {"patchID": i32::MAX, "replicas": 2}}),
            json!({"spec": {"patchID": 1, "replicas": 3}}),
        ]
    );
    assert_only_patches(&fake);
}

#[tokio::test]
async fn runner_status_patch_body_is_exact() {
    let fake = fake().await;
    fake.put_ephemeral_runner(NS, "runner-a");
    let scaler = scaler(&fake, SET, 0, 10).await;
    scaler.handle_jobs_started(vec![job("runner-a", 42)]).await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.path, FakeKubeApi::runner_status_path(NS, "runner-a"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"status":{"jobRequestId":42,"jobRepositoryName":"octo-org/hello","jobId":"job-42","workflowRunId":9042,"jobWorkflowRef":"octo-org/hello/.github/workflows/ci.yml@refs/heads/main","jobDisplayName":"build (ubuntu)"}}"#
    );
    let stored = fake.get_ephemeral_runner(NS, "runner-a").unwrap();
    assert_eq!(stored["status"]["jobRequestId"], json!(42));
    assert_eq!(stored["status"]["jobDisplayName"], json!("build (ubuntu)"));
    // Existing status fields are kept: it is a merge patch.
    assert_eq!(stored["status"]["phase"], json!("Pending"));

    // Empty values are omitted.
    fake.clear_requests();
    let sparse = RunnerJobStatus {
        runner_name: "runner-a".into(),
        status: EphemeralRunnerJobStatus {
            job_request_id: 43,
            ..Default::default()
        },
    };
    scaler.handle_jobs_started(vec![sparse]).await;
    assert_eq!(fake.requests()[0].body, r#"{"status":{"jobRequestId":43}}"#);
    assert_only_patches(&fake);
}

#[tokio::test]
async fn missing_runner_is_tolerated() {
    let fake = fake_with_runner("present").await;
    let scaler = scaler(&fake, SET, 0, 10).await;
    scaler
        .handle_jobs_started(vec![job("gone", 1), job("present", 2)])
        .await;
    let statuses: Vec<(String, u16)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert!(statuses.contains(&(FakeKubeApi::runner_status_path(NS, "gone"), 404)));
    assert!(statuses.contains(&(FakeKubeApi::runner_status_path(NS, "present"), 200)));
    // A 404 is final: not retried.
    assert_eq!(scaler.retries(), 0);
    assert_eq!(
        fake.get_ephemeral_runner(NS, "present").unwrap()["status"]["jobRequestId"],
        json!(2)
    );
    // The listener carries on.
    assert_eq!(
        scaler.handle_desired_runner_count(1, true).await.unwrap(),
        1
    );
    assert_only_patches(&fake);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let fake = fake_with_runner("runner-a").await;
    let set_path = FakeKubeApi::set_path(NS, SET);
    let scaler = scaler(&fake, SET, 0, 10).await;

    for (action, expected_status) in [
        (FaultAction::Status(503), 503),
        (FaultAction::Status(500), 500),
        (FaultAction::Status(409), 409),
        (FaultAction::Status(429), 429),
        (FaultAction::Status(504), 504),
        (FaultAction::DropConnection, 0),
    ] {
        fake.clear_requests();
        let before = scaler.retries();
        fake.inject_fault(Fault::patch(set_path.clone(), action.clone()).times(2));
        assert_eq!(
            scaler.handle_desired_runner_count(4, true).await.unwrap(),
            4,
            "{action:?}"
        );
        assert_eq!(scaler.retries() - before, 2, "{action:?}");
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            vec![expected_status, expected_status, 200],
            "{action:?}"
        );
    }

    // Runner status patches are retried as well.
    fake.clear_requests();
    let before = scaler.retries();
    fake.inject_fault(
        Fault::patch(
            FakeKubeApi::runner_status_path(NS, "runner-a"),
            FaultAction::Status(502),
        )
        .times(2),
    );
    scaler.handle_jobs_started(vec![job("runner-a", 7)]).await;
    assert_eq!(scaler.retries() - before, 2);
    assert_eq!(
        fake.get_ephemeral_runner(NS, "runner-a").unwrap()["status"]["jobRequestId"],
        json!(7)
    );
    assert_only_patches(&fake);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    let mut config = config(SET, 0, 10);
    config.request_timeout = Duration::from_millis(300);
    let scaler = EphemeralRunnerSetScaler::new(client_for(&fake).await, config);
    fake.inject_fault(
        Fault::patch(
            FakeKubeApi::set_path(NS, SET),
            FaultAction::Delay(Duration::from_secs(5)),
        )
        .times(1),
    );
    assert_eq!(
        scaler.handle_desired_runner_count(1, false).await.unwrap(),
        1
    );
    assert_eq!(scaler.retries(), 1);
}

#[tokio::test]
async fn exhausted_retries_are_a_transient_error() {
    let fake = fake_with_runner("runner-a").await;
    fake.inject_fault(Fault::patch("*", FaultAction::Status(503)));
    let scaler = scaler(&fake, SET, 0, 10).await;

    let err = scaler
        .handle_desired_runner_count(1, false)
        .await
        .unwrap_err();
    assert!(err.kind().is_transient(), "{err}");
    assert!(
        matches!(err, ScalerError::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    // Every attempt sent the same decision.
    let bodies = set_patches(&fake, SET);
    assert_eq!(bodies.len(), 4);
    for body in bodies {
        assert_eq!(body, json!({"spec": {"patchID": 0, "replicas": 1}}));
    }

    // A failing runner-status patch never surfaces: the call returns normally.
    scaler.handle_jobs_started(vec![job("runner-a", 1)]).await;
    assert_eq!(fake.requests().len(), 8);
    assert_only_patches(&fake);
}

#[tokio::test]
async fn forbidden_and_missing_set_are_configuration_errors() {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, "other-set", 0);
    // RBAC names only SET: patching another set is forbidden.
    let scaler = scaler(&fake, "other-set", 0, 10).await;
    let err = scaler
        .handle_desired_runner_count(1, false)
        .await
        .unwrap_err();
    assert!(is_configuration(&err), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "ServiceAccount lacks `patch` on ephemeralrunnersets/other-set in {NS}"
        )),
        "{message}"
    );
    assert!(
        message.contains("cannot patch resource \"ephemeralrunnersets\""),
        "{message}"
    );

    // The allowed name but no such set.
    let scaler = scaler_for_missing(&fake).await;
    let err = scaler
        .handle_desired_runner_count(1, false)
        .await
        .unwrap_err();
    assert!(is_configuration(&err));
    assert_eq!(
        err.to_string(),
        format!("EphemeralRunnerSet {NS}/{SET} not found")
    );

    // Neither is retried.
    assert_eq!(scaler.retries(), 0);
    assert_eq!(fake.requests().len(), 2);

    // A 403 on a runner status is logged, not returned, not retried.
    fake.put_ephemeral_runner(NS, "runner-a");
    fake.inject_fault(Fault::patch(
        FakeKubeApi::runner_status_path(NS, "runner-a"),
        FaultAction::Status(403),
    ));
    scaler.handle_jobs_started(vec![job("runner-a", 1)]).await;
    assert_eq!(scaler.retries(), 0);
    assert_only_patches(&fake);
}

async fn scaler_for_missing(fake: &FakeKubeApi) -> EphemeralRunnerSetScaler {
    scaler(fake, SET, 0, 10).await
}

#[tokio::test]
async fn wrong_token_is_a_configuration_error() {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    let yaml = fake
        .kubeconfig_yaml()
        .replace(fake.token(), "not-the-token");
    let scaler =
        EphemeralRunnerSetScaler::from_kube_config(kube_config(&yaml).await, config(SET, 0, 10))
            .unwrap();
    let err = scaler
        .handle_desired_runner_count(1, false)
        .await
        .unwrap_err();
    assert!(matches!(err, ScalerError::Unauthorized { .. }), "{err:?}");
    assert!(is_configuration(&err));
    assert!(!format!("{err} {err:?}").contains(fake.token()));
}

#[tokio::test]
async fn runner_patches_run_concurrently_within_the_bound() {
    let fake = fake().await;
    let runners: Vec<String> = (0..50).map(|i| format!("runner-{i}")).collect();
    for r in &runners {
        fake.put_ephemeral_runner(NS, r);
    }
    // Latency keeps requests in flight long enough to overlap even on a loaded machine.
    fake.set_latency(Duration::from_millis(100));
    let client = client_for(&fake).await;
    for limit in [16usize, 4] {
        fake.reset_max_in_flight();
        fake.clear_requests();
        let config = ScalerConfig {
            runner_patch_concurrency: limit,
            ..config(SET, 0, 10)
        };
        let scaler = EphemeralRunnerSetScaler::new(client.clone(), config);
        let jobs = runners
            .iter()
            .enumerate()
            .map(|(i, r)| job(r, i as i64 + 1))
            .collect();
        scaler.handle_jobs_started(jobs).await;
        let max = fake.max_in_flight();
        assert!(max <= limit, "limit {limit}, saw {max}");
        assert!(
            max >= 2,
            "limit {limit}: patches were not concurrent (max {max})"
        );
        assert_eq!(fake.requests().len(), 50);
    }
    for (i, r) in runners.iter().enumerate() {
        assert_eq!(
            fake.get_ephemeral_runner(NS, r).unwrap()["status"]["jobRequestId"],
            json!(i + 1)
        );
    }
    assert_only_patches(&fake);
}

#[tokio::test]
async fn patches_are_sent_in_call_order() {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    fake.set_latency(Duration::from_millis(20));
    let scaler = std::sync::Arc::new(scaler(&fake, SET, 0, 100).await);
    let mut tasks = Vec::new();
    for count in 1..=8 {
        let scaler = std::sync::Arc::clone(&scaler);
        tasks.push(tokio::spawn(async move {
            scaler.handle_desired_runner_count(count, true).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Whatever order the calls won the lock in, patch IDs reach the server increasing.
    let ids: Vec<i64> = set_patches(&fake, SET)
        .iter()
        .map(|b| b["spec"]["patchID"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn runner_controller_follows_the_scale() {
    let fake = FakeKubeApi::builder()
        .namespace(NS)
        .allowed_set_name(SET)
        .with_runner_controller(true)
        .start()
        .await
        .unwrap();
    fake.put_ephemeral_runner_set(NS, SET, 0);
    let scaler = scaler(&fake, SET, 1, 5).await;
    assert_eq!(
        scaler.handle_desired_runner_count(2, false).await.unwrap(),
        3
    );
    let runners = fake.runners(NS);
    assert_eq!(runners.len(), 3);
    assert!(
        runners
            .iter()
            .all(|r| r.starts_with(&format!("{SET}-runner-")))
    );
    scaler.handle_jobs_started(vec![job(&runners[0], 1)]).await;
    // Scaling down keeps the busy runner.
    assert_eq!(
        scaler.handle_desired_runner_count(0, true).await.unwrap(),
        1
    );
    assert_eq!(fake.runners(NS), vec![runners[0].clone()]);
    assert_only_patches(&fake);
}

/// `from_environment` reads `KUBECONFIG` (kube's `Config::infer`). The environment of this
/// process cannot be changed safely, so the check runs in a child copy of this test binary.
#[tokio::test]
async fn from_environment_reads_kubeconfig() {
    let fake = fake().await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).unwrap();
    let exe = std::env::current_exe().unwrap();
    // Blocking wait off the runtime: the fake serves the child from this runtime.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "child_from_environment",
                "--ignored",
                "--nocapture",
            ])
            .env("KUBECONFIG", &path)
            .env("SCALER_CHILD_TEST", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
    assert_eq!(
        fake.get_ephemeral_runner_set(NS, SET).unwrap()["spec"]["replicas"],
        json!(2)
    );
}

#[tokio::test]
#[ignore = "run by from_environment_reads_kubeconfig in a child process"]
async fn child_from_environment() {
    if std::env::var_os("SCALER_CHILD_TEST").is_none() {
        return;
    }
    let scaler = EphemeralRunnerSetScaler::from_environment(config(SET, 0, 10))
        .await
        .unwrap();
    assert_eq!(
        scaler.handle_desired_runner_count(2, false).await.unwrap(),
        2
    );
}

#[tokio::test]
async fn unreachable_api_server_is_transient() {
    let fake = fake().await;
    let scaler = scaler(&fake, SET, 0, 10).await;
    drop(fake);
    let err = scaler
        .handle_desired_runner_count(1, false)
        .await
        .unwrap_err();
    assert!(err.kind().is_transient(), "{err:?}");
    assert_eq!(scaler.retries(), 3);
    // Runner patches against a dead server return normally too.
    scaler.handle_jobs_started(vec![job("runner-a", 1)]).await;
    assert_eq!(scaler.retries(), 6);
}

/// The kinds the listener exits on: wrong client config, token, RBAC or set name.
fn is_configuration(err: &scaler::ScalerError) -> bool {
    use retry::{Classify as _, FailureKind};
    matches!(
        err.kind(),
        FailureKind::InvalidInput
            | FailureKind::CredentialsRejected
            | FailureKind::Forbidden
            | FailureKind::NotFound
    )
}

#[tokio::test]
async fn dry_runs_prove_the_rights_and_change_nothing() {
    let fake = fake_with_runner("runner-1").await;
    fake.put_ephemeral_runner_set(NS, SET, 4);
    let before = fake.get_ephemeral_runner_set(NS, SET).unwrap();
    let scaler = scaler(&fake, SET, 1, 10).await;

    // Answered as if applied (min_runners), stored as before.
    assert_eq!(scaler.dry_run_scale().await.unwrap(), 1);
    assert_eq!(
        scaler.dry_run_runner_status().await.unwrap(),
        scaler::RunnerStatusRight::Granted
    );
    assert_eq!(fake.get_ephemeral_runner_set(NS, SET).unwrap(), before);
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.query.as_deref().is_some_and(|q| q.contains("dryRun=All"))),
        "{requests:#?}"
    );
    assert!(
        requests[1]
            .path
            .ends_with(&format!("/{}/status", scaler::DRY_RUN_RUNNER_NAME))
    );

    // A set the Role does not name: Forbidden, as the real patch would be.
    let other = EphemeralRunnerSetScaler::new(client_for(&fake).await, config("other-set", 0, 1));
    let err = other.dry_run_scale().await.unwrap_err();
    assert!(matches!(err, ScalerError::Forbidden { .. }), "{err}");
    assert_eq!(err.kind(), retry::FailureKind::Forbidden);
}
