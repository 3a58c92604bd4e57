//! Recorders: where the listener reports scale-set statistics, jobs and scaling decisions.
//!
//! The listener talks to one [`Recorder`]; [`CompositeRecorder`] fans out to the
//! Prometheus exporter and the OpenTelemetry job-span recorder. Recording never blocks on
//! I/O and never fails.
#![forbid(unsafe_code)]

use std::sync::Arc;

use github_client::{JobCompleted, JobStarted, RunnerScaleSetStatistic};

/// The anchor's metrics-recorder hooks.
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
        self.recorders.iter().for_each(|r| r.record_static(min_runners, max_runners));
    }
    fn record_statistics(&self, statistics: &RunnerScaleSetStatistic) {
        self.recorders.iter().for_each(|r| r.record_statistics(statistics));
    }
    fn record_job_started(&self, job: &JobStarted) {
        self.recorders.iter().for_each(|r| r.record_job_started(job));
    }
    fn record_job_completed(&self, job: &JobCompleted) {
        self.recorders.iter().for_each(|r| r.record_job_completed(job));
    }
    fn record_desired_runners(&self, count: i32) {
        self.recorders.iter().for_each(|r| r.record_desired_runners(count));
    }
}
