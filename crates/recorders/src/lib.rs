//! Recorders: where the listener reports scale-set statistics, jobs and scaling decisions.
//!
//! The listener talks to one [`Recorder`]; [`CompositeRecorder`] fans out to the
//! Prometheus exporter ([`PrometheusRecorder`], served by [`MetricsServer`]) and the
//! OpenTelemetry job-span recorder ([`SpanRecorder`]). Recording never blocks on I/O and
//! never fails: metric updates are in-memory, spans are only enqueued.
//!
//! Layout:
//! - `lib.rs`: the [`Recorder`] trait, [`CompositeRecorder`], [`DiscardRecorder`].
//! - [`metric`]: the one way to register a counter, gauge or vector on a registry.
//! - `metrics`: [`PrometheusRecorder`]; `metrics/families` declares ARC's `gha_*` metrics and
//!   their labels once, in one table.
//! - [`openmetrics`]: the OpenMetrics exposition and the [`openmetrics::Exemplars`] of the
//!   job-duration histograms (the trace id of a job in the bucket it was observed in).
//! - `server`: [`MetricsServer`] (`/metrics`, `/healthz`, `/readyz`) and [`Readiness`].
//! - `spans`: [`SpanRecorder`]; `spans/attempts` (the [`RunAttemptLookup`] seam and
//!   [`JobTraceIds`]), `spans/ids` (span ids), `spans/build` (span data),
//!   `spans/export` (queue, batching, OTLP exporter), `spans/settings` ([`OtelSettings`]).
//! - `config`: the `metrics` value of config.json; `labels`: scale-set labels and the
//!   workflow-ref parser; `error`: [`RecorderError`].
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Arc;

use github_client::{JobCompleted, JobStarted, RunnerScaleSetStatistic};

mod config;
mod error;
mod labels;
pub mod metric;
mod metrics;
pub mod openmetrics;
mod server;
mod spans;

pub use config::{HistogramMetric, LabelsMetric, MetricsConfig};
pub use error::RecorderError;
pub use labels::{ScaleSetLabels, WorkflowRefInfo, parse_workflow_ref};
pub use metrics::{
    DEFAULT_BUCKETS, DEFAULT_SERIES_LIMIT, KNOWN_LABELS, PrometheusRecorder, RecorderOptions,
    default_metrics_config,
};
pub use server::{MetricsServer, Readiness, listen_addr};
pub use spans::{
    ClientIdentity, IdScheme, JobSpanIds, JobTraceIds, OtelSettings, OtlpCompression, OtlpProtocol,
    OtlpTransport, ProbeError, RUN_ATTEMPT_WAIT, RunAttemptLookup, SPAN_EXECUTION, SPAN_QUEUE,
    SPAN_STARTUP, SpanRecorder, UNKNOWN_ATTEMPT, job_span_ids, map_job_result, probe_collector,
    run_trace_id,
};

/// The Go listener's metrics-recorder hooks.
pub trait Recorder: Send + Sync {
    /// The configured bounds, published once at start.
    fn record_static(&self, min_runners: i32, max_runners: i32);
    fn record_statistics(&self, statistics: &RunnerScaleSetStatistic);
    fn record_job_started(&self, job: &JobStarted);
    fn record_job_completed(&self, job: &JobCompleted);
    fn record_desired_runners(&self, count: i32);
}

/// Records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardRecorder;

impl Recorder for DiscardRecorder {
    fn record_static(&self, _: i32, _: i32) {}
    fn record_statistics(&self, _: &RunnerScaleSetStatistic) {}
    fn record_job_started(&self, _: &JobStarted) {}
    fn record_job_completed(&self, _: &JobCompleted) {}
    fn record_desired_runners(&self, _: i32) {}
}

/// Fans every event out to each of its recorders, in order.
#[derive(Default, Clone)]
pub struct CompositeRecorder {
    recorders: Vec<Arc<dyn Recorder>>,
}

impl CompositeRecorder {
    pub fn new(recorders: Vec<Arc<dyn Recorder>>) -> Self {
        Self { recorders }
    }

    pub fn push(&mut self, recorder: Arc<dyn Recorder>) {
        self.recorders.push(recorder);
    }

    pub fn len(&self) -> usize {
        self.recorders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recorders.is_empty()
    }
}

impl Recorder for CompositeRecorder {
    fn record_static(&self, min_runners: i32, max_runners: i32) {
        self.recorders
            .iter()
            .for_each(|r| r.record_static(min_runners, max_runners));
    }
    fn record_statistics(&self, statistics: &RunnerScaleSetStatistic) {
        self.recorders
            .iter()
            .for_each(|r| r.record_statistics(statistics));
    }
    fn record_job_started(&self, job: &JobStarted) {
        self.recorders
            .iter()
            .for_each(|r| r.record_job_started(job));
    }
    fn record_job_completed(&self, job: &JobCompleted) {
        self.recorders
            .iter()
            .for_each(|r| r.record_job_completed(job));
    }
    fn record_desired_runners(&self, count: i32) {
        self.recorders
            .iter()
            .for_each(|r| r.record_desired_runners(count));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Recorder for Log {
        fn record_static(&self, min: i32, max: i32) {
            self.0.lock().unwrap().push(format!("static {min} {max}"));
        }
        fn record_statistics(&self, s: &RunnerScaleSetStatistic) {
            self.0
                .lock()
                .unwrap()
                .push(format!("stats {}", s.total_assigned_jobs));
        }
        fn record_job_started(&self, job: &JobStarted) {
            self.0
                .lock()
                .unwrap()
                .push(format!("started {}", job.runner_name));
        }
        fn record_job_completed(&self, job: &JobCompleted) {
            self.0
                .lock()
                .unwrap()
                .push(format!("completed {}", job.result));
        }
        fn record_desired_runners(&self, count: i32) {
            self.0.lock().unwrap().push(format!("desired {count}"));
        }
    }

    #[test]
    fn composite_fans_out_to_every_recorder_in_order() {
        let a = Arc::new(Log::default());
        let b = Arc::new(Log::default());
        let mut composite = CompositeRecorder::new(vec![a.clone(), Arc::new(DiscardRecorder)]);
        composite.push(b.clone());
        assert_eq!(composite.len(), 3);
        assert!(!composite.is_empty());

        composite.record_static(1, 5);
        composite.record_statistics(&RunnerScaleSetStatistic {
            total_assigned_jobs: 4,
            ..Default::default()
        });
        composite.record_job_started(&JobStarted {
            runner_name: "r1".into(),
            ..Default::default()
        });
        composite.record_job_completed(&JobCompleted {
            result: "succeeded".into(),
            ..Default::default()
        });
        composite.record_desired_runners(3);

        let want = vec![
            "static 1 5",
            "stats 4",
            "started r1",
            "completed succeeded",
            "desired 3",
        ];
        assert_eq!(*a.0.lock().unwrap(), want);
        assert_eq!(*b.0.lock().unwrap(), want);
        assert!(CompositeRecorder::default().is_empty());
    }
}
