//! Healing in place (issue 12): the real `ghalistener` against the simulator's fakes, with a
//! condition someone must fix injected and held for at least 10 s (the recovery cap lowered
//! to 2 s by `GHALISTENER_RECOVERY_MAX_BACKOFF_SECS`). Each test asserts: no exit, `/readyz`
//! not 200 while `/healthz` is, `gha_listener_degraded{reason}` at 1, a bounded number of
//! attempts; then clears the condition and asserts the session, the right replicas,
//! readiness and the gauge back at 0. Figures go to `FIGURES heal_<name> <json>` lines.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use simulator::actions::{Endpoint, Fault};
use simulator::support::{ListenerProcess, free_addr, http_get, http_ok, metric_value, wait_until};
use simulator::workload::{Environment, EnvironmentOptions, NAMESPACE, SET_NAME};

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");
/// How long each condition is held.
const HOLD: Duration = Duration::from_secs(10);
/// The recovery cap the tests run with, in seconds.
const CAP_SECS: u64 = 2;
/// Attempts a 10 s hold may cost at most with a 2 s cap: waits are jittered in
/// `[base/2, base]` from 1 s, so at least 0.5 + 1 + 1 + ... s apart (about 11), plus the
/// client's own first request and slack for the phase before the hold starts.
const MAX_ATTEMPTS_PER_HOLD: usize = 16;
/// Long enough for anything the listener does between two attempts.
const WAIT: Duration = Duration::from_secs(30);

struct Healing {
    env: Environment,
    /// Where the environment keeps its files, removed when the test ends.
    _dir: tempfile::TempDir,
    process: ListenerProcess,
    metrics: SocketAddr,
}

/// An environment in a new temporary directory, which [`Healing::spawn`] then keeps.
async fn environment() -> (tempfile::TempDir, Environment) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = EnvironmentOptions::new(dir.path());
    options.long_poll_hold = Duration::from_secs(1);
    options.metrics_addr = Some(free_addr().expect("free port"));
    let env = Environment::start(options).await.expect("environment");
    (dir, env)
}

impl Healing {
    fn spawn(dir: tempfile::TempDir, env: Environment) -> Self {
        let cap = CAP_SECS.to_string();
        let process = ListenerProcess::spawn_with(
            LISTENER,
            &env,
            &[("GHALISTENER_RECOVERY_MAX_BACKOFF_SECS", cap.as_str())],
        )
        .expect("spawn ghalistener");
        let metrics = env.options.metrics_addr.expect("metrics on");
        Self {
            env,
            _dir: dir,
            process,
            metrics,
        }
    }

    async fn degraded(&self, reason: &str) -> Option<f64> {
        let exposition = http_get(self.metrics, "/metrics").await;
        let series = format!("gha_listener_degraded{{reason=\"{reason}\"}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
    }

    async fn ready(&self) -> bool {
        http_ok(&http_get(self.metrics, "/readyz").await)
    }

    async fn healthy(&self) -> bool {
        http_ok(&http_get(self.metrics, "/healthz").await)
    }

    /// Wait until an async condition holds, polling every 100 ms.
    async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{what}: not within {WAIT:?}; log:\n{}",
            self.process.tail(40)
        );
    }

    async fn wait_degraded(&self, reason: &str) {
        self.eventually(&format!("degraded {reason}"), || async {
            self.degraded(reason).await == Some(1.0)
        })
        .await;
    }

    /// Hold the condition for [`HOLD`], checking the listener stays up, unready and
    /// degraded; returns the attempts `counts` saw during the hold.
    async fn hold(&mut self, reason: &str, counts: impl Fn(&Environment) -> usize) -> usize {
        let before = counts(&self.env);
        let until = Instant::now() + HOLD;
        while Instant::now() < until {
            assert!(
                self.process.try_exit().unwrap().is_none(),
                "listener exited while {reason}; log:\n{}",
                self.process.output()
            );
            assert!(!self.ready().await, "ready while {reason}");
            assert!(
                self.healthy().await,
                "/healthz must stay 200 while {reason}"
            );
            assert_eq!(self.degraded(reason).await, Some(1.0));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let attempts = counts(&self.env) - before;
        assert!(
            attempts <= MAX_ATTEMPTS_PER_HOLD,
            "{reason}: {attempts} attempts in {HOLD:?} with a {CAP_SECS} s cap"
        );
        attempts
    }

    /// After the condition cleared: ready again, the gauge at 0, one "recovered" line.
    async fn assert_recovered(&self, reason: &str) -> Duration {
        let cleared = Instant::now();
        self.eventually("ready again", || async { self.ready().await })
            .await;
        let took = cleared.elapsed();
        assert_eq!(self.degraded(reason).await, Some(0.0));
        let log = self.process.output();
        assert_eq!(
            log.matches("listener degraded").count(),
            1,
            "one line at the change of state, not one per retry; log:\n{log}"
        );
        assert!(log.contains("listener recovered"), "{log}");
        took
    }

    /// The whole spell: degraded by `reason`, held (attempts counted by `counts`), fixed by
    /// `fix`, recovered; the figures are reported under the reason's name.
    async fn wait_out(
        &mut self,
        reason: &str,
        counts: impl Fn(&Environment) -> usize,
        fix: impl FnOnce(&Environment),
    ) {
        self.wait_degraded(reason).await;
        let attempts = self.hold(reason, counts).await;
        fix(&self.env);
        let took = self.assert_recovered(reason).await;
        report(
            reason,
            json!({"attempts_in_10s": attempts, "ready_after_fix_s": took.as_secs_f64()}),
        );
    }

    async fn wait_replicas(&self, replicas: i64) {
        self.eventually(&format!("replicas {replicas}"), || async {
            self.env.replicas().0 == replicas
        })
        .await;
    }

    async fn stop(mut self) {
        let stopped = self
            .process
            .terminate(Duration::from_secs(30))
            .await
            .expect("sigterm");
        assert_eq!(stopped.code(), Some(0), "{}", self.process.tail(40));
    }
}

fn endpoint_count(env: &Environment, endpoint: Endpoint) -> usize {
    env.actions
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(endpoint))
        .count()
}

fn set_patches(env: &Environment, set: &str) -> usize {
    env.kube
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("ephemeralrunnersets/{set}")))
        .count()
}

fn report(name: &str, figures: serde_json::Value) {
    println!("FIGURES heal_{name} {figures}");
}

/// The PAT GitHub accepts after the rotation.
const ROTATED_PAT: &str = "ghp_rotatedDemoToken000000000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_github_token_heals_without_a_restart() {
    let (dir, env) = environment().await;
    let mut healing = Healing::spawn(dir, env);
    healing
        .eventually("started", || async { healing.ready().await })
        .await;
    // GitHub now accepts only a rotated token; the tokens issued so far are gone, so the
    // next poll needs a registration token the old PAT cannot get.
    healing.env.actions.set_accepted_pat(ROTATED_PAT);
    healing.env.actions.expire_admin_tokens();
    healing.env.actions.expire_queue_tokens();
    let registrations = |env: &Environment| endpoint_count(env, Endpoint::RegistrationToken);
    // The controller rewrites the config secret; the kubelet updates the file in place.
    let rotate = |env: &Environment| {
        let mut config = env.listener_config();
        config["github_token"] = json!(ROTATED_PAT);
        env.write_config(&config).unwrap();
    };
    healing
        .wait_out("credentials_rejected", registrations, rotate)
        .await;
    healing.env.actions.queue_jobs(2);
    healing.wait_replicas(2).await;
    healing.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scale_set_at_start_is_waited_out_until_it_is_registered() {
    let (dir, env) = environment().await;
    env.actions.set_scale_set_registered(false);
    env.actions.queue_jobs(3);
    let mut healing = Healing::spawn(dir, env);
    let sessions = |env: &Environment| {
        assert_eq!(env.actions.stats().sessions_created, 0);
        endpoint_count(env, Endpoint::CreateSession)
    };
    healing
        .wait_out("scale_set_not_found", sessions, |env| {
            env.actions.set_scale_set_registered(true)
        })
        .await;
    assert_eq!(healing.env.actions.stats().sessions_created, 1);
    healing.wait_replicas(3).await;
    healing.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_set_is_waited_out_and_patched_once_the_role_allows_it() {
    let (dir, env) = environment().await;
    env.kube.allowed_set_name(Some("some-other-set"));
    env.actions.queue_jobs(2);
    let mut healing = Healing::spawn(dir, env);
    let patches = |env: &Environment| set_patches(env, SET_NAME);
    // The operator widens the role to the set.
    let allow = |env: &Environment| env.kube.allowed_set_name(Some(SET_NAME));
    healing.wait_out("set_forbidden", patches, allow).await;
    healing.wait_replicas(2).await;
    healing.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_set_is_waited_out_until_it_exists() {
    const LATE_SET: &str = "late-set";
    let (dir, env) = environment().await;
    let mut config = env.listener_config();
    config["ephemeral_runner_set_name"] = json!(LATE_SET);
    env.write_config(&config).unwrap();
    env.kube.allowed_set_name(None);
    env.actions.queue_jobs(1);
    let mut healing = Healing::spawn(dir, env);
    healing
        .wait_out(
            "set_not_found",
            |env| set_patches(env, LATE_SET),
            |env| env.kube.put_ephemeral_runner_set(NAMESPACE, LATE_SET, 0),
        )
        .await;
    healing
        .eventually("late set scaled", || async {
            let set = healing
                .env
                .kube
                .get_ephemeral_runner_set(NAMESPACE, LATE_SET);
            set.and_then(|set| set["spec"]["replicas"].as_i64()) == Some(1)
        })
        .await;
    healing.stop().await;
}

/// ARC 4285: a long poll answered 200 with an empty or truncated body is transient: polled
/// again (the message is not acknowledged, so nothing is lost), no exit, not degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_poll_body_is_retried_and_loses_nothing() {
    let (dir, env) = environment().await;
    let healing = Healing::spawn(dir, env);
    healing
        .eventually("started", || async { healing.ready().await })
        .await;
    healing
        .env
        .actions
        .inject_fault(Endpoint::GetMessage, Fault::truncated_body(3));
    healing.env.actions.queue_jobs(2);
    healing.wait_replicas(2).await;
    let exposition = http_get(healing.metrics, "/metrics").await;
    assert!(
        metric_value(&exposition, "gha_listener_poll_errors_total") >= 3.0,
        "{exposition}"
    );
    assert_eq!(metric_value(&exposition, "gha_listener_degraded"), 0.0);
    assert_eq!(
        metric_value(&exposition, "gha_listener_poison_messages_total"),
        0.0
    );
    assert!(
        wait_until(WAIT, || healing
            .env
            .actions
            .statistics()
            .total_assigned_jobs
            == 2)
        .await
    );
    healing.stop().await;
}
