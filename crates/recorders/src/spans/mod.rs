//! OpenTelemetry job spans: per completed job, its queue, startup and execution phases as
//! spans that join the workflow's trace, exported in the background over OTLP/HTTP.

mod ids;
mod settings;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use github_client::{JobCompleted, JobStarted, RunnerScaleSetStatistic};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use ids::{IdScheme, JobSpanIds, SPAN_EXECUTION, SPAN_QUEUE, SPAN_STARTUP, job_span_ids};
pub use settings::OtelSettings;

use crate::labels::{ScaleSetLabels, parse_workflow_ref};
use crate::{Recorder, RecorderError};

/// The CI/CD semantic-convention value of a job result, None when there is none.
pub fn map_job_result(result: &str) -> Option<&'static str> {
    let lower = result.trim().to_ascii_lowercase();
    Some(match lower.as_str() {
        "" => return None,
        "succeeded" | "success" | "succeededwithissues" => "success",
        "failed" | "failure" => "failure",
        "canceled" | "cancelled" => "cancellation",
        "skipped" => "skip",
        "timedout" | "timed_out" | "timeout" => "timeout",
        _ => "error",
    })
}

/// Prometheus counters of the export pipeline, on the listener's registry.
#[derive(Clone)]
struct PipelineMetrics {
    exported: IntCounter,
    failed: IntCounter,
    dropped_queue_full: IntCounter,
    dropped_shutdown: IntCounter,
    /// Spans accepted and not yet exported, failed or dropped.
    pending: IntGauge,
}

impl PipelineMetrics {
    fn register(registry: &Registry) -> Result<Self, RecorderError> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, RecorderError> {
            let c = IntCounter::new(name, help).map_err(|e| reg_err(name, e))?;
            registry
                .register(Box::new(c.clone()))
                .map_err(|e| reg_err(name, e))?;
            Ok(c)
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
        let dropped = IntCounterVec::new(
            Opts::new(
                dropped_name,
                "Job spans dropped without an export attempt (queue full, or shut down).",
            ),
            &["reason"],
        )
        .map_err(|e| reg_err(dropped_name, e))?;
        registry
            .register(Box::new(dropped.clone()))
            .map_err(|e| reg_err(dropped_name, e))?;
        let pending_name = "gha_listener_spans_pending";
        let pending = IntGauge::new(pending_name, "Job spans waiting to be exported.")
            .map_err(|e| reg_err(pending_name, e))?;
        registry
            .register(Box::new(pending.clone()))
            .map_err(|e| reg_err(pending_name, e))?;
        Ok(Self {
            exported,
            failed,
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_shutdown: dropped.with_label_values(&["shutdown"]),
            pending,
        })
    }
}

fn reg_err(metric: &str, source: prometheus::Error) -> RecorderError {
    RecorderError::Register {
        metric: metric.to_owned(),
        source,
    }
}

struct Control {
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
}

/// Records job spans: `record_job_completed` builds the spans and only enqueues them; a
/// background task batches and exports them.
pub struct SpanRecorder {
    scheme: IdScheme,
    server_url: String,
    scope: InstrumentationScope,
    queue: mpsc::Sender<SpanData>,
    metrics: PipelineMetrics,
    control: Mutex<Option<Control>>,
}

impl std::fmt::Debug for SpanRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanRecorder")
            .field("scheme", &self.scheme)
            .field("pending", &self.metrics.pending.get())
            .finish()
    }
}

impl SpanRecorder {
    /// Build the OTLP/HTTP exporter and start the export task on the current tokio
    /// runtime. Registers `gha_listener_spans_*` on `registry`.
    pub fn start(
        settings: OtelSettings,
        labels: &ScaleSetLabels,
        registry: &Registry,
    ) -> Result<SpanRecorder, RecorderError> {
        use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};

        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RecorderError::NoRuntime("the span recorder"))?;
        let client = http_client(settings.timeout)?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.as_str())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(settings.timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .with_http_client(client)
            .build()
            .map_err(|e| RecorderError::Exporter(e.to_string()))?;
        exporter.set_resource(&resource(&settings, labels));
        let metrics = PipelineMetrics::register(registry)?;
        tracing::info!(
            endpoint = %settings.endpoint,
            id_scheme = %settings.id_scheme,
            service_name = %settings.service_name,
            "exporting job spans"
        );
        Ok(Self::with_exporter(exporter, &settings, metrics, &runtime))
    }

    fn with_exporter<E: SpanExporter + 'static>(
        exporter: E,
        settings: &OtelSettings,
        metrics: PipelineMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> SpanRecorder {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity.max(1));
        let (stop, stopped) = oneshot::channel();
        let batcher = Batcher {
            exporter,
            max_batch_size: settings.max_batch_size.max(1),
            batch_interval: settings.batch_interval,
            export_timeout: settings.timeout,
            metrics: metrics.clone(),
        };
        let task = runtime.spawn(batcher.run(receiver, stopped));
        SpanRecorder {
            scheme: settings.id_scheme,
            server_url: settings.server_url.trim_end_matches('/').to_owned(),
            scope: InstrumentationScope::builder("gha-listener")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            queue,
            metrics,
            control: Mutex::new(Some(Control { stop, task })),
        }
    }

    /// Stop accepting spans, export what is queued, and return within `timeout`; spans
    /// not exported by then are counted as dropped. Idempotent.
    pub async fn shutdown(&self, timeout: Duration) {
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

    fn enqueue(&self, span: SpanData) {
        self.metrics.pending.inc();
        match self.queue.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.pending.dec();
                self.metrics.dropped_queue_full.inc();
                let dropped = self.metrics.dropped_queue_full.get();
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, "span queue full, dropping job spans");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.pending.dec();
                self.metrics.dropped_shutdown.inc();
            }
        }
    }

    /// The spans of a completed job; each only when both of its times are set.
    fn job_spans(&self, job: &JobCompleted) -> Vec<SpanData> {
        let c = &job.common;
        let phases = [
            (SPAN_QUEUE, c.queue_time, c.scale_set_assign_time),
            (SPAN_STARTUP, c.scale_set_assign_time, c.runner_assign_time),
            (SPAN_EXECUTION, c.runner_assign_time, c.finish_time),
        ];
        let mut spans = Vec::new();
        let mut common: Option<Vec<KeyValue>> = None;
        for (name, start, end) in phases {
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            let common = common.get_or_insert_with(|| self.common_attributes(job));
            let ids = job_span_ids(self.scheme, c, name);
            let mut attributes = common.clone();
            attributes.push(KeyValue::new("type", name));
            let mut status = Status::Unset;
            if name == SPAN_EXECUTION {
                attributes.push(KeyValue::new("github.conclusion", job.result.clone()));
                if let Some(result) = map_job_result(&job.result) {
                    attributes.push(KeyValue::new("cicd.pipeline.task.run.result", result));
                    if matches!(result, "failure" | "timeout" | "error") {
                        status = Status::error(job.result.clone());
                    }
                }
            }
            spans.push(SpanData {
                span_context: SpanContext::new(
                    ids.trace_id,
                    ids.span_id,
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: ids.parent_span_id,
                parent_span_is_remote: true,
                span_kind: SpanKind::Internal,
                name: Cow::Borrowed(name),
                start_time: system_time(start),
                end_time: system_time(end),
                attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status,
                instrumentation_scope: self.scope.clone(),
            });
        }
        spans
    }

    fn common_attributes(&self, job: &JobCompleted) -> Vec<KeyValue> {
        let c = &job.common;
        let repository = format!("{}/{}", c.owner_name, c.repository_name);
        let workflow = parse_workflow_ref(&c.job_workflow_ref);
        let mut attributes = vec![
            KeyValue::new("github.run_id", c.workflow_run_id),
            KeyValue::new("github.job_id", c.job_id.clone()),
            KeyValue::new("github.job_name", c.job_display_name.clone()),
            KeyValue::new("github.repository", repository.clone()),
            KeyValue::new("github.runner_name", job.runner_name.clone()),
            KeyValue::new("github.runner_id", job.runner_id),
            KeyValue::new("github.workflow_ref", c.job_workflow_ref.clone()),
            KeyValue::new("github.event_name", c.event_name.clone()),
            KeyValue::new("github.runner_request_id", c.runner_request_id),
            KeyValue::new("cicd.pipeline.run.id", c.workflow_run_id.to_string()),
            KeyValue::new("cicd.pipeline.task.name", c.job_display_name.clone()),
            KeyValue::new("cicd.pipeline.task.run.id", c.job_id.clone()),
            KeyValue::new("cicd.worker.name", job.runner_name.clone()),
            KeyValue::new("cicd.worker.id", job.runner_id.to_string()),
            KeyValue::new(
                "vcs.repository.url.full",
                format!("{}/{repository}", self.server_url),
            ),
        ];
        if !workflow.name.is_empty() {
            attributes.push(KeyValue::new("cicd.pipeline.name", workflow.name));
        }
        let head = workflow
            .target
            .strip_prefix("heads/")
            .map(|b| (b, "branch"))
            .or_else(|| workflow.target.strip_prefix("tags/").map(|t| (t, "tag")));
        if let Some((name, kind)) = head {
            attributes.push(KeyValue::new("vcs.ref.head.name", name.to_owned()));
            attributes.push(KeyValue::new("vcs.ref.head.type", kind));
        }
        attributes
    }
}

impl Recorder for SpanRecorder {
    fn record_static(&self, _: i32, _: i32) {}
    fn record_statistics(&self, _: &RunnerScaleSetStatistic) {}
    fn record_job_started(&self, _: &JobStarted) {}
    fn record_job_completed(&self, job: &JobCompleted) {
        for span in self.job_spans(job) {
            self.enqueue(span);
        }
    }
    fn record_desired_runners(&self, _: i32) {}
}

fn system_time(t: OffsetDateTime) -> SystemTime {
    SystemTime::from(t)
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

/// A reqwest client over rustls with the ring provider, trusting the platform roots and
/// the Mozilla roots.
fn http_client(timeout: Duration) -> Result<reqwest::Client, RecorderError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        native_roots = added,
        "loaded TLS roots for the OTLP exporter"
    );
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RecorderError::Exporter(format!("TLS configuration: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .build()
        .map_err(|e| RecorderError::Exporter(format!("HTTP client: {e}")))
}

struct Batcher<E> {
    exporter: E,
    max_batch_size: usize,
    batch_interval: Duration,
    export_timeout: Duration,
    metrics: PipelineMetrics,
}

impl<E: SpanExporter> Batcher<E> {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<SpanData>,
        mut stop: oneshot::Receiver<Instant>,
    ) {
        let mut batch = Vec::with_capacity(self.max_batch_size);
        let mut tick = tokio::time::interval(self.batch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = loop {
            tokio::select! {
                deadline = &mut stop => {
                    // The recorder was dropped without shutdown: a short, bounded drain.
                    break deadline.unwrap_or_else(|_| Instant::now() + Duration::from_secs(1));
                }
                span = queue.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= self.max_batch_size {
                            self.export(std::mem::take(&mut batch), None).await;
                        }
                    }
                    None => break Instant::now() + Duration::from_secs(1),
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.export(std::mem::take(&mut batch), None).await;
                    }
                }
            }
        };
        // Shutting down: take what is queued and export it while time remains.
        queue.close();
        while let Ok(span) = queue.try_recv() {
            batch.push(span);
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
        // Whatever is still pending is counted as dropped by SpanRecorder::shutdown.
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

#[cfg(test)]
mod tests;
