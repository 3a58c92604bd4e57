//! Reliability under injected faults (issue 8): the real `ghalistener` binary against the
//! simulator's fakes, with faults injected on both sides.
//!
//! Quick scenarios run with `cargo test`. The long ones (real durations: a 90 s session
//! conflict, a minute of 20% faults, collector outages under bursts of thousands of jobs)
//! are `#[ignore]`d and run by `make chaos` (`.ci/chaos.sh`), concurrently. Every scenario
//! prints its figures as one `FIGURES <name> <json>` line and, when `CHAOS_REPORT_DIR` is
//! set, writes them to `<dir>/<name>.json`; `docs/reliability.md` reports them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use simulator::actions::{Endpoint, Fault};
use simulator::kube_api::{FakeKubeApi, Fault as KubeFault, FaultAction};
use simulator::otlp_sink::OtlpSink;
use simulator::support::{ListenerProcess, free_addr, http_get, http_ok, metric_value, wait_until};
use simulator::workload::{
    Environment, EnvironmentOptions, NAMESPACE, SET_NAME, WorkloadEvent, WorkloadOptions,
    WorkloadSummary, run_workload, wait_for_replicas,
};

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");

// ---- harness -----------------------------------------------------------------------------

/// A running listener process and its metrics address.
struct Proc {
    process: ListenerProcess,
    metrics: Option<SocketAddr>,
}

impl Proc {
    fn spawn(env: &Environment, extra_env: &[(&str, String)]) -> Proc {
        Proc {
            process: ListenerProcess::spawn_with(LISTENER, env, extra_env)
                .expect("spawn ghalistener"),
            metrics: env.options.metrics_addr,
        }
    }

    fn output(&self) -> String {
        self.process.output()
    }

    /// `Some(code)` once the process has exited.
    fn exited(&mut self) -> Option<Option<i32>> {
        self.process.try_exit().ok().flatten().map(|s| s.code())
    }

    /// Resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then the exit code and how long the exit took.
    async fn sigterm(&mut self) -> (Option<i32>, Duration) {
        let stopped = self
            .process
            .terminate(Duration::from_secs(30))
            .await
            .expect("sigterm");
        assert!(
            stopped.exit.is_some(),
            "listener did not exit after SIGTERM; log:\n{}",
            self.output()
        );
        (stopped.code(), stopped.took)
    }

    /// The end of a scenario: the listener is still up, and exits 0 on SIGTERM; the exit
    /// code (for the figures) and how long the exit took.
    async fn stop_cleanly(&mut self) -> (Option<i32>, Duration) {
        assert_eq!(self.exited(), None, "listener exited: {}", self.output());
        let (code, took) = self.sigterm().await;
        assert_eq!(code, Some(0), "{}", self.output());
        (code, took)
    }

    async fn metrics(&self) -> String {
        http_get(self.metrics.expect("metrics enabled"), "/metrics").await
    }

    async fn ready(&self) -> bool {
        http_ok(&http_get(self.metrics.expect("metrics enabled"), "/readyz").await)
    }
}

async fn environment(dir: &Path, configure: impl FnOnce(&mut EnvironmentOptions)) -> Environment {
    let mut options = EnvironmentOptions::new(dir);
    options.long_poll_hold = Duration::from_secs(2);
    options.metrics_addr = Some(free_addr().expect("free port"));
    configure(&mut options);
    Environment::start(options).await.expect("environment")
}

/// [`environment`] in a new temporary directory, removed when the returned guard drops.
async fn environment_in_tempdir(
    configure: impl FnOnce(&mut EnvironmentOptions),
) -> (tempfile::TempDir, Environment) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = environment(dir.path(), configure).await;
    (dir, env)
}

fn is_set_patch(path: &str) -> bool {
    path.ends_with(&format!("ephemeralrunnersets/{SET_NAME}"))
}

/// Listener up: session created, first scale patch sent.
async fn wait_started(env: &Environment, proc: &Proc, timeout: Duration) {
    let ok = wait_until(timeout, || {
        env.actions.stats().sessions_created >= 1
            && env.kube.requests().iter().any(|r| is_set_patch(&r.path))
    })
    .await;
    assert!(ok, "listener did not start; log:\n{}", proc.output());
}

/// Queues `jobs` jobs; the set must scale to them within 30 s.
async fn queue_and_scale(env: &Environment, proc: &Proc, jobs: usize) {
    env.actions.queue_jobs(jobs);
    let replicas = i64::try_from(jobs).expect("a few jobs");
    assert!(
        wait_for_replicas(env, replicas, Duration::from_secs(30)).await,
        "did not scale to {jobs}; log:\n{}",
        proc.output()
    );
}

/// Figures of one scenario: printed, and written to `$CHAOS_REPORT_DIR/<name>.json`.
fn report(name: &str, figures: Value) {
    println!("FIGURES {name} {figures}");
    if let Some(dir) = std::env::var_os("CHAOS_REPORT_DIR") {
        let dir = PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_vec_pretty(&figures).unwrap_or_default(),
        );
    }
}

/// Message and job accounting from the Actions fake's counters.
fn accounting(env: &Environment) -> Value {
    let s = env.actions.stats();
    json!({
        "jobs_queued": s.jobs_queued,
        "jobs_acquired": s.jobs_acquired,
        "jobs_started": s.jobs_started,
        "jobs_completed": s.jobs_completed,
        "messages_delivered": s.messages_delivered,
        "messages_redelivered": s.messages_redelivered,
        "messages_acked": s.messages_acked,
        "messages_lost": (s.messages_delivered - s.messages_redelivered).saturating_sub(s.messages_acked),
        "faults_fired_actions": s.faults_fired,
        "connections_dropped_actions": s.connections_dropped,
        "unauthorized_401": s.unauthorized,
        "session_refreshes": s.sessions_refreshed,
        "registration_tokens_issued": s.registration_tokens_issued,
        "runner_registrations": s.runner_registrations,
    })
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

/// A tiny deterministic PRNG (xorshift64*): reproducible fault sequences, no dependency.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n - 1)
    }
}

/// Queue `n` jobs and drive them to completion without a runner controller (synthetic
/// runner names): start each once the listener acquired it, complete it at once.
async fn burst(env: &Environment, n: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    let ids = env.actions.queue_jobs(n);
    let mut pending: Vec<i64> = ids;
    while !pending.is_empty() && started.elapsed() < timeout {
        pending.retain(|id| {
            if env
                .actions
                .start_job(*id, &format!("{SET_NAME}-burst-{id}"))
            {
                env.actions.complete_job(*id, "succeeded");
                false
            } else {
                true
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pending.is_empty(), "{} jobs never acquired", pending.len());
    started.elapsed()
}

// ---- quick scenarios (cargo test) ----------------------------------------------------------

// Kubernetes 403 / 404 on the set, rejected credentials and an unknown scale set are waited
// out in place: see `tests/heal.rs`.

/// A runner that is gone (404 on its status patch) is tolerated: jobs complete, scaling
/// goes on, no exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_404_is_tolerated() {
    let (_dir, env) = environment_in_tempdir(|o| {
        o.long_poll_hold = Duration::from_secs(1);
        o.runner_controller = false;
    })
    .await;
    let mut proc = Proc::spawn(&env, &[]);
    wait_started(&env, &proc, Duration::from_secs(30)).await;
    let workload = WorkloadOptions::waves(
        vec![3, 3],
        Duration::from_secs(1),
        Duration::from_millis(300),
    );
    let summary = run_workload(&env, &workload, |_| {}).await;
    assert!(!summary.timed_out, "{summary:?}\n{}", proc.output());
    assert!(wait_for_replicas(&env, 0, Duration::from_secs(20)).await);
    let not_found = env
        .kube
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/status") && r.status == 404)
        .count();
    assert_eq!(not_found, 6, "one 404 per started job");
    proc.stop_cleanly().await;
    report(
        "kube_runner_404",
        json!({"runner_404s": not_found, "jobs_completed": summary.completed, "exits": 0,
               "accounting": accounting(&env)}),
    );
}

/// SIGTERM in each phase: the session is deleted and the exit is 0 within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_every_phase_deletes_the_session_and_exits_zero_within_5s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (polling, handling, retrying_actions, retrying_kube) = tokio::join!(
        sigterm_phase(dir.path(), "polling"),
        sigterm_phase(dir.path(), "handling"),
        sigterm_phase(dir.path(), "retrying_actions"),
        sigterm_phase(dir.path(), "retrying_kubernetes"),
    );
    report(
        "sigterm_phases",
        json!({
            "polling": polling,
            "handling": handling,
            "retrying_actions": retrying_actions,
            "retrying_kubernetes": retrying_kube,
        }),
    );
}

/// Waits until `check` holds, which it must within 10 s.
async fn within_10s(phase: &str, check: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(10), check).await,
        "{phase}: not reached in 10 s"
    );
}

async fn sigterm_phase(dir: &Path, phase: &str) -> Value {
    let env = environment(&dir.join(phase), |o| {
        o.long_poll_hold = Duration::from_secs(30);
        o.metrics_addr = None;
    })
    .await;
    let mut proc = Proc::spawn(&env, &[]);
    wait_started(&env, &proc, Duration::from_secs(30)).await;
    let set_path = FakeKubeApi::set_path(NAMESPACE, SET_NAME);
    match phase {
        "polling" => {
            // Inside the 30 s hold of the first poll.
            within_10s(phase, || env.actions.stats().requests > 0).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        "handling" => {
            // The scale patch of the next message takes 4 s: SIGTERM lands mid-handling.
            env.kube.set_latency(Duration::from_secs(4));
            env.actions.queue_jobs(2);
            within_10s(phase, || env.actions.stats().messages_delivered >= 1).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        "retrying_actions" => {
            // Every ack answers 503: the client is deep in its retries (waits 1, 2, 4, 8 s).
            env.actions
                .inject_fault(Endpoint::DeleteMessage, Fault::status(503, 100));
            env.actions.queue_jobs(1);
            within_10s(phase, || {
                let requests = env.actions.requests();
                let acks = requests
                    .iter()
                    .filter(|r| r.endpoint == Some(Endpoint::DeleteMessage));
                acks.count() >= 2
            })
            .await;
        }
        "retrying_kubernetes" => {
            env.kube
                .inject_fault(KubeFault::patch(set_path.clone(), FaultAction::Status(503)));
            env.actions.queue_jobs(1);
            within_10s(phase, || {
                let requests = env.kube.requests();
                let refused = requests
                    .iter()
                    .filter(|r| r.path == set_path && r.status == 503);
                refused.count() >= 2
            })
            .await;
        }
        other => unreachable!("{other}"),
    }
    let (code, took) = proc.sigterm().await;
    assert_eq!(code, Some(0), "{phase}: {}", proc.output());
    assert!(took < Duration::from_secs(5), "{phase}: exit took {took:?}");
    let stats = env.actions.stats();
    assert_eq!(stats.sessions_deleted, 1, "{phase}: session not deleted");
    assert_eq!(stats.sessions_active, 0);
    json!({"exit_code": code, "exit_s": secs(took), "session_deleted": true})
}

// ---- chaos scenarios (make chaos) ----------------------------------------------------------

/// A session left by a crashed pod answers 409 for 90 s: the listener waits it out (no
/// exit), obtains the session and scales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long (90 s conflict): make chaos"]
async fn chaos_session_conflict_for_90s_is_waited_out() {
    let (_dir, env) = environment_in_tempdir(|_| {}).await;
    let conflict = Duration::from_secs(90);
    env.actions
        .add_stale_session("crashed-listener-pod", conflict);
    let t0 = Instant::now();
    let mut proc = Proc::spawn(&env, &[]);
    let mut exits = 0;
    let obtained = wait_until(Duration::from_secs(200), || {
        env.actions.stats().sessions_created >= 1
    })
    .await;
    if proc.exited().is_some() {
        exits += 1;
    }
    assert!(obtained, "no session after 200 s; log:\n{}", proc.output());
    let session_after = t0.elapsed();
    assert!(session_after >= conflict - Duration::from_secs(1));
    // Scaling resumes.
    queue_and_scale(&env, &proc, 3).await;
    let scaled_after = t0.elapsed();
    let exposition = proc.metrics().await;
    let (code, took) = proc.stop_cleanly().await;
    let stats = env.actions.stats();
    report(
        "session_conflict_90s",
        json!({
            "conflict_s": conflict.as_secs(),
            "conflicts_answered_409": stats.session_conflicts,
            "session_obtained_after_s": secs(session_after),
            "recovery_after_conflict_end_s": secs(session_after.saturating_sub(conflict)),
            "scaled_to_3_after_s": secs(scaled_after),
            "github_retries": metric_value(&exposition, "gha_listener_github_retries_total"),
            "exits": exits,
            "sigterm_exit_code": code,
            "sigterm_exit_s": secs(took),
        }),
    );
}

/// Queue-token expiry mid-poll, admin-token expiry and a flapping registration-token
/// endpoint while a workload runs: tokens are refreshed, no message or job is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make chaos"]
async fn chaos_token_expiry_and_registration_flapping_lose_no_message() {
    let (_dir, env) = environment_in_tempdir(|o| o.long_poll_hold = Duration::from_secs(1)).await;
    let mut proc = Proc::spawn(&env, &[]);
    wait_started(&env, &proc, Duration::from_secs(30)).await;

    let workload = WorkloadOptions::waves(
        vec![4, 6, 3, 5, 4, 6],
        Duration::from_secs(4),
        Duration::from_secs(1),
    )
    .within(Duration::from_secs(180));
    let stop = tokio_util::sync::CancellationToken::new();
    let chaos = {
        let stop = stop.clone();
        let actions = env.actions.clone();
        tokio::spawn(async move {
            let mut cycle = 0u32;
            let mut injected = 0u32;
            // Faults of the next cycle are armed only once the listener got through this
            // cycle's (a registration token issued, and a runner registration after a fault
            // on it), so one request's retries never meet more than one cycle's faults (at
            // most 3 against its 5 attempts) whatever the backoff's jitter. Arming on a bare
            // timer let a fifth attempt meet the next cycle's fault now and then (CI,
            // 2026-12-04), which exhausted an acquire's retries: a finding about the test's
            // schedule, not the listener.
            let got_through = |tokens: u64, registrations: u64| {
                let actions = actions.clone();
                let stop = stop.clone();
                async move {
                    while !stop.is_cancelled() {
                        let stats = actions.stats();
                        if stats.registration_tokens_issued > tokens
                            && stats.runner_registrations > registrations
                        {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            while !stop.is_cancelled() {
                let before = actions.stats();
                let (tokens, registrations) = (
                    before.registration_tokens_issued,
                    before.runner_registrations,
                );
                match cycle % 3 {
                    0 => actions.expire_queue_tokens(),
                    1 => {
                        actions.expire_admin_tokens();
                        actions.inject_fault(Endpoint::RegistrationToken, Fault::status(500, 2));
                        actions
                            .inject_fault(Endpoint::RegistrationToken, Fault::drop_connection(1));
                        actions.expire_queue_tokens();
                        injected += 3;
                    }
                    _ => {
                        actions.expire_admin_tokens();
                        actions.inject_fault(Endpoint::RunnerRegistration, Fault::status(503, 1));
                        actions.inject_fault(
                            Endpoint::RegistrationToken,
                            Fault {
                                status: Some(429),
                                retry_after: Some(1),
                                ..Fault::default()
                            },
                        );
                        actions.expire_queue_tokens();
                        injected += 2;
                    }
                }
                if !cycle.is_multiple_of(3) {
                    got_through(tokens, registrations).await;
                }
                cycle += 1;
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            (cycle, injected)
        })
    };
    let summary = run_workload(&env, &workload, |_| {}).await;
    stop.cancel();
    let (cycles, injected) = chaos.await.expect("chaos task");
    assert!(!summary.timed_out, "{summary:?}\n{}", proc.output());
    assert!(wait_for_replicas(&env, 0, Duration::from_secs(30)).await);
    let stats = env.actions.stats();
    let queued: usize = workload.waves.iter().sum();
    assert_eq!(summary.completed, queued);
    assert_eq!(
        stats.jobs_acquired as usize, queued,
        "every job acquired once"
    );
    assert_eq!(
        stats.messages_acked,
        stats.messages_delivered - stats.messages_redelivered,
        "an unacknowledged message"
    );
    // Every started job's runner is patched: 200, or 404 when the JobStarted message came
    // after the (1 s) job had already finished and its runner was deleted, as ARC deletes
    // ephemeral runners; the listener tolerates that by design.
    let patched = |status: u16| -> BTreeSet<i64> {
        env.kube
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/status") && r.status == status)
            .filter_map(|r| r.json()["status"]["jobRequestId"].as_i64())
            .collect()
    };
    let (annotated, runner_gone) = (patched(200), patched(404));
    assert_eq!(
        annotated.union(&runner_gone).count(),
        queued,
        "a started job's runner was never patched ({} annotated, {} already gone)",
        annotated.len(),
        runner_gone.len()
    );
    assert!(stats.sessions_refreshed > 0 && stats.unauthorized > 0);
    let exposition = proc.metrics().await;
    let (code, took) = proc.stop_cleanly().await;
    report(
        "token_expiry_and_registration_flapping",
        json!({
            "expiry_cycles": cycles,
            "registration_faults_injected": injected,
            "jobs": queued,
            "jobs_lost": queued - summary.completed,
            "annotated_jobs": annotated.len(),
            "runner_already_gone_404": runner_gone.len(),
            "accounting": accounting(&env),
            "github_retries": metric_value(&exposition, "gha_listener_github_retries_total"),
            "poll_errors": metric_value(&exposition, "gha_listener_poll_errors_total"),
            "exits": 0,
            "sigterm_exit_code": code,
            "sigterm_exit_s": secs(took),
        }),
    );
}

/// Faults on ~20% of every Actions and Kubernetes call, for `window`: each request the
/// fakes log arms a fault for a later request of the same endpoint with probability
/// `rate`, so in steady state that share of requests is faulted. Returns the faults armed.
async fn inject_at_rate(env: &Environment, rate: f64, window: Duration, seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed);
    let deadline = Instant::now() + window;
    let (mut actions_seen, mut kube_seen) = (0usize, 0usize);
    let (mut actions_armed, mut kube_armed) = (0u64, 0u64);
    while Instant::now() < deadline {
        let requests = env.actions.requests();
        for r in requests.iter().skip(actions_seen) {
            let Some(endpoint) = r.endpoint else { continue };
            if endpoint == Endpoint::DeleteSession || rng.next_f64() >= rate {
                continue;
            }
            let fault = match rng.pick(5) {
                0 => Fault::status(500, 1),
                1 => Fault::status(502, 1),
                2 => Fault::status(503, 1),
                3 => Fault {
                    status: Some(429),
                    retry_after: Some(1),
                    ..Fault::default()
                },
                _ => Fault::drop_connection(1),
            };
            env.actions.inject_fault(endpoint, fault);
            actions_armed += 1;
        }
        actions_seen = requests.len();
        let requests = env.kube.requests();
        for _ in requests.iter().skip(kube_seen) {
            if rng.next_f64() >= rate {
                continue;
            }
            let action = match rng.pick(4) {
                0 => FaultAction::Status(500),
                1 => FaultAction::Status(503),
                2 => FaultAction::Status(429),
                _ => FaultAction::DropConnection,
            };
            env.kube
                .inject_fault(KubeFault::patch("/apis/*", action).times(1));
            kube_armed += 1;
        }
        kube_seen = requests.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.actions.clear_faults();
    env.kube.clear_faults();
    (actions_armed, kube_armed)
}

/// Jobs left queued and never started when a run ends: the final statistics count them as
/// assigned once the listener acquired them.
const FINAL_UNSTARTED: usize = 4;

/// One run of a workload, then [`FINAL_UNSTARTED`] jobs queued and left unstarted.
struct Run {
    summary: WorkloadSummary,
    /// Each started job's request id and the runner it started on.
    started: BTreeMap<i64, String>,
    took: Duration,
}

async fn run_then_leave_jobs_queued(env: &Environment, workload: &WorkloadOptions) -> Run {
    let t0 = Instant::now();
    let mut started = BTreeMap::new();
    let summary = run_workload(env, workload, |e| {
        if let WorkloadEvent::Started { request_id, runner } = e {
            started.insert(*request_id, runner.clone());
        }
    })
    .await;
    env.actions.queue_jobs(FINAL_UNSTARTED);
    Run {
        summary,
        started,
        took: t0.elapsed(),
    }
}

/// Wait until the listener has handled the last message there will be, once the test has
/// stopped changing the jobs (call it after the last `queue_jobs`).
///
/// Every change of the fake's job model (queued, acquired, started, completed) enqueues a
/// job message, and nothing changes the model now but the listener's acquires, which it
/// makes while handling a message, before it polls again. So a poll that finds nothing to
/// deliver for its whole hold, and that started after an earlier empty poll ended (hence
/// after this call), proves that every message was delivered and acknowledged, and that
/// the last one delivered carried the final statistics: the listener handled it (scale
/// patch included: it retries that until it succeeds) before polling again. One empty
/// poll is not enough: a poll held since before the last `queue_jobs` may time out empty
/// at the moment the new message arrives.
async fn wait_last_message_handled(env: &Environment, timeout: Duration) -> bool {
    let base = env.actions.stats().empty_polls;
    wait_until(timeout, || {
        let s = env.actions.stats();
        s.empty_polls >= base + 2
            && s.messages_delivered - s.messages_redelivered == s.messages_acked
    })
    .await
}

/// What a run must end in, whatever faults it met: the replicas ARC's scaler computes
/// from the last statistics, and every started job's runner annotated with that job.
/// Returns the figures; panics naming the run otherwise.
async fn check_final_state(
    name: &str,
    env: &Environment,
    run: &Run,
    waves: &[usize],
    proc: &Proc,
) -> Value {
    assert!(
        !run.summary.timed_out,
        "{name}: workload timed out: {:?}\n{}",
        run.summary,
        proc.output()
    );
    let queued: usize = waves.iter().sum();
    assert_eq!(run.summary.completed, queued, "{name}: jobs lost");
    assert!(
        wait_last_message_handled(env, Duration::from_secs(180)).await,
        "{name}: the listener did not handle its last message: {:?}\n{}",
        env.actions.stats(),
        proc.output()
    );

    // The replicas: `min(min_runners + totalAssignedJobs, max_runners)` of the last
    // statistics (the scaler's arithmetic), whatever the path there was. A job whose
    // acquire failed after the client's retries stays available, not assigned.
    let statistics = env.actions.statistics();
    let o = &env.options;
    let expected = (o.min_runners + statistics.total_assigned_jobs).min(o.max_runners);
    let converged = wait_until(Duration::from_secs(30), || env.replicas().0 == expected).await;
    assert!(
        converged,
        "{name}: replicas {} but the last statistics ({statistics:?}) give {expected}\n{}",
        env.replicas().0,
        proc.output()
    );

    // The annotations: every started job's JobStarted message was handled (all messages
    // were), and the scaler patches that job's runner: answered 200, or 404 when the
    // runner was deleted by the time the patch landed (tolerated, as ARC's scaler does):
    // its job was over, or the simulated controller removed it on a scale-down as idle
    // before the patch marked it busy. Each patch names the job the fake started on that runner, with the
    // fields the fake gave it: wave w's i-th job is `build (i)`, ids in queueing order.
    let default_job = simulator::actions::FakeJob::default();
    let display: BTreeMap<i64, String> = waves
        .iter()
        .flat_map(|&n| (1..=n).map(|i| format!("build ({i})")))
        .zip(1i64..)
        .map(|(display, id)| (id, display))
        .collect();
    assert_eq!(
        run.started.keys().copied().collect::<Vec<_>>(),
        display.keys().copied().collect::<Vec<_>>(),
        "{name}: not every queued job started"
    );
    let requests = env.kube.requests();
    let status_patches: Vec<_> = requests
        .iter()
        .filter(|r| r.path.split('?').next().unwrap_or("").ends_with("/status"))
        .collect();
    let mut problems = Vec::new();
    let (mut annotated, mut gone, mut given_up) = (0usize, 0usize, 0usize);
    let output = proc.output();
    for (id, runner) in &run.started {
        let path = FakeKubeApi::runner_status_path(NAMESPACE, runner);
        let on_runner: Vec<_> = status_patches
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path.as_str()))
            .collect();
        let answered = |status: u16| on_runner.iter().filter(|r| r.status == status).count();
        let answers: Vec<u16> = on_runner.iter().map(|r| r.status).collect();
        match (answered(200), answered(404)) {
            // The retry budget spent on faults alone: the policy says give up with a
            // warning naming the runner and go on. The injected faults queue up and hit
            // whichever patch comes next, so a lone retry after a burst can meet several
            // in a row; that is what the statistics dictate, not a lost job.
            (0, 0) if budget_spent_on_faults(&answers) => {
                let warned = output.lines().any(|line| {
                    line.contains("EphemeralRunner status patch failed after retries")
                        && line.contains(runner.as_str())
                });
                if warned {
                    given_up += 1;
                } else {
                    problems.push(format!(
                        "job {id}: runner {runner} retries exhausted without the warning"
                    ));
                }
            }
            (0, 0) => problems.push(format!(
                "job {id}: runner {runner} never patched (answers: {answers:?})"
            )),
            (0, _) => gone += 1,
            _ => annotated += 1,
        }
        for r in on_runner.iter().filter(|r| matches!(r.status, 200 | 404)) {
            let s = &r.json()["status"];
            let wanted = json!({
                "jobRequestId": id,
                "jobRepositoryName": format!("{}/{}", default_job.owner_name, default_job.repository_name),
                "jobDisplayName": display[id],
                "jobWorkflowRef": default_job.job_workflow_ref,
            });
            let got = json!({
                "jobRequestId": s["jobRequestId"],
                "jobRepositoryName": s["jobRepositoryName"],
                "jobDisplayName": s["jobDisplayName"],
                "jobWorkflowRef": s["jobWorkflowRef"],
            });
            if got != wanted {
                problems.push(format!(
                    "job {id}: runner {runner} patched with {got}, not {wanted}"
                ));
            }
        }
    }
    let started_paths: BTreeSet<String> = run
        .started
        .values()
        .map(|runner| FakeKubeApi::runner_status_path(NAMESPACE, runner))
        .collect();
    for r in &status_patches {
        if !started_paths.contains(r.path.split('?').next().unwrap_or("")) {
            problems.push(format!(
                "a status patch of {} (no job started there)",
                r.path
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{name}: runner annotations: {problems:#?}\n{}",
        proc.output()
    );
    json!({
        "final_replicas": env.replicas().0,
        "final_assigned_jobs": statistics.total_assigned_jobs,
        "jobs_left_unacquired": statistics.total_available_jobs,
        "annotations": annotated,
        "annotations_late_404": gone,
        "annotations_given_up_after_retries": given_up,
        "jobs_completed": run.summary.completed,
        "run_s": secs(run.took),
    })
}

/// Every answer a fault (a dropped connection, 429, 5xx) and as many as the scaler's budget
/// allows: the first attempt and [`retry::policies::KUBE_REQUEST_MAX_RETRIES`] retries.
fn budget_spent_on_faults(answers: &[u16]) -> bool {
    let budget = retry::policies::KUBE_REQUEST_MAX_RETRIES as usize + 1;
    answers.len() == budget && answers.iter().all(|s| matches!(s, 0 | 429 | 500..=599))
}

/// 5xx / 429 / dropped connections on ~20% of every Actions and Kubernetes call for a
/// minute: once the listener has handled its last message, the replicas are what the last
/// statistics dictate and every started job's runner carries its annotation, as in a
/// fault-free run (which runs alongside under the same checks); no panic, no exit;
/// retries counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long (a minute of faults): make chaos"]
async fn chaos_faults_at_20_percent_for_a_minute_end_as_the_statistics_dictate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = environment(&dir.path().join("clean"), |_| {}).await;
    let faulty = environment(&dir.path().join("faulty"), |_| {}).await;
    let mut clean_proc = Proc::spawn(&clean, &[]);
    let mut faulty_proc = Proc::spawn(&faulty, &[]);
    wait_started(&clean, &clean_proc, Duration::from_secs(30)).await;
    wait_started(&faulty, &faulty_proc, Duration::from_secs(30)).await;

    let workload = WorkloadOptions::waves(
        vec![3, 5, 2, 6, 4, 3, 5, 2, 4, 3],
        Duration::from_secs(5),
        // Long enough that a patch delayed by retries usually still finds its runner.
        Duration::from_secs(10),
    )
    .failing_every(4)
    .within(Duration::from_secs(300));
    let window = Duration::from_secs(60);
    let t0 = Instant::now();
    let (clean_run, faulty_run, (armed_actions, armed_kube)) = tokio::join!(
        run_then_leave_jobs_queued(&clean, &workload),
        run_then_leave_jobs_queued(&faulty, &workload),
        inject_at_rate(&faulty, 0.2, window, 0x5eed_cafe_f00d_0001),
    );
    let faults_over_at = window.min(t0.elapsed());
    let (clean_figures, faulty_figures) = tokio::join!(
        check_final_state(
            "fault-free run",
            &clean,
            &clean_run,
            &workload.waves,
            &clean_proc
        ),
        check_final_state(
            "faulty run",
            &faulty,
            &faulty_run,
            &workload.waves,
            &faulty_proc
        ),
    );
    // Without faults every job left queued is acquired.
    assert_eq!(
        clean_figures["final_assigned_jobs"],
        json!(FINAL_UNSTARTED),
        "fault-free run: {clean_figures}"
    );

    let output = faulty_proc.output();
    assert!(!output.contains("panicked"), "panic: {output}");
    assert_eq!(
        faulty_proc.exited(),
        None,
        "faulty listener exited: {output}"
    );
    let exposition = faulty_proc.metrics().await;
    let kube_requests = faulty.kube.requests();
    let kube_faulted = kube_requests
        .iter()
        .filter(|r| matches!(r.status, 0 | 429 | 500 | 503))
        .count();
    let actions_stats = faulty.actions.stats();
    let faulted_share = (actions_stats.faults_fired as f64 + kube_faulted as f64)
        / (actions_stats.requests as f64 + kube_requests.len() as f64);
    let (clean_code, _) = clean_proc.sigterm().await;
    let (faulty_code, faulty_exit) = faulty_proc.sigterm().await;
    assert_eq!((clean_code, faulty_code), (Some(0), Some(0)));
    report(
        "faults_20_percent_one_minute",
        json!({
            "fault_window_s": faults_over_at.as_secs(),
            "faults_armed_actions": armed_actions,
            "faults_armed_kubernetes": armed_kube,
            "faults_fired_actions": actions_stats.faults_fired,
            "faults_fired_kubernetes": kube_faulted,
            "requests_actions": actions_stats.requests,
            "requests_kubernetes": kube_requests.len(),
            "faulted_share_of_requests": (faulted_share * 1000.0).round() / 1000.0,
            "github_retries": metric_value(&exposition, "gha_listener_github_retries_total"),
            "kubernetes_retries": metric_value(&exposition, "gha_listener_kubernetes_retries_total"),
            "poll_errors": metric_value(&exposition, "gha_listener_poll_errors_total"),
            "ack_failures": metric_value(&exposition, "gha_listener_ack_failures_total"),
            "acquire_failures": metric_value(&exposition, "gha_listener_acquire_failures_total"),
            "scale_failures": metric_value(&exposition, "gha_listener_scale_failures_total"),
            "jobs": clean_run.summary.queued + FINAL_UNSTARTED,
            "clean": clean_figures,
            "faulty": faulty_figures,
            "accounting_faulty": accounting(&faulty),
            "exits": 0,
            "sigterm_exit_s": secs(faulty_exit),
        }),
    );
}

/// A long poll that never answers: the client's timeout detects it, the listener
/// reconnects, readiness drops and recovers, and scaling works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make chaos"]
async fn chaos_stalled_long_poll_is_detected_and_recovered() {
    let (_dir, env) = environment_in_tempdir(|o| o.long_poll_hold = Duration::from_secs(1)).await;
    let long_poll_timeout = 4;
    let stale_after = 6;
    let mut proc = Proc::spawn(
        &env,
        &[
            (
                "GHALISTENER_LONG_POLL_TIMEOUT_SECS",
                long_poll_timeout.to_string(),
            ),
            (
                "GHALISTENER_READINESS_STALE_AFTER_SECS",
                stale_after.to_string(),
            ),
        ],
    );
    wait_started(&env, &proc, Duration::from_secs(30)).await;
    let mut ready_before = false;
    for _ in 0..100 {
        if proc.ready().await {
            ready_before = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready_before, "never ready: {}", proc.output());

    // The service stalls: the next 6 polls are held for 10 minutes.
    let stalled_polls = 6;
    let t0 = Instant::now();
    env.actions.inject_fault(
        Endpoint::GetMessage,
        Fault::delay(Duration::from_secs(600), stalled_polls),
    );
    let mut not_ready_at = None;
    let mut ready_again_at = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    while Instant::now() < deadline {
        let ready = proc.ready().await;
        if not_ready_at.is_none() && !ready {
            not_ready_at = Some(t0.elapsed());
        }
        if not_ready_at.is_some() && ready {
            ready_again_at = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let not_ready_at =
        not_ready_at.unwrap_or_else(|| panic!("readiness never dropped: {}", proc.output()));
    let ready_again_at =
        ready_again_at.unwrap_or_else(|| panic!("readiness never recovered: {}", proc.output()));
    // Scaling works after the stall.
    let queued_at = Instant::now();
    queue_and_scale(&env, &proc, 2).await;
    let scale_latency = queued_at.elapsed();
    let exposition = proc.metrics().await;
    let timeouts_logged = proc
        .output()
        .lines()
        .filter(|l| l.contains("timed out"))
        .count();
    let (code, took) = proc.stop_cleanly().await;
    report(
        "stalled_long_poll",
        json!({
            "stalled_polls": stalled_polls,
            "long_poll_timeout_s": long_poll_timeout,
            "readiness_stale_after_s": stale_after,
            "readiness_dropped_after_s": secs(not_ready_at),
            "readiness_recovered_after_s": secs(ready_again_at),
            "not_ready_for_s": secs(ready_again_at - not_ready_at),
            "scale_latency_after_recovery_s": secs(scale_latency),
            "timeout_log_lines": timeouts_logged,
            "github_retries": metric_value(&exposition, "gha_listener_github_retries_total"),
            "poll_errors": metric_value(&exposition, "gha_listener_poll_errors_total"),
            "exits": 0,
            "sigterm_exit_code": code,
            "sigterm_exit_s": secs(took),
        }),
    );
}

/// A collector that accepts connections and never answers.
async fn stalled_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("http://{addr}"), task)
}

/// Delivery-to-delivery times of back-to-back queue messages (the listener polls again
/// only when the previous message is fully handled): the per-message handling latency.
fn handling_latencies(env: &Environment, since: SystemTime) -> Vec<Duration> {
    let polls: Vec<(u16, SystemTime)> = env
        .actions
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::GetMessage) && r.at >= since)
        .map(|r| (r.status, r.at))
        .collect();
    polls
        .windows(2)
        .filter(|w| w[0].0 == 200 && w[1].0 == 200)
        .filter_map(|w| w[1].1.duration_since(w[0].1).ok())
        .collect()
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The OpenTelemetry collector refusing, stalled, or going down mid-run: message handling
/// latency stays that of a listener without a collector, the span failure/drop counters
/// rise, memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long (thousands of jobs): make chaos"]
async fn chaos_otel_collector_down_refusing_or_stalled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = format!("http://{}", free_addr().expect("free port"));
    let (stalled, _stalled_task) = stalled_collector().await;
    let sink = OtlpSink::start().await.expect("sink");
    let cases: Vec<(&str, Option<String>, usize)> = vec![
        ("no_collector", None, 1500),
        ("refusing", Some(refused), 1500),
        ("down_mid_run", Some(sink.endpoint()), 1500),
        ("stalled", Some(stalled), 1500),
    ];
    let mut runs = Vec::new();
    for (name, endpoint, jobs) in cases {
        let env = environment(&dir.path().join(name), |o| {
            o.long_poll_hold = Duration::from_secs(1);
            o.runner_controller = false;
            o.max_runners = 100;
            o.otel_endpoint = endpoint;
        })
        .await;
        let proc = Proc::spawn(&env, &[]);
        runs.push((name, env, proc, jobs));
    }
    for (_, env, proc, _) in &runs {
        wait_started(env, proc, Duration::from_secs(30)).await;
    }
    let sink_ref = &sink;
    let results = futures::future::join_all(runs.iter().map(|(name, env, proc, jobs)| async move {
        let since = SystemTime::now();
        let mut burst_s = Vec::new();
        let mut rss = Vec::new();
        for round in 0..3 {
            if round == 1 && *name == "down_mid_run" {
                sink_ref.shutdown();
            }
            burst_s.push(secs(burst(env, *jobs, Duration::from_secs(400)).await));
            tokio::time::sleep(Duration::from_secs(3)).await;
            rss.push(proc.rss_kib());
        }
        let latencies = handling_latencies(env, since);
        let exposition = proc.metrics().await;
        (
            *name,
            json!({
                "jobs": jobs * 3,
                "burst_s": burst_s,
                "messages_timed": latencies.len(),
                "handling_p50_ms": percentile(&latencies, 0.5).as_millis() as u64,
                "handling_p95_ms": percentile(&latencies, 0.95).as_millis() as u64,
                "handling_max_ms": percentile(&latencies, 1.0).as_millis() as u64,
                "rss_kib_after_each_burst": rss,
                "spans_exported": metric_value(&exposition, "gha_listener_spans_exported_total"),
                "spans_export_failed": metric_value(&exposition, "gha_listener_spans_export_failed_total"),
                "spans_dropped": metric_value(&exposition, "gha_listener_spans_dropped_total"),
                "spans_pending": metric_value(&exposition, "gha_listener_spans_pending"),
            }),
        )
    }))
    .await;
    let mut figures = json!({});
    for (name, f) in results {
        figures[name] = f;
    }
    let baseline_p95 = figures["no_collector"]["handling_p95_ms"]
        .as_u64()
        .unwrap_or(0);
    for (name, _, proc, _) in &mut runs {
        let f = &figures[*name];
        let p95 = f["handling_p95_ms"].as_u64().unwrap_or(u64::MAX);
        // An export on the message path would cost the 10 s export timeout.
        assert!(
            p95 < 5000,
            "{name}: handling p95 {p95} ms (without collector: {baseline_p95} ms)"
        );
        // The span queue is bounded (8192 spans): once it is full (by the second burst
        // of a stalled collector), a third burst must not grow the process.
        let rss = |i: usize| f["rss_kib_after_each_burst"][i].as_i64().unwrap_or(0);
        let growth = rss(2) - rss(1);
        assert!(
            growth < 16 * 1024,
            "{name}: RSS grew {growth} KiB in the third burst"
        );
        assert_eq!(proc.exited(), None, "{name} exited: {}", proc.output());
        let (code, took) = proc.sigterm().await;
        assert_eq!(code, Some(0), "{name}");
        assert!(took < Duration::from_secs(5), "{name}: exit took {took:?}");
        figures[*name]["sigterm_exit_s"] = json!(secs(took));
    }
    for name in ["refusing", "down_mid_run", "stalled"] {
        let f = &figures[name];
        let lost = f["spans_export_failed"].as_f64().unwrap_or(0.0)
            + f["spans_dropped"].as_f64().unwrap_or(0.0);
        assert!(
            lost > 0.0,
            "{name}: no span counted as failed or dropped: {f}"
        );
    }
    report("otel_collector_faults", figures);
}
