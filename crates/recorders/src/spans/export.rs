//! Span export: a bounded queue that recording only enqueues onto, a background task
//! that batches and exports over OTLP/HTTP, and the `gha_listener_spans_*` counters that
//! account for every span (exported, failed, dropped, or still pending).
//!
//! A completed job whose run attempt is being looked up is queued as a [`PendingJob`]: the
//! batcher builds its spans when the attempt is known or its wait is over (then attempt 1),
//! without holding up the other spans; shutdown ends every wait at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use github_client::JobCompleted;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::OtelSettings;
use super::attempts::JobTraceIds;
use super::build::{SCOPE_NAME, SCOPE_VERSION, Scratch, SpanBatch, SpanBuilder};
use super::encode;
use super::ids::UNKNOWN_ATTEMPT;
use super::otlp_http::Transport;
use crate::RecorderError;
use crate::labels::ScaleSetLabels;
use crate::metric::{register_counter, register_counter_vec, register_error, register_gauge};

/// Prometheus counters of the export pipeline, on the listener's registry.
#[derive(Clone)]
pub(super) struct PipelineMetrics {
    pub(super) exported: IntCounter,
    pub(super) failed: IntCounter,
    pub(super) dropped_queue_full: IntCounter,
    pub(super) dropped_shutdown: IntCounter,
    /// Spans accepted and not yet exported, failed or dropped.
    pub(super) pending: IntGauge,
    /// `gha_listener_run_attempt_lookups_total` by `result`.
    pub(super) run_attempt_lookups: IntCounterVec,
}

/// The `result` values of `gha_listener_run_attempt_lookups_total`, all shown from the start.
const LOOKUP_RESULTS: [&str; 5] = ["ok", "denied", "not_found", "rate_limited", "error"];

impl PipelineMetrics {
    pub(super) fn register(registry: &Registry) -> Result<Self, RecorderError> {
        let counter = |name: &str, help: &str| {
            register_counter(registry, name, help).map_err(register_error(name))
        };
        let family = |name: &str, help: &str, label: &str| {
            register_counter_vec(registry, name, help, &[label]).map_err(register_error(name))
        };
        let exported = counter(
            "gha_listener_spans_exported_total",
            "Job spans accepted by the OTLP collector.",
        )?;
        let failed = counter(
            "gha_listener_spans_export_failed_total",
            "Job spans whose export failed or timed out.",
        )?;
        let dropped = family(
            "gha_listener_spans_dropped_total",
            "Job spans dropped without an export attempt (queue full, or shut down).",
            "reason",
        )?;
        let pending_name = "gha_listener_spans_pending";
        let pending = register_gauge(registry, pending_name, "Job spans waiting to be exported.")
            .map_err(register_error(pending_name))?;
        let run_attempt_lookups = family(
            "gha_listener_run_attempt_lookups_total",
            "Run-attempt lookups on GitHub's REST API for job spans, by result (cached answers are not counted).",
            "result",
        )?;
        for result in LOOKUP_RESULTS {
            run_attempt_lookups.with_label_values(&[result]);
        }
        Ok(Self {
            run_attempt_lookups,
            exported,
            failed,
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_shutdown: dropped.with_label_values(&["shutdown"]),
            pending,
        })
    }
}

struct Control {
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
}

/// The run attempt of a completed job: known, or being looked up until `deadline`.
pub(super) enum JobAttempt {
    Known(u32),
    Lookup {
        attempt: watch::Receiver<Option<u32>>,
        deadline: Instant,
    },
}

/// A completed job on its way to export: its spans are built (encoded) once its attempt is
/// known or its wait is over (then attempt 1).
pub(super) struct PendingJob {
    pub(super) job: JobCompleted,
    pub(super) attempt: JobAttempt,
    /// Spans the job gives ([`SpanBuilder::span_count`]).
    pub(super) spans: usize,
}

/// The sending side of the pipeline: enqueue never waits; shutdown drains within a bound.
pub(super) struct ExportQueue {
    queue: mpsc::UnboundedSender<PendingJob>,
    /// Spans in the queue, not yet taken by the batcher: bounded by `capacity`.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    pub(super) metrics: PipelineMetrics,
    control: Mutex<Option<Control>>,
}

impl ExportQueue {
    /// Start the batching task for `transport` on `runtime`.
    pub(super) fn start<T: Transport>(
        transport: T,
        resource: Vec<u8>,
        settings: &OtelSettings,
        metrics: PipelineMetrics,
        spans: Arc<SpanBuilder>,
        trace_ids: JobTraceIds,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let batcher = Batcher {
            transport,
            resource,
            scope: encode::scope(SCOPE_NAME, SCOPE_VERSION),
            max_batch_size: settings.max_batch_size.max(1),
            batch_interval: settings.batch_interval,
            export_timeout: settings.timeout,
            metrics: metrics.clone(),
            spans,
            trace_ids,
            queued: queued.clone(),
            batch: SpanBatch::default(),
            scratch: Scratch::default(),
        };
        let task = runtime.spawn(batcher.run(receiver, stopped));
        Self {
            queue,
            queued,
            capacity: settings.queue_capacity.max(1),
            metrics,
            control: Mutex::new(Some(Control { stop, task })),
        }
    }

    /// Queue a completed job; its spans are dropped (and counted) when the queue already
    /// holds `queue_capacity` spans, or after shutdown.
    pub(super) fn enqueue_job(&self, job: PendingJob) {
        let spans = job.spans;
        if spans == 0 {
            return;
        }
        let n = spans as u64;
        let queued = self.queued.fetch_add(spans, Ordering::Relaxed);
        if queued + spans > self.capacity {
            self.queued.fetch_sub(spans, Ordering::Relaxed);
            self.metrics.dropped_queue_full.inc_by(n);
            let dropped = self.metrics.dropped_queue_full.get();
            // Warned each time the total passes a power of two, not once per job.
            let before = dropped - n;
            if before == 0 || before.ilog2() != dropped.ilog2() {
                tracing::warn!(dropped, "span queue full, dropping job spans");
            }
            return;
        }
        self.metrics
            .pending
            .add(i64::try_from(n).unwrap_or(i64::MAX));
        if self.queue.send(job).is_err() {
            self.queued.fetch_sub(spans, Ordering::Relaxed);
            self.metrics
                .pending
                .sub(i64::try_from(n).unwrap_or(i64::MAX));
            self.metrics.dropped_shutdown.inc_by(n);
        }
    }

    /// See [`super::SpanRecorder::shutdown`].
    pub(super) async fn shutdown(&self, timeout: Duration) {
        let control = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(Control { stop, mut task }) = control else {
            return;
        };
        let _ = stop.send(Instant::now() + timeout);
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            task.abort();
            // The abort lands at the task's next yield; until then it may still finish an
            // export on another thread and count it. Wait, so each span is counted once.
            let _ = task.await;
            tracing::warn!(?timeout, "span export did not finish in time");
        }
        let lost = self.metrics.pending.get();
        if lost > 0 {
            self.metrics.dropped_shutdown.inc_by(lost.unsigned_abs());
            self.metrics.pending.sub(lost);
        }
        tracing::info!(
            exported = self.metrics.exported.get(),
            failed = self.metrics.failed.get(),
            dropped = self.metrics.dropped_queue_full.get() + self.metrics.dropped_shutdown.get(),
            "span recorder stopped"
        );
    }
}

/// The resource of every export: the scale set and namespace, `OTEL_RESOURCE_ATTRIBUTES`,
/// and `service.name`; a later source of the same key wins, as in the OpenTelemetry SDK.
pub(super) fn resource(settings: &OtelSettings, labels: &ScaleSetLabels) -> Vec<u8> {
    let mut attributes: Vec<(&str, &str)> = vec![
        ("github.runner_scale_set.name", &labels.name),
        ("k8s.namespace.name", &labels.namespace),
    ];
    let later = settings
        .resource_attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("service.name", settings.service_name.as_str())]);
    for (key, value) in later {
        attributes.retain(|(k, _)| *k != key);
        attributes.push((key, value));
    }
    encode::resource(attributes)
}

/// The receiving side: collects spans into batches of at most `max_batch_size` (a job's
/// spans stay together), exports a partial batch every `batch_interval`, and drains until
/// the shutdown deadline.
struct Batcher<T> {
    transport: T,
    /// The encoded `Resource` and `InstrumentationScope` of every request.
    resource: Vec<u8>,
    scope: Vec<u8>,
    max_batch_size: usize,
    batch_interval: Duration,
    export_timeout: Duration,
    metrics: PipelineMetrics,
    spans: Arc<SpanBuilder>,
    trace_ids: JobTraceIds,
    queued: Arc<AtomicUsize>,
    batch: SpanBatch,
    scratch: Scratch,
}

type WaitForAttempt = Pin<Box<dyn Future<Output = (JobCompleted, u32)> + Send>>;
type Waiting = FuturesUnordered<WaitForAttempt>;

/// Waits for `job`'s attempt until its deadline or the end of waiting (shutdown), whichever
/// comes first; then the attempt known by then, or 1.
fn wait_for_attempt(
    job: JobCompleted,
    mut attempt: watch::Receiver<Option<u32>>,
    deadline: Instant,
    mut waiting_over: watch::Receiver<bool>,
) -> WaitForAttempt {
    Box::pin(async move {
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, attempt.wait_for(Option::is_some)) => {}
            _ = waiting_over.wait_for(|over| *over) => {}
        }
        let known = *attempt.borrow();
        (job, known.unwrap_or(UNKNOWN_ATTEMPT))
    })
}

impl<T: Transport> Batcher<T> {
    /// The spans of a job whose attempt is known, onto the batch (already counted as
    /// pending when the job was queued). A batch never exceeds `max_batch_size` unless one
    /// job alone does: the batch is exported first when the job's spans would not fit.
    async fn add_job(&mut self, job: &JobCompleted, attempt: u32, deadline: Option<Instant>) {
        let spans = SpanBuilder::span_count(job);
        if !self.batch.is_empty() && self.batch.count + spans > self.max_batch_size {
            self.export(deadline).await;
        }
        self.trace_ids.record(job.common.workflow_run_id, attempt);
        self.spans
            .write_job(job, attempt, &mut self.batch, &mut self.scratch);
        if self.batch.count >= self.max_batch_size {
            self.export(deadline).await;
        }
    }

    /// A job taken from the queue: its spans now, or a wait for its attempt.
    async fn take(
        &mut self,
        job: PendingJob,
        waiting: &mut Waiting,
        waiting_over: &watch::Receiver<bool>,
        deadline: Option<Instant>,
    ) {
        self.queued.fetch_sub(job.spans, Ordering::Relaxed);
        match job.attempt {
            JobAttempt::Known(attempt) => self.add_job(&job.job, attempt, deadline).await,
            JobAttempt::Lookup { attempt, deadline } => {
                waiting.push(wait_for_attempt(
                    job.job,
                    attempt,
                    deadline,
                    waiting_over.clone(),
                ));
            }
        }
    }

    async fn run(
        mut self,
        mut queue: mpsc::UnboundedReceiver<PendingJob>,
        mut stop: oneshot::Receiver<Instant>,
    ) {
        let mut waiting = Waiting::new();
        let (end_waiting, waiting_over) = watch::channel(false);
        let mut tick = tokio::time::interval(self.batch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = loop {
            tokio::select! {
                deadline = &mut stop => {
                    // The recorder was dropped without shutdown: a short, bounded drain.
                    break deadline.unwrap_or_else(|_| Instant::now() + Duration::from_secs(1));
                }
                job = queue.recv() => match job {
                    Some(job) => self.take(job, &mut waiting, &waiting_over, None).await,
                    None => break Instant::now() + Duration::from_secs(1),
                },
                Some((job, attempt)) = waiting.next(), if !waiting.is_empty() => {
                    self.add_job(&job, attempt, None).await;
                }
                _ = tick.tick() => {
                    if !self.batch.is_empty() {
                        self.export(None).await;
                    }
                }
            }
        };
        // Shutting down: take what is queued, end every wait for an attempt (what is known
        // by now is used), and export it all while time remains.
        queue.close();
        while let Ok(job) = queue.try_recv() {
            self.take(job, &mut waiting, &waiting_over, Some(deadline))
                .await;
        }
        let _ = end_waiting.send(true);
        while let Ok(Some((job, attempt))) = tokio::time::timeout_at(deadline, waiting.next()).await
        {
            self.add_job(&job, attempt, Some(deadline)).await;
        }
        if !self.batch.is_empty() {
            self.export(Some(deadline)).await;
        }
        // Whatever is still pending is counted as dropped by ExportQueue::shutdown.
    }

    /// Export the batch (not after `deadline`: then its spans stay pending).
    async fn export(&mut self, deadline: Option<Instant>) {
        let mut limit = self.export_timeout;
        if let Some(deadline) = deadline {
            limit = limit.min(deadline.saturating_duration_since(Instant::now()));
            if limit.is_zero() {
                return;
            }
        }
        let batch = std::mem::take(&mut self.batch);
        let n = batch.count as u64;
        let request = encode::export_request(&self.resource, &self.scope, &batch.encoded);
        // The buffer keeps its size for the next batch.
        self.batch.encoded = batch.encoded;
        self.batch.encoded.clear();
        match tokio::time::timeout(limit, self.transport.send(request)).await {
            Ok(Ok(())) => self.metrics.exported.inc_by(n),
            Ok(Err(error)) => {
                self.metrics.failed.inc_by(n);
                tracing::warn!(%error, spans = n, "exporting job spans failed");
            }
            Err(_) => {
                self.metrics.failed.inc_by(n);
                tracing::warn!(timeout = ?limit, spans = n, "exporting job spans timed out");
            }
        }
        self.metrics
            .pending
            .sub(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
