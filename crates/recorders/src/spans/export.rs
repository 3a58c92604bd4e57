//! Span export: a bounded queue that recording only enqueues onto, a background task
//! that batches and exports over OTLP/HTTP, and the `gha_listener_spans_*` counters that
//! account for every span (exported, failed, dropped, or still pending).
//!
//! A completed job whose run attempt is being looked up is queued as a [`PendingJob`]: the
//! batcher builds its spans when the attempt is known or its wait is over (then attempt 1),
//! without holding up the other spans; shutdown ends every wait at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use github_client::JobCompleted;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::OtelSettings;
use super::attempts::JobTraceIds;
use super::build::SpanBuilder;
use super::ids::UNKNOWN_ATTEMPT;
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
        let exported = counter(
            "gha_listener_spans_exported_total",
            "Job spans accepted by the OTLP collector.",
        )?;
        let failed = counter(
            "gha_listener_spans_export_failed_total",
            "Job spans whose export failed or timed out.",
        )?;
        let dropped_name = "gha_listener_spans_dropped_total";
        let dropped = register_counter_vec(
            registry,
            dropped_name,
            "Job spans dropped without an export attempt (queue full, or shut down).",
            &["reason"],
        )
        .map_err(register_error(dropped_name))?;
        let pending_name = "gha_listener_spans_pending";
        let pending = register_gauge(registry, pending_name, "Job spans waiting to be exported.")
            .map_err(register_error(pending_name))?;
        let lookups_name = "gha_listener_run_attempt_lookups_total";
        let run_attempt_lookups = register_counter_vec(
            registry,
            lookups_name,
            "Run-attempt lookups on GitHub's REST API for job spans, by result (cached answers are not counted).",
            &["result"],
        )
        .map_err(register_error(lookups_name))?;
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

/// A completed job waiting for its run's attempt until `deadline`.
pub(super) struct PendingJob {
    pub(super) job: JobCompleted,
    pub(super) attempt: watch::Receiver<Option<u32>>,
    pub(super) deadline: Instant,
}

/// What the queue carries: a built span, or a job whose spans wait for its attempt.
enum Item {
    Span(SpanData),
    Job(PendingJob),
}

/// The sending side of the pipeline: enqueue never waits; shutdown drains within a bound.
pub(super) struct ExportQueue {
    queue: mpsc::Sender<Item>,
    pub(super) metrics: PipelineMetrics,
    control: Mutex<Option<Control>>,
}

impl ExportQueue {
    /// Start the batching task for `exporter` on `runtime`.
    pub(super) fn start<E: SpanExporter + 'static>(
        exporter: E,
        settings: &OtelSettings,
        metrics: PipelineMetrics,
        spans: Arc<SpanBuilder>,
        trace_ids: JobTraceIds,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let (stop, stopped) = oneshot::channel();
        let batcher = Batcher {
            exporter,
            max_batch_size: settings.max_batch_size.max(1),
            batch_interval: settings.batch_interval,
            export_timeout: settings.timeout,
            metrics: metrics.clone(),
            spans,
            trace_ids,
        };
        let task = runtime.spawn(batcher.run(receiver, stopped));
        Self {
            queue,
            metrics,
            control: Mutex::new(Some(Control { stop, task })),
        }
    }

    pub(super) fn enqueue(&self, span: SpanData) {
        self.enqueue_item(Item::Span(span), 1);
    }

    /// Queue a job whose `spans` spans are built once its attempt is known.
    pub(super) fn enqueue_job(&self, job: PendingJob, spans: u64) {
        if spans > 0 {
            self.enqueue_item(Item::Job(job), spans);
        }
    }

    fn enqueue_item(&self, item: Item, spans: u64) {
        let n = i64::try_from(spans).unwrap_or(i64::MAX);
        self.metrics.pending.add(n);
        match self.queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.pending.sub(n);
                self.metrics.dropped_queue_full.inc_by(spans);
                let dropped = self.metrics.dropped_queue_full.get();
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "span queue full, dropping job spans");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.pending.sub(n);
                self.metrics.dropped_shutdown.inc_by(spans);
            }
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

/// The OTLP/HTTP (protobuf) exporter for `settings`, with the scale set's resource.
pub(super) fn otlp_exporter(
    settings: &OtelSettings,
    labels: &ScaleSetLabels,
) -> Result<opentelemetry_otlp::SpanExporter, RecorderError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};

    use super::{OtlpCompression, OtlpProtocol};

    let client = http_client(settings)?;
    let transport = &settings.transport;
    let protocol = match transport.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    // Always explicit: left unset, the exporter would read the variables again itself.
    let compression = match transport.compression {
        OtlpCompression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
        OtlpCompression::None => None,
    };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.endpoint.as_str())
        .with_protocol(protocol)
        .with_timeout(settings.timeout)
        .with_headers(settings.headers.iter().cloned().collect())
        .with_http_client(client);
    if let Some(compression) = compression {
        builder = builder.with_compression(compression);
    }
    let mut exporter = builder
        .build()
        .map_err(|e| RecorderError::Exporter(e.to_string()))?;
    exporter.set_resource(&resource(settings, labels));
    Ok(exporter)
}

fn resource(settings: &OtelSettings, labels: &ScaleSetLabels) -> Resource {
    let mut attributes = vec![
        KeyValue::new("github.runner_scale_set.name", labels.name.clone()),
        KeyValue::new("k8s.namespace.name", labels.namespace.clone()),
    ];
    attributes.extend(
        settings
            .resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(settings.service_name.clone())
        .build()
}

/// A reqwest client over rustls with the ring provider, trusting the platform roots, the
/// Mozilla roots and `_CERTIFICATE`'s, and presenting the client certificate when set.
pub(super) fn http_client(settings: &OtelSettings) -> Result<reqwest::Client, RecorderError> {
    let transport = &settings.transport;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    let (extra, rejected) = roots.add_parsable_certificates(transport.extra_roots.iter().cloned());
    if rejected > 0 {
        return Err(RecorderError::OtelSetting {
            name: "OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE".to_owned(),
            reason: format!("{rejected} certificate(s) are not usable as trust anchors"),
        });
    }
    tracing::debug!(
        native_roots = added,
        extra_roots = extra,
        client_certificate = transport.client_identity.is_some(),
        "loaded TLS roots for the OTLP exporter"
    );
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RecorderError::Exporter(format!("TLS configuration: {e}")))?
    .with_root_certificates(roots);
    let tls = match &transport.client_identity {
        None => tls.with_no_client_auth(),
        Some(identity) => tls
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| RecorderError::OtelSetting {
                name: "OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY".to_owned(),
                reason: format!("the key does not fit the client certificate: {e}"),
            })?,
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(settings.timeout)
        .build()
        .map_err(|e| RecorderError::Exporter(format!("HTTP client: {e}")))
}

/// The receiving side: collects spans into batches of at most `max_batch_size`, exports
/// a partial batch every `batch_interval`, and drains until the shutdown deadline.
struct Batcher<E> {
    exporter: E,
    max_batch_size: usize,
    batch_interval: Duration,
    export_timeout: Duration,
    metrics: PipelineMetrics,
    spans: Arc<SpanBuilder>,
    trace_ids: JobTraceIds,
}

type WaitForAttempt = Pin<Box<dyn Future<Output = (JobCompleted, u32)> + Send>>;
type Waiting = FuturesUnordered<WaitForAttempt>;

/// Waits for `job`'s attempt until its deadline or the end of waiting (shutdown), whichever
/// comes first; then the attempt known by then, or 1.
fn wait_for_attempt(job: PendingJob, mut waiting_over: watch::Receiver<bool>) -> WaitForAttempt {
    Box::pin(async move {
        let PendingJob {
            job,
            mut attempt,
            deadline,
        } = job;
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, attempt.wait_for(Option::is_some)) => {}
            _ = waiting_over.wait_for(|over| *over) => {}
        }
        let known = *attempt.borrow();
        (job, known.unwrap_or(UNKNOWN_ATTEMPT))
    })
}

impl<E: SpanExporter> Batcher<E> {
    /// The spans of a job that waited for its attempt, onto the batch (already counted as
    /// pending when the job was queued).
    fn add_job(&self, batch: &mut Vec<SpanData>, job: &JobCompleted, attempt: u32) {
        self.trace_ids.record(job.common.workflow_run_id, attempt);
        batch.extend(self.spans.job_spans(job, attempt));
    }

    async fn run(mut self, mut queue: mpsc::Receiver<Item>, mut stop: oneshot::Receiver<Instant>) {
        let mut batch = Vec::with_capacity(self.max_batch_size);
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
                item = queue.recv() => match item {
                    Some(Item::Span(span)) => {
                        batch.push(span);
                        if batch.len() >= self.max_batch_size {
                            self.export(std::mem::take(&mut batch), None).await;
                        }
                    }
                    Some(Item::Job(job)) => {
                        waiting.push(wait_for_attempt(job, waiting_over.clone()));
                    }
                    None => break Instant::now() + Duration::from_secs(1),
                },
                Some((job, attempt)) = waiting.next(), if !waiting.is_empty() => {
                    self.add_job(&mut batch, &job, attempt);
                    if batch.len() >= self.max_batch_size {
                        self.export(std::mem::take(&mut batch), None).await;
                    }
                }
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.export(std::mem::take(&mut batch), None).await;
                    }
                }
            }
        };
        // Shutting down: take what is queued, end every wait for an attempt (what is known
        // by now is used), and export it all while time remains.
        queue.close();
        while let Ok(item) = queue.try_recv() {
            match item {
                Item::Span(span) => batch.push(span),
                Item::Job(job) => waiting.push(wait_for_attempt(job, waiting_over.clone())),
            }
        }
        let _ = end_waiting.send(true);
        while let Ok(Some((job, attempt))) = tokio::time::timeout_at(deadline, waiting.next()).await
        {
            self.add_job(&mut batch, &job, attempt);
        }
        for chunk in batch.chunks(self.max_batch_size) {
            if Instant::now() >= deadline {
                break;
            }
            self.export(chunk.to_vec(), Some(deadline)).await;
        }
        if let Err(error) = self.exporter.shutdown() {
            tracing::debug!(%error, "span exporter shutdown");
        }
        // Whatever is still pending is counted as dropped by ExportQueue::shutdown.
    }

    async fn export(&mut self, batch: Vec<SpanData>, deadline: Option<Instant>) {
        let n = batch.len() as i64;
        let mut limit = self.export_timeout;
        if let Some(deadline) = deadline {
            limit = limit.min(deadline.saturating_duration_since(Instant::now()));
        }
        match tokio::time::timeout(limit, self.exporter.export(batch)).await {
            Ok(Ok(())) => {
                self.metrics.exported.inc_by(n.unsigned_abs());
            }
            Ok(Err(error)) => {
                self.metrics.failed.inc_by(n.unsigned_abs());
                tracing::warn!(%error, spans = n, "exporting job spans failed");
            }
            Err(_) => {
                self.metrics.failed.inc_by(n.unsigned_abs());
                tracing::warn!(timeout = ?limit, spans = n, "exporting job spans timed out");
            }
        }
        self.metrics.pending.sub(n);
    }
}
