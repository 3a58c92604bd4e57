//! The message loop, in the Go listener's semantics but with a message's work done concurrently.
//!
//! Per message the Go listener runs, one after another: record statistics, ack, acquire, patch
//! each started job's runner, scale. Only the scale patch is what the controller waits for,
//! and it depends on nothing but the message's statistics; so here the scale patch, the ack,
//! the acquire and the runner patches start together, and the next poll starts once all of
//! them are done. Messages are still handled one at a time, so the sequence of scale
//! patches equals the sequential algorithm's.

use std::sync::Arc;
use std::time::Duration;

use github_client::{JobMessage, RunnerScaleSetMessage, RunnerScaleSetStatistic};
use recorders::Recorder;
use scaler::{EphemeralRunnerJobStatus, RunnerJobStatus, Scaler};
use tokio_util::sync::CancellationToken;

use retry::{Backoff, Classify, FailureKind};

use crate::recovery::{BlockedCall, Degradation, DegradedReason};
use crate::source::{MessageSource, SourceError};

pub use crate::health::LoopHealth;
pub use crate::loop_metrics::LoopMetrics;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("scaling failed: {0}")]
    Scale(Box<dyn std::error::Error + Send + Sync>),
    #[error("message session failed: {0}")]
    Source(#[from] SourceError),
}

/// What the loop does with a failure that outlived the libraries' own retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopAction {
    /// Wait ([`retry::policies::LISTENER_LOOP`], from the loop's settings) and try again.
    Retry,
    /// Acknowledge the message and go on with the next one.
    SkipPoison { message_id: i64 },
    /// Someone must fix something: not ready, degraded gauge, wait
    /// ([`retry::policies::recovery`]) and try again, reading the credentials again first
    /// when they were rejected.
    WaitOut(DegradedReason),
    /// Stop the loop with the error: the configuration cannot work as written; the process
    /// exits non-zero.
    Exit,
}

/// The listener's failure policy, one place for the session, the poll and the scale patch.
///
/// | condition (`FailureKind`, call)                     | the listener                                   | for how long |
/// |-----------------------------------------------------|------------------------------------------------|--------------|
/// | `Transient` (connection, timeout, 408, 429, 5xx, token refresh, lost session, scaler retries exhausted) | counts `poll_errors` / `scale_failures`, waits, tries again | until it succeeds or shutdown; waits 1 s doubling to 30 s, jittered (`LISTENER_LOOP`), reset by a successful poll |
/// | `Conflict` (a session still held elsewhere), `Rejected` (other 4xx, TLS, bad or truncated body) | same as `Transient` | same |
/// | `Poison { message_id }` (unparseable message)       | counts `poison_messages`, acks the message, goes on | once     |
/// | `CredentialsRejected` (GitHub 401/403 on a token request) | degraded `credentials_rejected`: not ready, reads the credentials again before each attempt | until it clears or shutdown; waits 1 s doubling to `GHALISTENER_RECOVERY_MAX_BACKOFF_SECS` (300 s), jittered |
/// | `NotFound` on the session (scale set unknown)       | degraded `scale_set_not_found`                 | same         |
/// | `Forbidden` / `CredentialsRejected` on the scale patch | degraded `set_forbidden`; the latest count is patched once allowed | same |
/// | `NotFound` on the scale patch (no such set)         | degraded `set_not_found`; likewise             | same         |
/// | `InvalidInput` (configuration that cannot work)     | ends the loop with the error; exit 1           | at once      |
///
/// Below this, the libraries have retried already: each GitHub request 4 times
/// (`GITHUB_REQUEST`, `Retry-After` up to 300 s), each Kubernetes patch 5 times
/// (`KUBE_REQUEST`, `retryAfterSeconds` up to 5 s), and session creation waits out a 409
/// for the client's `session_conflict_timeout`. A message source reports a lost session,
/// 404s and 409s from a poll as `Transient` (see [`SourceError`]'s `kind`), and a session it
/// could not re-create by the creation's own kind.
fn loop_action(kind: FailureKind, call: BlockedCall) -> LoopAction {
    match (kind, call) {
        (
            FailureKind::Transient { .. } | FailureKind::Conflict | FailureKind::Rejected { .. },
            _,
        ) => LoopAction::Retry,
        (FailureKind::Poison { message_id }, BlockedCall::Session) => {
            LoopAction::SkipPoison { message_id }
        }
        (FailureKind::CredentialsRejected | FailureKind::Forbidden, BlockedCall::Session) => {
            LoopAction::WaitOut(DegradedReason::CredentialsRejected)
        }
        (FailureKind::NotFound, BlockedCall::Session) => {
            LoopAction::WaitOut(DegradedReason::ScaleSetNotFound)
        }
        (FailureKind::CredentialsRejected | FailureKind::Forbidden, BlockedCall::Scale) => {
            LoopAction::WaitOut(DegradedReason::SetForbidden)
        }
        (FailureKind::NotFound, BlockedCall::Scale) => {
            LoopAction::WaitOut(DegradedReason::SetNotFound)
        }
        (FailureKind::InvalidInput | FailureKind::Poison { .. }, _) => LoopAction::Exit,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Settings of the loop itself.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub max_runners: i32,
    /// First wait after a failed poll or scale; doubles up to `max_backoff`, jittered.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// After shutdown, how long the work in hand (a message's ack, acquire and patches, or
    /// a scale retried by the scaler) may still run before it is abandoned; an unacked
    /// message is redelivered to the next listener. Part of the shutdown budget.
    pub shutdown_grace: Duration,
    /// Cap of the wait between attempts while degraded
    /// (`GHALISTENER_RECOVERY_MAX_BACKOFF_SECS`).
    pub recovery_max_backoff: Duration,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self {
            max_runners: i32::MAX,
            initial_backoff: retry::policies::LISTENER_LOOP.initial,
            max_backoff: retry::policies::LISTENER_LOOP.max,
            shutdown_grace: crate::shutdown::ShutdownBudget::DEFAULT.work_in_hand,
            recovery_max_backoff: retry::policies::RECOVERY_MAX_DEFAULT,
        }
    }
}

pub struct Listener<M, S> {
    source: M,
    scaler: S,
    recorder: Arc<dyn Recorder>,
    settings: LoopSettings,
    metrics: LoopMetrics,
    health: LoopHealth,
    degradation: Degradation,
    /// Request ids whose acquire failed, asked for again on the next turn of the loop.
    unacquired: std::sync::Mutex<Vec<i64>>,
}

/// Failed-acquire request ids kept at most (the newest); a burst's worth.
const MAX_UNACQUIRED: usize = 10_000;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A Vec of ids stays consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a message asks for, extracted once.
struct MessageWork {
    assigned_jobs: i64,
    jobs_changed: bool,
    available: Vec<i64>,
    started: Vec<RunnerJobStatus>,
}

impl MessageWork {
    fn of(message: &RunnerScaleSetMessage, assigned_jobs: i64) -> Self {
        let mut work = MessageWork {
            assigned_jobs,
            jobs_changed: false,
            available: Vec::new(),
            started: Vec::new(),
        };
        for job in &message.jobs {
            match job {
                JobMessage::Available(j) => work.available.push(j.common.runner_request_id),
                JobMessage::Assigned(_) => {}
                JobMessage::Started(j) => {
                    work.jobs_changed = true;
                    work.started.push(runner_job_status(j));
                }
                JobMessage::Completed(_) => work.jobs_changed = true,
            }
        }
        work
    }
}

/// The runner-status fields ARC's scaler writes for a started job.
pub fn runner_job_status(job: &github_client::JobStarted) -> RunnerJobStatus {
    let c = &job.common;
    RunnerJobStatus {
        runner_name: job.runner_name.clone(),
        status: EphemeralRunnerJobStatus {
            job_request_id: c.runner_request_id,
            job_repository_name: format!("{}/{}", c.owner_name, c.repository_name),
            job_id: c.job_id.clone(),
            workflow_run_id: c.workflow_run_id,
            job_workflow_ref: c.job_workflow_ref.clone(),
            job_display_name: c.job_display_name.clone(),
        },
    }
}

impl<M, S> Listener<M, S>
where
    M: MessageSource,
    S: Scaler,
    S::Error: Classify,
{
    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.settings.initial_backoff,
            self.settings.max_backoff,
            self.settings.max_backoff,
        )
    }

    pub fn new(
        source: M,
        scaler: S,
        recorder: Arc<dyn Recorder>,
        settings: LoopSettings,
        metrics: LoopMetrics,
        health: LoopHealth,
    ) -> Self {
        let degradation = Degradation::new(
            metrics.degraded.clone(),
            health.clone(),
            settings.recovery_max_backoff,
        );
        Self {
            source,
            scaler,
            recorder,
            settings,
            metrics,
            health,
            degradation,
            unacquired: Default::default(),
        }
    }

    pub fn source(&self) -> &M {
        &self.source
    }

    pub fn scaler(&self) -> &S {
        &self.scaler
    }

    /// Run until `shutdown` is cancelled (returns `Ok`) or a fatal error. The message in
    /// hand when shutdown arrives is finished; the long poll is abandoned. The session is
    /// not closed here: the caller closes it, also after a fatal error.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ListenerError> {
        let Some(initial) = self.start(&shutdown).await? else {
            return Ok(());
        };
        self.health.progress();
        self.recorder.record_statistics(&initial);
        let mut assigned_jobs = initial.total_assigned_jobs;
        tracing::info!(
            total_assigned_jobs = assigned_jobs,
            "handling initial session statistics"
        );
        let target = self.scale(assigned_jobs, false, &shutdown).await?;
        if let Some(target) = target {
            self.recorder.record_desired_runners(target);
        }

        let mut last_message_id: i64 = 0;
        let backoff = self.backoff();
        let mut failures: u32 = 0;
        loop {
            let polled = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                polled = self.source.get_message(last_message_id, self.settings.max_runners) => polled,
            };
            if polled.is_ok() {
                self.degradation.succeeded(BlockedCall::Session);
            }
            match polled {
                Ok(None) => {
                    self.health.progress();
                    failures = 0;
                    // No message: re-assert the latest count, as the Go listener does, so a set
                    // the controller drifted from gets corrected; ask again for jobs an
                    // earlier acquire failed on.
                    let (scaled, ()) = tokio::join!(
                        self.scale(assigned_jobs, false, &shutdown),
                        self.acquire(&[])
                    );
                    scaled?;
                }
                Ok(Some(message)) => {
                    self.health.progress();
                    failures = 0;
                    let statistics = message.statistics.unwrap_or_else(|| {
                        tracing::warn!(
                            message_id = message.message_id,
                            "message carried no statistics; keeping the last known"
                        );
                        Default::default()
                    });
                    if message.statistics.is_some() {
                        assigned_jobs = statistics.total_assigned_jobs;
                    }
                    last_message_id = message.message_id;
                    // Shutdown does not cancel the message in hand at once: it gets
                    // `shutdown_grace` to finish (retries inside can take much longer).
                    let handled = finish_within_grace(
                        self.handle_message(&message, assigned_jobs, &shutdown),
                        &shutdown,
                        self.settings.shutdown_grace,
                    )
                    .await;
                    match handled {
                        Some(result) => result?,
                        None => {
                            tracing::warn!(
                                message_id = message.message_id,
                                "shutdown: abandoning the message in hand; it will be redelivered"
                            );
                            return Ok(());
                        }
                    }
                }
                Err(error) => match loop_action(error.kind(), BlockedCall::Session) {
                    LoopAction::WaitOut(reason) => {
                        if self.wait_out(reason, &error, &shutdown).await {
                            return Ok(());
                        }
                    }
                    LoopAction::SkipPoison { message_id } => {
                        self.health.progress();
                        self.metrics.poison_messages.inc();
                        tracing::error!(message_id, error = %error, "skipping malformed message; scaling follows the next message's statistics");
                        last_message_id = message_id;
                        self.ack(message_id).await;
                    }
                    LoopAction::Exit => {
                        self.health.set_session_live(false);
                        return Err(ListenerError::Source(error));
                    }
                    LoopAction::Retry => {
                        self.metrics.poll_errors.inc();
                        let wait = backoff.delay(failures, None);
                        tracing::warn!(error = %error, retry_in_ms = millis(wait), "polling for messages failed; retrying");
                        if sleep_or_shutdown(wait, &shutdown).await {
                            return Ok(());
                        }
                        failures = failures.saturating_add(1);
                    }
                },
            }
        }
    }

    /// Open the session (or take the one already open) and return its statistics,
    /// waiting out whatever can clear. `Ok(None)` when shutdown came first.
    async fn start(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<RunnerScaleSetStatistic>, ListenerError> {
        let backoff = self.backoff();
        let mut failures: u32 = 0;
        loop {
            let started = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(None),
                started = self.source.start() => started,
            };
            let error = match started {
                Ok(statistics) => {
                    self.degradation.succeeded(BlockedCall::Session);
                    return Ok(Some(statistics.unwrap_or_else(|| {
                        tracing::warn!(
                            "session carried no statistics; starting from zero assigned jobs"
                        );
                        Default::default()
                    })));
                }
                Err(error) => error,
            };
            match loop_action(error.kind(), BlockedCall::Session) {
                LoopAction::WaitOut(reason) => {
                    if self.wait_out(reason, &error, shutdown).await {
                        return Ok(None);
                    }
                }
                LoopAction::Exit => return Err(ListenerError::Source(error)),
                LoopAction::Retry | LoopAction::SkipPoison { .. } => {
                    let wait = backoff.delay(failures, None);
                    tracing::warn!(error = %error, retry_in_ms = millis(wait), "creating the message session failed; retrying");
                    if sleep_or_shutdown(wait, shutdown).await {
                        return Ok(None);
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
    }

    /// One wait of a degraded spell; `true` when shutdown came first. Rejected credentials
    /// are read again before the next attempt, so a rotated secret heals in place.
    async fn wait_out(
        &self,
        reason: DegradedReason,
        error: &(dyn std::fmt::Display + Sync),
        shutdown: &CancellationToken,
    ) -> bool {
        let wait = self.degradation.wait_before_retry(reason, error);
        if sleep_or_shutdown(wait, shutdown).await {
            return true;
        }
        if reason == DegradedReason::CredentialsRejected
            && let Err(e) = self.source.reload_credentials().await
        {
            self.degradation.reload_failed(&e);
        }
        false
    }

    async fn handle_message(
        &self,
        message: &RunnerScaleSetMessage,
        assigned_jobs: i64,
        shutdown: &CancellationToken,
    ) -> Result<(), ListenerError> {
        self.metrics.messages.inc();
        if let Some(statistics) = &message.statistics {
            self.recorder.record_statistics(statistics);
        }
        let work = MessageWork::of(message, assigned_jobs);
        tracing::info!(
            message_id = message.message_id,
            jobs = message.jobs.len(),
            available = work.available.len(),
            started = work.started.len(),
            total_assigned_jobs = assigned_jobs,
            "handling message"
        );
        for job in &message.jobs {
            match job {
                JobMessage::Started(j) => self.recorder.record_job_started(j),
                JobMessage::Completed(j) => self.recorder.record_job_completed(j),
                _ => {}
            }
        }
        let scale = self.scale(work.assigned_jobs, work.jobs_changed, shutdown);
        let ack = self.ack(message.message_id);
        let acquire = self.acquire(&work.available);
        let runners = self.scaler.handle_jobs_started(work.started);
        let (target, (), (), ()) = tokio::join!(scale, ack, acquire, runners);
        if let Some(target) = target? {
            self.recorder.record_desired_runners(target);
        }
        Ok(())
    }

    /// Scale, retrying failures the scaler gave up on until they succeed, prove to be a
    /// configuration error, or shutdown. `Ok(None)` when shutdown interrupted the retries.
    async fn scale(
        &self,
        count: i64,
        jobs_changed: bool,
        shutdown: &CancellationToken,
    ) -> Result<Option<i32>, ListenerError> {
        let backoff = self.backoff();
        let mut failures: u32 = 0;
        loop {
            let attempt = finish_within_grace(
                self.scaler.handle_desired_runner_count(count, jobs_changed),
                shutdown,
                self.settings.shutdown_grace,
            )
            .await;
            let Some(attempt) = attempt else {
                tracing::warn!(
                    count,
                    "shutdown: abandoning a scale patch still being retried"
                );
                return Ok(None);
            };
            match attempt {
                Ok(target) => {
                    self.degradation.succeeded(BlockedCall::Scale);
                    return Ok(Some(target));
                }
                Err(e) => match loop_action(e.kind(), BlockedCall::Scale) {
                    LoopAction::Exit | LoopAction::SkipPoison { .. } => {
                        return Err(ListenerError::Scale(Box::new(e)));
                    }
                    LoopAction::WaitOut(reason) => {
                        if self.wait_out(reason, &e, shutdown).await {
                            return Ok(None);
                        }
                    }
                    LoopAction::Retry => {
                        self.metrics.scale_failures.inc();
                        let wait = backoff.delay(failures, None);
                        tracing::warn!(error = %e, count, retry_in_ms = millis(wait), "scaling failed; retrying");
                        if sleep_or_shutdown(wait, shutdown).await {
                            return Ok(None);
                        }
                        failures = failures.saturating_add(1);
                    }
                },
            }
        }
    }

    async fn ack(&self, message_id: i64) {
        if let Err(e) = self.source.delete_message(message_id).await {
            // The service redelivers an unacknowledged message; handling it again is
            // harmless (same statistics, acquire and runner patches are idempotent).
            self.metrics.ack_failures.inc();
            tracing::warn!(message_id, error = %e, "acknowledging message failed; it will be redelivered");
        }
    }

    /// Acquires `request_ids` and any jobs an earlier acquire failed on. The message is
    /// acknowledged before this answers, and the service offers a job once, so the ids of
    /// a failed acquire are kept and asked for again with the next message or empty poll
    /// (the Go listener exits instead, leaving the message unacknowledged). An answer, even
    /// without some of the ids, settles them: those are no longer available to us.
    async fn acquire(&self, request_ids: &[i64]) {
        let mut ids = std::mem::take(&mut *lock(&self.unacquired));
        let retried = ids.len();
        for id in request_ids {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        if ids.is_empty() {
            return;
        }
        match self.source.acquire_jobs(&ids).await {
            Ok(acquired) => {
                self.metrics.jobs_acquired.inc_by(acquired.len() as u64);
                tracing::info!(
                    requested = ids.len(),
                    retried,
                    acquired = acquired.len(),
                    "acquired jobs"
                );
            }
            Err(e) => {
                self.metrics.acquire_failures.inc();
                tracing::warn!(
                    requested = ids.len(),
                    error = %e,
                    "acquiring jobs failed; asking again with the next message or empty poll"
                );
                let mut unacquired = lock(&self.unacquired);
                // Keep the newest within the bound; older ids come first in `ids`.
                let keep = ids.len().min(MAX_UNACQUIRED);
                unacquired.extend_from_slice(&ids[ids.len() - keep..]);
            }
        }
    }
}

/// Run `work` to completion, unless `shutdown` fires: then it gets `grace` more before it
/// is dropped (`None`).
async fn finish_within_grace<F: std::future::Future>(
    work: F,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        output = &mut work => Some(output),
        _ = shutdown.cancelled() => tokio::time::timeout(grace, work).await.ok(),
    }
}

/// Sleep, or return `true` at once when shutdown arrives first.
/// Sleep `wait`; `true` when shutdown came first.
pub(crate) async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use github_client::{
        JobAvailable, JobCommon, JobCompleted, JobStarted, RunnerScaleSetStatistic,
    };
    use std::collections::VecDeque;
    use std::sync::Mutex;

    type Poll = Result<Option<RunnerScaleSetMessage>, SourceError>;

    /// Plays a script of poll results; when it runs out, asks for shutdown and waits.
    struct ScriptedSource {
        initial: RunnerScaleSetStatistic,
        polls: Mutex<VecDeque<Poll>>,
        acked: Mutex<Vec<i64>>,
        acquired: Mutex<Vec<Vec<i64>>>,
        /// Acquire calls still to fail (after recording what they asked for).
        failing_acquires: Mutex<usize>,
        credential_reloads: Mutex<usize>,
        done: CancellationToken,
    }

    impl ScriptedSource {
        fn new(initial_assigned: i64, polls: Vec<Poll>, done: CancellationToken) -> Self {
            Self {
                initial: RunnerScaleSetStatistic {
                    total_assigned_jobs: initial_assigned,
                    ..Default::default()
                },
                polls: Mutex::new(polls.into()),
                acked: Mutex::default(),
                acquired: Mutex::default(),
                failing_acquires: Mutex::default(),
                credential_reloads: Mutex::default(),
                done,
            }
        }
    }

    impl MessageSource for ScriptedSource {
        async fn start(&self) -> Result<Option<RunnerScaleSetStatistic>, SourceError> {
            Ok(Some(self.initial))
        }
        async fn reload_credentials(&self) -> Result<(), SourceError> {
            *self.credential_reloads.lock().unwrap() += 1;
            Ok(())
        }
        async fn get_message(&self, _: i64, _: i32) -> Poll {
            let next = self.polls.lock().unwrap().pop_front();
            match next {
                Some(p) => p,
                None => {
                    self.done.cancel();
                    std::future::pending().await
                }
            }
        }
        async fn delete_message(&self, id: i64) -> Result<(), SourceError> {
            self.acked.lock().unwrap().push(id);
            Ok(())
        }
        async fn acquire_jobs(&self, ids: &[i64]) -> Result<Vec<i64>, SourceError> {
            self.acquired.lock().unwrap().push(ids.to_vec());
            let mut failing = self.failing_acquires.lock().unwrap();
            if *failing > 0 {
                *failing -= 1;
                return Err(SourceError::SessionReplaced);
            }
            Ok(ids.to_vec())
        }
        async fn close(&self) -> Result<(), SourceError> {
            Ok(())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake scale failure ({0:?})")]
    struct FakeScaleError(FailureKind);
    impl Classify for FakeScaleError {
        fn kind(&self) -> FailureKind {
            self.0
        }
    }
    const TRANSIENT: FailureKind = FailureKind::Transient { retry_after: None };

    fn api_error(status: u16) -> Box<github_client::ApiError> {
        Box::new(github_client::ApiError {
            method: "GET".into(),
            url: "https://pipelines.example/message".into(),
            status,
            activity_id: None,
            github_request_id: None,
            type_name: None,
            message: None,
        })
    }

    #[derive(Default)]
    struct RecordingScaler {
        calls: Mutex<Vec<(i64, bool)>>,
        runner_patches: Mutex<Vec<RunnerJobStatus>>,
        /// Failures to return before succeeding.
        failures: Mutex<VecDeque<FailureKind>>,
    }

    impl Scaler for RecordingScaler {
        type Error = FakeScaleError;
        async fn handle_desired_runner_count(
            &self,
            count: i64,
            changed: bool,
        ) -> Result<i32, FakeScaleError> {
            self.calls.lock().unwrap().push((count, changed));
            if let Some(kind) = self.failures.lock().unwrap().pop_front() {
                return Err(FakeScaleError(kind));
            }
            Ok(count.min(10) as i32)
        }
        async fn handle_jobs_started(&self, jobs: Vec<RunnerJobStatus>) {
            self.runner_patches.lock().unwrap().extend(jobs);
        }
    }

    #[derive(Default)]
    struct CountingRecorder {
        events: Mutex<Vec<String>>,
    }
    impl Recorder for CountingRecorder {
        fn record_static(&self, min: i32, max: i32) {
            self.events
                .lock()
                .unwrap()
                .push(format!("static {min} {max}"));
        }
        fn record_statistics(&self, s: &RunnerScaleSetStatistic) {
            self.events
                .lock()
                .unwrap()
                .push(format!("stats {}", s.total_assigned_jobs));
        }
        fn record_job_started(&self, j: &JobStarted) {
            self.events
                .lock()
                .unwrap()
                .push(format!("started {}", j.common.runner_request_id));
        }
        fn record_job_completed(&self, j: &JobCompleted) {
            self.events
                .lock()
                .unwrap()
                .push(format!("completed {}", j.common.runner_request_id));
        }
        fn record_desired_runners(&self, c: i32) {
            self.events.lock().unwrap().push(format!("desired {c}"));
        }
    }

    fn common(id: i64) -> JobCommon {
        JobCommon {
            runner_request_id: id,
            owner_name: "octo".into(),
            repository_name: "app".into(),
            job_id: format!("job-{id}"),
            workflow_run_id: 77,
            job_workflow_ref: "octo/app/.github/workflows/ci.yml@refs/heads/main".into(),
            job_display_name: "build".into(),
            ..Default::default()
        }
    }

    fn message(id: i64, assigned: i64, jobs: Vec<JobMessage>) -> Poll {
        Ok(Some(RunnerScaleSetMessage {
            message_id: id,
            message_type: "RunnerScaleSetJobMessages".into(),
            statistics: Some(RunnerScaleSetStatistic {
                total_assigned_jobs: assigned,
                ..Default::default()
            }),
            jobs,
            skipped_jobs: 0,
        }))
    }

    fn available(id: i64) -> JobMessage {
        JobMessage::Available(JobAvailable {
            common: common(id),
            acquire_job_url: String::new(),
        })
    }
    fn started(id: i64) -> JobMessage {
        JobMessage::Started(JobStarted {
            common: common(id),
            runner_id: id,
            runner_name: format!("runner-{id}"),
        })
    }
    fn completed(id: i64) -> JobMessage {
        JobMessage::Completed(JobCompleted {
            common: common(id),
            result: "succeeded".into(),
            runner_id: id,
            runner_name: format!("runner-{id}"),
        })
    }

    fn settings() -> LoopSettings {
        LoopSettings {
            max_runners: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            shutdown_grace: Duration::from_millis(200),
            recovery_max_backoff: Duration::from_millis(4),
        }
    }

    async fn run_script(
        initial: i64,
        polls: Vec<Poll>,
        scaler: RecordingScaler,
    ) -> (
        Result<(), ListenerError>,
        Listener<ScriptedSource, RecordingScaler>,
        Arc<CountingRecorder>,
    ) {
        run_script_failing_acquires(initial, polls, scaler, 0).await
    }

    /// As `run_script`, with the first `failing_acquires` acquire calls failing.
    async fn run_script_failing_acquires(
        initial: i64,
        polls: Vec<Poll>,
        scaler: RecordingScaler,
        failing_acquires: usize,
    ) -> (
        Result<(), ListenerError>,
        Listener<ScriptedSource, RecordingScaler>,
        Arc<CountingRecorder>,
    ) {
        let done = CancellationToken::new();
        let recorder = Arc::new(CountingRecorder::default());
        let source = ScriptedSource::new(initial, polls, done.clone());
        *source.failing_acquires.lock().unwrap() = failing_acquires;
        let listener = Listener::new(
            source,
            scaler,
            recorder.clone(),
            settings(),
            LoopMetrics::unregistered(),
            LoopHealth::default(),
        );
        let result = tokio::time::timeout(Duration::from_secs(20), listener.run(done))
            .await
            .expect("loop ended");
        (result, listener, recorder)
    }

    #[tokio::test]
    async fn scale_sequence_follows_assigned_jobs_and_dirty_batches() {
        let polls = vec![
            message(1, 3, vec![available(11), available(12), available(13)]),
            message(2, 3, vec![started(11), started(12)]),
            Ok(None),
            message(3, 1, vec![completed(11), completed(12)]),
        ];
        let (result, listener, recorder) = run_script(2, polls, RecordingScaler::default()).await;
        result.unwrap();
        assert_eq!(
            *listener.scaler.calls.lock().unwrap(),
            vec![(2, false), (3, false), (3, true), (3, false), (1, true)]
        );
        assert_eq!(*listener.source.acked.lock().unwrap(), vec![1, 2, 3]);
        assert_eq!(
            *listener.source.acquired.lock().unwrap(),
            vec![vec![11, 12, 13]]
        );
        let patches = listener.scaler.runner_patches.lock().unwrap();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0].runner_name, "runner-11");
        assert_eq!(patches[0].status.job_repository_name, "octo/app");
        let events = recorder.events.lock().unwrap();
        assert!(events.contains(&"started 12".to_string()));
        assert!(events.contains(&"completed 11".to_string()));
        assert_eq!(
            events.iter().filter(|e| e.starts_with("desired")).count(),
            4,
            "{events:?}"
        );
        assert_eq!(listener.metrics.messages.get(), 3);
        assert_eq!(listener.metrics.jobs_acquired.get(), 3);
    }

    #[tokio::test]
    async fn jobs_of_a_failed_acquire_are_asked_for_again() {
        let polls = vec![
            message(1, 2, vec![available(11), available(12)]),
            message(2, 3, vec![available(13)]),
            message(3, 4, vec![available(14)]),
            Ok(None),
        ];
        let (result, listener, _) =
            run_script_failing_acquires(0, polls, RecordingScaler::default(), 2).await;
        result.unwrap();
        // Both failures keep the ids; the next message's acquire asks for them first; the
        // empty poll finds nothing left to ask for.
        assert_eq!(
            *listener.source.acquired.lock().unwrap(),
            vec![vec![11, 12], vec![11, 12, 13], vec![11, 12, 13, 14]]
        );
        assert_eq!(listener.metrics.acquire_failures.get(), 2);
        assert_eq!(listener.metrics.jobs_acquired.get(), 4);
        assert_eq!(*listener.source.acked.lock().unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn an_empty_poll_asks_again_for_unacquired_jobs() {
        let polls = vec![message(1, 1, vec![available(21)]), Ok(None)];
        let (result, listener, _) =
            run_script_failing_acquires(0, polls, RecordingScaler::default(), 1).await;
        result.unwrap();
        assert_eq!(
            *listener.source.acquired.lock().unwrap(),
            vec![vec![21], vec![21]]
        );
        assert_eq!(listener.metrics.jobs_acquired.get(), 1);
    }

    #[tokio::test]
    async fn poison_message_is_acked_counted_and_skipped() {
        let polls = vec![
            Err(SourceError::Client(
                github_client::Error::MalformedMessage {
                    message_id: Some(5),
                    source: github_client::MessageParseError::Body {
                        message_id: 5,
                        reason: "bad body".into(),
                    },
                },
            )),
            message(6, 1, vec![]),
        ];
        let (result, listener, _) = run_script(0, polls, RecordingScaler::default()).await;
        result.unwrap();
        assert_eq!(*listener.source.acked.lock().unwrap(), vec![5, 6]);
        assert_eq!(listener.metrics.poison_messages.get(), 1);
        assert_eq!(
            *listener.scaler.calls.lock().unwrap(),
            vec![(0, false), (1, false)]
        );
    }

    fn degraded(listener: &Listener<ScriptedSource, RecordingScaler>, reason: &str) -> i64 {
        listener.metrics.degraded.with_label_values(&[reason]).get()
    }

    #[tokio::test]
    async fn transient_poll_errors_are_retried_rejected_credentials_waited_out_bad_config_ends_the_loop()
     {
        let rejected = || {
            Err(SourceError::Client(
                github_client::Error::CredentialsRejected(api_error(401)),
            ))
        };
        let polls = vec![
            Err(SourceError::Client(github_client::Error::Status(
                api_error(503),
            ))),
            Err(SourceError::Client(github_client::Error::Status(
                api_error(503),
            ))),
            message(1, 2, vec![]),
            rejected(),
            rejected(),
            message(2, 3, vec![]),
            Err(SourceError::Client(github_client::Error::InvalidConfig {
                reason: "bad".into(),
            })),
        ];
        let (result, listener, _) = run_script(0, polls, RecordingScaler::default()).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, ListenerError::Source(e) if e.kind() == FailureKind::InvalidInput),
            "{err}"
        );
        assert_eq!(
            listener.metrics.poll_errors.get(),
            2,
            "degraded waits are not poll errors"
        );
        assert_eq!(*listener.source.acked.lock().unwrap(), vec![1, 2]);
        assert_eq!(
            *listener.source.credential_reloads.lock().unwrap(),
            2,
            "credentials read again before each attempt"
        );
        assert_eq!(degraded(&listener, "credentials_rejected"), 0, "recovered");
    }

    #[tokio::test]
    async fn scale_failures_are_retried_rbac_waited_out_and_configuration_errors_end_the_loop() {
        let scaler = RecordingScaler::default();
        scaler
            .failures
            .lock()
            .unwrap()
            .extend([TRANSIENT, TRANSIENT]);
        let (result, listener, _) = run_script(4, vec![message(1, 5, vec![])], scaler).await;
        result.unwrap();
        assert_eq!(
            *listener.scaler.calls.lock().unwrap(),
            vec![(4, false), (4, false), (4, false), (5, false)]
        );
        assert_eq!(listener.metrics.scale_failures.get(), 2);

        let scaler = RecordingScaler::default();
        scaler.failures.lock().unwrap().extend([
            FailureKind::Forbidden,
            FailureKind::Forbidden,
            FailureKind::NotFound,
        ]);
        let (result, listener, _) = run_script(4, vec![message(1, 5, vec![])], scaler).await;
        result.unwrap();
        assert_eq!(
            *listener.scaler.calls.lock().unwrap(),
            vec![(4, false), (4, false), (4, false), (4, false), (5, false)],
            "the same count until the patch is allowed"
        );
        assert_eq!(listener.metrics.scale_failures.get(), 0);
        assert_eq!(degraded(&listener, "set_forbidden"), 0);
        assert_eq!(degraded(&listener, "set_not_found"), 0);
        assert_eq!(*listener.source.credential_reloads.lock().unwrap(), 0);

        let scaler = RecordingScaler::default();
        scaler
            .failures
            .lock()
            .unwrap()
            .push_back(FailureKind::InvalidInput);
        let (result, _, _) = run_script(4, vec![], scaler).await;
        assert!(matches!(result, Err(ListenerError::Scale(_))));
    }

    #[test]
    #[rustfmt::skip]
    fn the_policy_waits_out_what_can_clear_and_exits_only_on_bad_configuration() {
        use BlockedCall::{Scale, Session};
        use DegradedReason::*;
        use FailureKind as K;
        let cases = [
            (K::CredentialsRejected, Session, LoopAction::WaitOut(CredentialsRejected)),
            (K::NotFound, Session, LoopAction::WaitOut(ScaleSetNotFound)),
            (K::Forbidden, Scale, LoopAction::WaitOut(SetForbidden)),
            (K::NotFound, Scale, LoopAction::WaitOut(SetNotFound)),
            (K::Conflict, Session, LoopAction::Retry),
            (K::Rejected { status: None }, Session, LoopAction::Retry),
            (K::InvalidInput, Session, LoopAction::Exit),
            (K::InvalidInput, Scale, LoopAction::Exit),
        ];
        for (kind, call, action) in cases {
            assert_eq!(loop_action(kind, call), action, "{kind:?} on {call:?}");
        }
    }

    /// A scale that never finishes (a scaler deep in retries) must not hold up shutdown.
    #[tokio::test]
    async fn shutdown_abandons_work_in_hand_after_the_grace_period() {
        struct HangingScaler;
        impl Scaler for HangingScaler {
            type Error = FakeScaleError;
            async fn handle_desired_runner_count(
                &self,
                count: i64,
                _: bool,
            ) -> Result<i32, FakeScaleError> {
                if count == 5 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok(count as i32)
            }
            async fn handle_jobs_started(&self, _: Vec<RunnerJobStatus>) {}
        }
        let shutdown = CancellationToken::new();
        let listener = Listener::new(
            ScriptedSource::new(0, vec![message(1, 5, vec![])], CancellationToken::new()),
            HangingScaler,
            Arc::new(CountingRecorder::default()),
            settings(),
            LoopMetrics::unregistered(),
            LoopHealth::default(),
        );
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(20), listener.run(shutdown))
            .await
            .expect("the loop ended although its scale hung")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(*listener.source.acked.lock().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn health_reflects_progress() {
        let health = LoopHealth::default();
        assert!(!health.is_ready(Duration::from_secs(60)));
        health.progress();
        assert!(health.is_ready(Duration::from_secs(60)));
        health.set_session_live(false);
        assert!(!health.is_ready(Duration::from_secs(60)));
    }
}
