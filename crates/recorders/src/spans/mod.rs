//! OpenTelemetry job spans: per completed job, its queue, startup and execution phases as
//! spans that join the workflow's trace, exported in the background over OTLP/HTTP.
//!
//! - [`attempts`]: the run-attempt lookup seam ([`RunAttemptLookup`]), lookups from a job's
//!   start to its completion, and the attempts resolved per run ([`JobTraceIds`]).
//! - [`ids`]: deterministic trace, parent and span ids ([`IdScheme`]).
//! - [`build`]: a completed job's spans, with their attributes, encoded by [`encode`].
//! - [`encode`]: OTLP protobuf written straight from the job (no SDK span data).
//! - [`export`]: the bounded queue, the batching task and the `gha_listener_spans_*`
//!   counters.
//! - [`otlp_http`]: the POST to the collector (encoding, compression, TLS, retries).
//! - [`probe`]: one empty export request, for `ghalistener check`.
//! - [`settings`]: the collector endpoint and tuning, from the config and the environment.

mod attempts;
mod build;
mod encode;
mod export;
mod ids;
mod otlp_http;
mod probe;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use github_client::{JobCompleted, JobStarted, RunnerScaleSetStatistic};
use prometheus::Registry;

pub use attempts::{JobTraceIds, RUN_ATTEMPT_WAIT, RunAttemptLookup};
pub use build::map_job_result;
pub use ids::{
    IdScheme, JobSpanIds, SPAN_EXECUTION, SPAN_QUEUE, SPAN_STARTUP, UNKNOWN_ATTEMPT, job_span_ids,
    run_trace_id,
};
pub use probe::{ProbeError, probe_collector};
pub use settings::{ClientIdentity, OtelSettings, OtlpCompression, OtlpProtocol, OtlpTransport};

use attempts::RunAttempts;
use build::SpanBuilder;
use export::{ExportQueue, JobAttempt, PendingJob, PipelineMetrics};
use otlp_http::{OtlpHttp, Transport};

use crate::labels::ScaleSetLabels;
use crate::{Recorder, RecorderError};

/// Records job spans: `record_job_started` starts the run-attempt lookup (when one is set),
/// `record_job_completed` builds the spans, or queues the job until its attempt is known,
/// and only enqueues; a background task batches and exports them.
pub struct SpanRecorder {
    spans: Arc<SpanBuilder>,
    export: ExportQueue,
    attempts: RunAttempts,
}

impl std::fmt::Debug for SpanRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanRecorder")
            .field("scheme", &self.spans.scheme)
            .field("pending", &self.export.metrics.pending.get())
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
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RecorderError::NoRuntime("the span recorder"))?;
        let transport = OtlpHttp::new(&settings)?;
        let resource = export::resource(&settings, labels);
        let metrics = PipelineMetrics::register(registry)?;
        tracing::info!(
            endpoint = %settings.endpoint,
            id_scheme = %settings.id_scheme,
            service_name = %settings.service_name,
            protocol = ?settings.transport.protocol,
            compression = ?settings.transport.compression,
            "exporting job spans"
        );
        Ok(Self::with_transport(
            transport, resource, &settings, metrics, &runtime,
        ))
    }

    fn with_transport<T: Transport>(
        transport: T,
        resource: Vec<u8>,
        settings: &OtelSettings,
        metrics: PipelineMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> SpanRecorder {
        let spans = Arc::new(SpanBuilder::new(settings.id_scheme, &settings.server_url));
        let attempts = RunAttempts::new(
            settings.id_scheme,
            metrics.run_attempt_lookups.clone(),
            runtime.clone(),
        );
        SpanRecorder {
            export: ExportQueue::start(
                transport,
                resource,
                settings,
                metrics,
                spans.clone(),
                attempts.trace_ids.clone(),
                runtime,
            ),
            spans,
            attempts,
        }
    }

    /// Resolve run attempts with `lookup` from now on (without one, every span is in
    /// attempt 1). Set once; later calls are ignored.
    pub fn set_run_attempt_lookup(&self, lookup: Arc<dyn RunAttemptLookup>) {
        if !self.attempts.set_lookup(lookup) {
            tracing::warn!("a run-attempt lookup was already set; keeping the first");
        }
    }

    /// The trace ids of jobs' runs as the exported spans use them, for exemplars.
    pub fn trace_ids(&self) -> JobTraceIds {
        self.attempts.trace_ids.clone()
    }

    /// Stop accepting spans, export what is queued, and return within `timeout`; spans
    /// not exported by then are counted as dropped. Idempotent.
    pub async fn shutdown(&self, timeout: Duration) {
        self.export.shutdown(timeout).await;
    }
}

impl Recorder for SpanRecorder {
    fn record_static(&self, _: i32, _: i32) {}
    fn record_statistics(&self, _: &RunnerScaleSetStatistic) {}
    fn record_job_started(&self, job: &JobStarted) {
        self.attempts.on_started(&job.common);
    }
    fn record_job_completed(&self, job: &JobCompleted) {
        let attempt = match self.attempts.on_completed(&job.common) {
            Some(attempt) => {
                let known = *attempt.borrow();
                match known {
                    // Usually looked up while the job ran: no wait (and no timer) to set up.
                    Some(known) => JobAttempt::Known(known),
                    None => JobAttempt::Lookup {
                        attempt,
                        deadline: tokio::time::Instant::now() + RUN_ATTEMPT_WAIT,
                    },
                }
            }
            None => JobAttempt::Known(ids::UNKNOWN_ATTEMPT),
        };
        self.export.enqueue_job(PendingJob {
            job: job.clone(),
            attempt,
            spans: SpanBuilder::span_count(job),
        });
    }
    fn record_desired_runners(&self, _: i32) {}
}

#[cfg(test)]
mod tests;
