//! Figure 1 (and 5a): from the moment the fake Actions service delivers one message to the
//! scale patch taking effect in the fake Kubernetes API, and to the last request of that
//! message's work.
//!
//! Timestamps come from the fakes only, so the same measurement serves the in-process
//! listener, the in-process baseline in the Go listener's order and the real binary:
//! - delivery: the listener's long poll is held inside the fake (the logs have been quiet
//!   for much longer than the injected latency), so the message goes out the moment it is
//!   enqueued; that moment is taken just before [`FakeActions::enqueue_raw_message`].
//! - scale patch: the fake Kubernetes API stamps a request after its injected latency, when
//!   it applies it; that stamp is "the patch arrived".
//! - work done: the latest of the fake Kubernetes API's stamps of the message's patches and,
//!   for the ack and the acquire, the fake Actions service's arrival stamp plus the latency
//!   it injects before answering.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use github_client::{
    ActionsClient, ClientOptions, Credentials, JobMessage, ProxyConfig, SecretString,
};
use listener_bin::actions_source::ActionsSource;
use listener_bin::listener::{Listener, LoopHealth, LoopMetrics, LoopSettings, runner_job_status};
use listener_bin::source::MessageSource;
use recorders::DiscardRecorder;
use scaler::{EphemeralRunnerSetScaler, Scaler, ScalerConfig};
use serde_json::json;
use simulator::actions::Endpoint;
use simulator::kube_api::FakeKubeApi;
use simulator::workload::{DEMO_TOKEN, Environment, NAMESPACE, SCALE_SET_ID, SET_NAME};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the fakes' logs must stay unchanged before the listener counts as idle (its
/// next long poll held inside the fake).
const QUIET: Duration = Duration::from_millis(150);
/// Bound on one measured message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The job messages of the measured message.
#[derive(Debug, Clone, Copy)]
pub struct MessageShape {
    pub available: usize,
    pub started: usize,
    pub completed: usize,
}

/// One measured message.
#[derive(Debug, Clone)]
pub struct Sample {
    pub scale: Duration,
    pub done: Duration,
    /// Status codes of the runner patches (200 when the runner exists).
    pub runner_patch_statuses: Vec<u16>,
}

/// Names of the runners the measured JobStarted messages name; they exist in the fake.
pub fn runner_name(i: usize) -> String {
    format!("bench-latency-runner-{i}")
}

pub fn create_runners(kube: &FakeKubeApi, n: usize) {
    for i in 0..n {
        kube.put_ephemeral_runner(NAMESPACE, &runner_name(i));
    }
}

/// The body of a `RunnerScaleSetJobMessages` message, hand-built so its content is exact.
/// Request ids are synthetic (from `first_id`): the acquire is a real call that acquires
/// nothing, and the runner patches target runners made by [`create_runners`].
pub fn message_body(shape: MessageShape, first_id: i64) -> String {
    let common = |kind: &str, id: i64, i: usize| {
        json!({
            "messageType": kind,
            "runnerRequestId": id,
            "repositoryName": "bench-repo",
            "ownerName": "bench-org",
            "jobId": format!("{}", 900_000 + id),
            "jobWorkflowRef": "bench-org/bench-repo/.github/workflows/ci.yml@refs/heads/main",
            "jobDisplayName": format!("build ({i})"),
            "workflowRunId": 500_000 + id,
            "eventName": "push",
            "requestLabels": ["demo-runner-set"],
            "queueTime": "2026-01-01T00:00:00Z",
            "scaleSetAssignTime": "2026-01-01T00:00:01Z",
            "runnerAssignTime": "2026-01-01T00:00:05Z",
            "finishTime": "0001-01-01T00:00:00Z",
        })
    };
    // Started and completed jobs run on the runners `create_runners` made.
    let on_runner = |kind: &str, id: i64, i: usize| {
        let mut j = common(kind, id, i);
        j["runnerId"] = json!(i + 1);
        j["runnerName"] = json!(runner_name(i));
        j
    };
    let mut jobs = Vec::new();
    let mut id = first_id;
    for i in 0..shape.available {
        let mut j = common("JobAvailable", id, i);
        j["acquireJobUrl"] = json!("https://example.invalid/acquire");
        j["runnerAssignTime"] = json!("0001-01-01T00:00:00Z");
        j["scaleSetAssignTime"] = json!("0001-01-01T00:00:00Z");
        jobs.push(j);
        id += 1;
    }
    for i in 0..shape.started {
        jobs.push(on_runner("JobStarted", id, i));
        id += 1;
    }
    for i in 0..shape.completed {
        let mut j = on_runner("JobCompleted", id, i);
        j["finishTime"] = json!("2026-01-01T00:01:00Z");
        j["result"] = json!("succeeded");
        jobs.push(j);
        id += 1;
    }
    serde_json::Value::Array(jobs).to_string()
}

/// Wait until neither fake saw a request for [`QUIET`].
pub async fn wait_quiet(env: &Environment, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let probe = || (env.actions.stats().requests, env.kube.requests().len());
    let mut last = probe();
    loop {
        tokio::time::sleep(QUIET).await;
        let now = probe();
        if now == last {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the listener did not go idle within {timeout:?}");
        }
        last = now;
    }
}

/// Bring the fake's job model to `n` assigned jobs (the listener under test acquires them),
/// so the measured message's statistics say `totalAssignedJobs = n`.
pub async fn settle_assigned(
    env: &Environment,
    n: usize,
    outstanding: &mut Vec<i64>,
) -> anyhow::Result<()> {
    for id in outstanding.drain(..) {
        env.actions.complete_job(id, "succeeded");
    }
    *outstanding = env.actions.queue_jobs(n);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = env.actions.statistics();
        if s.total_available_jobs == 0 && s.total_assigned_jobs == i64::try_from(n)? {
            break;
        }
        if Instant::now() > deadline {
            bail!("the listener did not acquire {n} jobs within 30 s: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    env.kube.clear_requests();
    wait_quiet(env, Duration::from_secs(30)).await
}

/// Deliver one message of `shape` and time it. `None` when a stray empty poll (and its
/// re-scale) overlapped the measurement; the caller measures again.
pub async fn measure_message(
    env: &Environment,
    shape: MessageShape,
    first_id: i64,
    latency: Duration,
) -> anyhow::Result<Option<Sample>> {
    wait_quiet(env, Duration::from_secs(30)).await?;
    env.kube.clear_requests();
    env.actions.clear_requests();
    let empty_polls = env.actions.stats().empty_polls;
    let set_path = FakeKubeApi::set_path(NAMESPACE, SET_NAME);
    let body = message_body(shape, first_id);
    let delivered = SystemTime::now();
    env.actions
        .enqueue_raw_message("RunnerScaleSetJobMessages", &body);
    let deadline = Instant::now() + MESSAGE_TIMEOUT;
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let kube = env.kube.requests();
        let actions = env.actions.requests();
        let scale = kube
            .iter()
            .find(|r| r.method == "PATCH" && r.path == set_path);
        let patches: Vec<_> = kube
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.contains("/ephemeralrunners/"))
            .collect();
        let ack = actions
            .iter()
            .find(|r| r.endpoint == Some(Endpoint::DeleteMessage));
        let acquire = actions
            .iter()
            .find(|r| r.endpoint == Some(Endpoint::AcquireJobs));
        let complete = scale.is_some()
            && patches.len() >= shape.started
            && ack.is_some()
            && (shape.available == 0 || acquire.is_some());
        if complete {
            let since = |t: SystemTime| t.duration_since(delivered).unwrap_or_default();
            let scale = scale.map(|r| since(r.at)).unwrap_or_default();
            let mut done = scale;
            for r in &patches {
                done = done.max(since(r.at));
            }
            for r in ack.iter().chain(acquire.iter()) {
                done = done.max(since(r.at) + latency);
            }
            if env.actions.stats().empty_polls != empty_polls {
                return Ok(None);
            }
            return Ok(Some(Sample {
                scale,
                done,
                runner_patch_statuses: patches.iter().map(|r| r.status).collect(),
            }));
        }
        if Instant::now() > deadline {
            bail!(
                "message not handled within {MESSAGE_TIMEOUT:?}: scale patch {}, runner patches {}/{}, ack {}, acquire {}",
                scale.is_some(),
                patches.len(),
                shape.started,
                ack.is_some(),
                acquire.is_some()
            );
        }
    }
}

/// What handles the messages in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// The real `Listener` loop, its scaler with this runner-patch concurrency.
    Listener { runner_patch_concurrency: usize },
    /// The Go listener's order, one request after another: ack, acquire, each runner patch,
    /// scale patch; built from the same session and scaler.
    GoListenerOrder,
}

impl Handler {
    pub fn label(&self) -> String {
        match self {
            Handler::Listener {
                runner_patch_concurrency,
            } => format!("listener (runner patches x{runner_patch_concurrency})"),
            Handler::GoListenerOrder => "Go listener order (sequential)".into(),
        }
    }
}

/// A handler running in this process against an [`Environment`]'s fakes.
pub struct InProcess {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn start(
        env: &Environment,
        handler: Handler,
        max_runners: i32,
    ) -> anyhow::Result<Self> {
        let options = ClientOptions {
            proxy: Some(ProxyConfig::default()),
            force_ghes: Some(false),
            ..ClientOptions::default()
        };
        let client = ActionsClient::new(
            &env.actions.configure_url("demo-org"),
            Credentials::Token(SecretString::new(DEMO_TOKEN)),
            options,
        )
        .map_err(|e| anyhow!("GitHub client: {e}"))?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&env.kube.kubeconfig_yaml())
            .context("kubeconfig of the fake")?;
        let kube_config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .context("kube config of the fake")?;
        let concurrency = match handler {
            Handler::Listener {
                runner_patch_concurrency,
            } => runner_patch_concurrency,
            Handler::GoListenerOrder => 1,
        };
        let scaler = EphemeralRunnerSetScaler::from_kube_config(
            kube_config,
            ScalerConfig {
                runner_patch_concurrency: concurrency,
                ..ScalerConfig::new(NAMESPACE, SET_NAME, 0, max_runners)
            },
        )
        .map_err(|e| anyhow!("scaler: {e}"))?;
        let shutdown = CancellationToken::new();
        let source = ActionsSource::open(client, SCALE_SET_ID, "bench".into(), &shutdown)
            .await
            .map_err(|e| anyhow!("message session: {e}"))?
            .context("session not opened")?;
        let stop = shutdown.clone();
        let task = match handler {
            Handler::Listener { .. } => tokio::spawn(async move {
                let listener = Listener::new(
                    source,
                    scaler,
                    Arc::new(DiscardRecorder),
                    LoopSettings {
                        max_runners,
                        ..LoopSettings::default()
                    },
                    LoopMetrics::unregistered(),
                    LoopHealth::default(),
                );
                let result = listener.run(stop).await;
                let _ = listener.source().close().await;
                result.map_err(|e| anyhow!("{e}"))
            }),
            Handler::GoListenerOrder => {
                tokio::spawn(go_listener_order_loop(source, scaler, max_runners, stop))
            }
        };
        Ok(Self { shutdown, task })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(anyhow!("handler task: {e}")),
            Err(_) => Err(anyhow!("handler did not stop within 10 s")),
        }
    }
}

/// The Go listener's per-message order, each request awaited before the next.
async fn go_listener_order_loop(
    source: ActionsSource,
    scaler: EphemeralRunnerSetScaler,
    max_runners: i32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let initial = source.initial_statistics().await.unwrap_or_default();
    let mut assigned = initial.total_assigned_jobs;
    scaler
        .handle_desired_runner_count(assigned, false)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut last_message_id = 0;
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break,
            polled = source.get_message(last_message_id, max_runners) => polled,
        };
        match polled {
            Ok(None) => {
                scaler
                    .handle_desired_runner_count(assigned, false)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            }
            Ok(Some(message)) => {
                if let Some(s) = &message.statistics {
                    assigned = s.total_assigned_jobs;
                }
                if let Err(e) = source.delete_message(message.message_id).await {
                    eprintln!("bench: Go-listener-order ack failed: {e}");
                }
                let available = message.available_job_ids();
                if !available.is_empty()
                    && let Err(e) = source.acquire_jobs(&available).await
                {
                    eprintln!("bench: Go-listener-order acquire failed: {e}");
                }
                let mut jobs_changed = false;
                for job in &message.jobs {
                    match job {
                        JobMessage::Started(j) => {
                            jobs_changed = true;
                            scaler.handle_jobs_started(vec![runner_job_status(j)]).await;
                        }
                        JobMessage::Completed(_) => jobs_changed = true,
                        _ => {}
                    }
                }
                scaler
                    .handle_desired_runner_count(assigned, jobs_changed)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                last_message_id = message.message_id;
            }
            Err(e) => {
                eprintln!("bench: Go-listener-order poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = source.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_message_parses_to_the_intended_jobs() {
        let body = message_body(
            MessageShape {
                available: 3,
                started: 3,
                completed: 2,
            },
            100,
        );
        let envelope = json!({
            "messageId": 1,
            "messageType": "RunnerScaleSetJobMessages",
            "body": body,
            "statistics": {"totalAssignedJobs": 3},
        });
        let message =
            github_client::messages::parse_queue_message(envelope.to_string().as_bytes()).unwrap();
        assert_eq!(message.skipped_jobs, 0);
        let kinds: Vec<&str> = message
            .jobs
            .iter()
            .map(|j| match j {
                JobMessage::Available(_) => "available",
                JobMessage::Assigned(_) => "assigned",
                JobMessage::Started(_) => "started",
                JobMessage::Completed(_) => "completed",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "available",
                "available",
                "available",
                "started",
                "started",
                "started",
                "completed",
                "completed"
            ]
        );
        let JobMessage::Started(started) = &message.jobs[3] else {
            unreachable!()
        };
        assert_eq!(started.runner_name, runner_name(0));
        assert_eq!(started.common.runner_request_id, 103);
    }
}
