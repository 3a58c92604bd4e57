//! The Prometheus exporter: ARC's `gha_*` metrics with ARC's names, types, labels and
//! buckets, selected by the `metrics` config, with a bound on per-job label series.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use github_client::{JobCommon, JobCompleted, JobStarted, RunnerScaleSetStatistic};
use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
};

mod families;

use families::*;
pub use families::{DEFAULT_BUCKETS, KNOWN_LABELS, default_metrics_config};

use crate::config::MetricsConfig;
use crate::labels::{ScaleSetLabels, encode_key, parse_workflow_ref};
use crate::metric::{register, register_counter_vec, register_error};
use crate::openmetrics::Exemplars;
use crate::{Recorder, RecorderError};

/// Default bound on the label series kept per metric.
pub const DEFAULT_SERIES_LIMIT: usize = 10_000;

/// Tuning of the Prometheus recorder beyond ARC's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Label series kept per metric; past it the least recently updated series is
    /// removed. 0 disables the bound.
    pub series_limit: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            series_limit: DEFAULT_SERIES_LIMIT,
        }
    }
}

/// The value of every label for one event; labels that do not apply are empty,
/// as in the Go listener.
#[derive(Default)]
struct LabelValues<'a> {
    name: &'a str,
    namespace: &'a str,
    enterprise: &'a str,
    organization: &'a str,
    repository: &'a str,
    job_name: &'a str,
    job_workflow_ref: &'a str,
    job_workflow_name: &'a str,
    job_workflow_target: &'a str,
    event_name: &'a str,
    job_result: &'a str,
}

impl LabelValues<'_> {
    fn get(&self, label: Label) -> &str {
        match label {
            Label::Name => self.name,
            Label::Namespace => self.namespace,
            Label::Enterprise => self.enterprise,
            Label::Organization => self.organization,
            Label::Repository => self.repository,
            Label::JobName => self.job_name,
            Label::JobWorkflowRef => self.job_workflow_ref,
            Label::JobWorkflowName => self.job_workflow_name,
            Label::JobWorkflowTarget => self.job_workflow_target,
            Label::EventName => self.event_name,
            Label::JobResult => self.job_result,
        }
    }
}

enum Vector {
    Counter(CounterVec),
    Gauge(GaugeVec),
    Histogram(HistogramVec),
}

enum Update {
    Set(f64),
    Inc,
    Observe(f64),
}

impl Vector {
    fn apply(&self, values: &[&str], update: Update) -> Result<(), prometheus::Error> {
        match (self, update) {
            (Vector::Counter(v), Update::Inc) => v.get_metric_with_label_values(values)?.inc(),
            (Vector::Gauge(v), Update::Set(x)) => v.get_metric_with_label_values(values)?.set(x),
            (Vector::Histogram(v), Update::Observe(x)) => {
                v.get_metric_with_label_values(values)?.observe(x)
            }
            _ => {
                return Err(prometheus::Error::Msg(
                    "update does not fit the metric type".into(),
                ));
            }
        }
        Ok(())
    }

    fn remove(&self, values: &[&str]) -> Result<(), prometheus::Error> {
        match self {
            Vector::Counter(v) => v.remove_label_values(values),
            Vector::Gauge(v) => v.remove_label_values(values),
            Vector::Histogram(v) => v.remove_label_values(values),
        }
    }
}

/// Least-recently-updated order of a metric's label series.
///
/// Updating a series already known allocates nothing (measured 2026-12-04: the owned key
/// built per update was ~70 of the listener's ~260 allocations per job): the series is
/// found by its values encoded into a reused buffer ([`encode_key`]).
#[derive(Default)]
struct SeriesTracker {
    clock: u64,
    /// Encoded label values → the clock of their last update.
    last_update: HashMap<String, u64>,
    /// Clock → the label values updated then (and their encoded key).
    by_age: BTreeMap<u64, (String, Vec<String>)>,
    scratch: String,
}

impl SeriesTracker {
    /// Mark `key` as just updated; return the series to evict to stay within `limit`.
    fn touch(&mut self, key: &[&str], limit: usize) -> Vec<Vec<String>> {
        self.clock += 1;
        let clock = self.clock;
        encode_key(key.iter().copied(), &mut self.scratch);
        let known = self
            .last_update
            .get_mut(self.scratch.as_str())
            .map(|last| std::mem::replace(last, clock));
        match known.and_then(|previous| self.by_age.remove(&previous)) {
            Some(series) => {
                self.by_age.insert(clock, series);
            }
            None => {
                let encoded = self.scratch.clone();
                let values = key.iter().map(|v| (*v).to_owned()).collect();
                self.last_update.insert(encoded.clone(), clock);
                self.by_age.insert(clock, (encoded, values));
            }
        }
        let mut evicted = Vec::new();
        while limit > 0 && self.last_update.len() > limit {
            let Some((_, (encoded, values))) = self.by_age.pop_first() else {
                break;
            };
            self.last_update.remove(&encoded);
            evicted.push(values);
        }
        evicted
    }
}

struct Metric {
    labels: Vec<Label>,
    /// Bucket bounds of a histogram (empty otherwise), for its exemplars.
    buckets: Vec<f64>,
    vector: Vector,
    series: Mutex<SeriesTracker>,
}

/// ARC's metrics exporter as a [`Recorder`]; registers its metrics on the given registry.
pub struct PrometheusRecorder {
    scale_set: ScaleSetLabels,
    metrics: HashMap<&'static str, Metric>,
    series_limit: usize,
    evicted: IntCounterVec,
    exemplars: Exemplars,
}

impl std::fmt::Debug for PrometheusRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.metrics.keys().collect();
        names.sort();
        f.debug_struct("PrometheusRecorder")
            .field("scale_set", &self.scale_set)
            .field("metrics", &names)
            .field("series_limit", &self.series_limit)
            .finish()
    }
}

impl PrometheusRecorder {
    /// `config` None selects ARC's defaults; Some selects exactly the listed metrics.
    pub fn new(
        labels: ScaleSetLabels,
        config: Option<&MetricsConfig>,
        registry: &Registry,
    ) -> Result<Self, RecorderError> {
        Self::with_options(labels, config, registry, RecorderOptions::default())
    }

    pub fn with_options(
        labels: ScaleSetLabels,
        config: Option<&MetricsConfig>,
        registry: &Registry,
        options: RecorderOptions,
    ) -> Result<Self, RecorderError> {
        let defaults;
        let config = match config {
            Some(c) => c,
            None => {
                defaults = default_metrics_config();
                &defaults
            }
        };
        let mut metrics = HashMap::new();
        let gauges = config.gauges.iter().map(|(n, s)| (Kind::Gauge, n, s));
        let counters = config.counters.iter().map(|(n, s)| (Kind::Counter, n, s));
        for (kind, name, spec) in gauges.chain(counters) {
            let word = if kind == Kind::Gauge {
                "gauge"
            } else {
                "counter"
            };
            let Some((name, help)) = known(kind, name, word) else {
                continue;
            };
            let spec_labels = spec.as_ref().map(|s| s.labels.as_slice()).unwrap_or(&[]);
            let labels = select_labels(name, spec_labels);
            let (opts, names) = (Opts::new(name, help), label_names(&labels));
            let vector = if kind == Kind::Gauge {
                GaugeVec::new(opts, &names)
                    .and_then(|v| register(registry, v))
                    .map(Vector::Gauge)
            } else {
                CounterVec::new(opts, &names)
                    .and_then(|v| register(registry, v))
                    .map(Vector::Counter)
            };
            let vector = vector.map_err(register_error(name))?;
            metrics.insert(name, metric(labels, vector));
        }
        for (name, spec) in &config.histograms {
            let Some((name, help)) = known(Kind::Histogram, name, "histogram") else {
                continue;
            };
            let (spec_labels, buckets) = match spec {
                Some(s) => (s.labels.as_slice(), s.buckets.as_slice()),
                None => (&[][..], &[][..]),
            };
            let labels = select_labels(name, spec_labels);
            let buckets = if buckets.is_empty() {
                DEFAULT_BUCKETS.to_vec()
            } else {
                validate_buckets(name, buckets)?
            };
            let opts = HistogramOpts::new(name, help).buckets(buckets.clone());
            let vector = HistogramVec::new(opts, &label_names(&labels))
                .and_then(|v| register(registry, v))
                .map_err(register_error(name))?;
            let mut histogram = metric(labels, Vector::Histogram(vector));
            histogram.buckets = buckets;
            metrics.insert(name, histogram);
        }
        let evicted_name = "gha_listener_metric_series_evicted_total";
        let evicted = register_counter_vec(
            registry,
            evicted_name,
            "Label series removed from a gha_* metric to keep its cardinality bounded.",
            &["metric"],
        )
        .map_err(register_error(evicted_name))?;
        tracing::info!(
            metrics = ?{ let mut n: Vec<_> = metrics.keys().collect(); n.sort(); n },
            series_limit = options.series_limit,
            "registered metrics"
        );
        Ok(Self {
            scale_set: labels,
            metrics,
            series_limit: options.series_limit,
            evicted,
            exemplars: Exemplars::default(),
        })
    }

    /// The exemplars of the job-duration histograms, for the OpenMetrics scrape; they are
    /// kept once [`Exemplars::set_trace_ids`] is called.
    pub fn exemplars(&self) -> Exemplars {
        self.exemplars.clone()
    }

    fn scale_set_values(&self) -> LabelValues<'_> {
        LabelValues {
            name: &self.scale_set.name,
            namespace: &self.scale_set.namespace,
            enterprise: &self.scale_set.enterprise,
            organization: &self.scale_set.organization,
            repository: &self.scale_set.repository,
            ..LabelValues::default()
        }
    }

    /// Job metrics take organization/repository from the job (ownerName /
    /// repositoryName) and the enterprise from the config URL, as the Go listener does.
    fn job_values<'a>(&'a self, job: &'a JobCommon, result: &'a str) -> LabelValues<'a> {
        let workflow = parse_workflow_ref(&job.job_workflow_ref);
        LabelValues {
            name: &self.scale_set.name,
            namespace: &self.scale_set.namespace,
            enterprise: &self.scale_set.enterprise,
            organization: &job.owner_name,
            repository: &job.repository_name,
            job_name: &job.job_display_name,
            job_workflow_ref: &job.job_workflow_ref,
            job_workflow_name: workflow.name,
            job_workflow_target: workflow.target,
            event_name: &job.event_name,
            job_result: result,
        }
    }

    fn update(&self, name: &'static str, values: &LabelValues<'_>, update: Update) {
        self.update_with_exemplar(name, values, update, None);
    }

    /// As `update`; an observation of run `run_id` also becomes its bucket's exemplar.
    fn update_with_exemplar(
        &self,
        name: &'static str,
        values: &LabelValues<'_>,
        update: Update,
        run_id: Option<i64>,
    ) {
        let Some(metric) = self.metrics.get(name) else {
            return;
        };
        // At most one of each label (`select_labels` skips duplicates).
        let mut value_buf = [""; KNOWN_LABELS.len()];
        let mut name_buf = [("", ""); KNOWN_LABELS.len()];
        let count = metric.labels.len().min(KNOWN_LABELS.len());
        for (i, label) in metric.labels.iter().take(count).enumerate() {
            value_buf[i] = values.get(*label);
            name_buf[i] = (label.name(), value_buf[i]);
        }
        let label_values = &value_buf[..count];
        let observed = match update {
            Update::Observe(x) => Some(x),
            _ => None,
        };
        // The lock keeps the vector and the tracker in step; no I/O happens under it.
        let mut series = lock(&metric.series);
        if let Err(error) = metric.vector.apply(label_values, update) {
            tracing::warn!(metric = name, %error, "metric update failed");
            return;
        }
        if let (Some(x), Some(run_id)) = (observed, run_id) {
            self.exemplars
                .observe(name, &mut name_buf[..count], &metric.buckets, x, run_id);
        }
        for old in series.touch(label_values, self.series_limit) {
            let old: Vec<&str> = old.iter().map(String::as_str).collect();
            if let Err(error) = metric.vector.remove(&old) {
                tracing::debug!(metric = name, %error, "evicting a series failed");
            }
            let mut labels: Vec<(&str, &str)> = metric
                .labels
                .iter()
                .map(|l| l.name())
                .zip(old.iter().copied())
                .collect();
            self.exemplars.forget(name, &mut labels);
            self.evicted.with_label_values(&[name]).inc();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the tracker inconsistent enough to matter.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn known(kind: Kind, name: &str, what: &'static str) -> Option<(&'static str, &'static str)> {
    let found = FAMILIES
        .iter()
        .find(|f| f.kind == kind && f.name == name)
        .map(|f| (f.name, f.help));
    if found.is_none() {
        tracing::error!(name, kind = what, "unknown metric name, skipped");
    }
    found
}

fn select_labels(metric: &str, configured: &[String]) -> Vec<Label> {
    let mut labels = Vec::with_capacity(configured.len());
    for name in configured {
        match Label::parse(name) {
            Some(label) if labels.contains(&label) => {
                tracing::warn!(metric, label = %name, "duplicate label, skipped");
            }
            Some(label) => labels.push(label),
            None => tracing::error!(metric, label = %name, "unknown label name, skipped"),
        }
    }
    labels
}

fn label_names(labels: &[Label]) -> Vec<&'static str> {
    labels.iter().map(|l| l.name()).collect()
}

fn validate_buckets(metric: &str, buckets: &[f64]) -> Result<Vec<f64>, RecorderError> {
    let ordered = buckets.windows(2).all(|w| w[0] < w[1]);
    if !ordered || buckets.iter().any(|b| !b.is_finite()) {
        return Err(RecorderError::MetricsConfig {
            metric: metric.to_owned(),
            reason: format!("buckets must be finite and strictly increasing, got {buckets:?}"),
        });
    }
    Ok(buckets.to_vec())
}

fn metric(labels: Vec<Label>, vector: Vector) -> Metric {
    Metric {
        labels,
        buckets: Vec::new(),
        vector,
        series: Mutex::new(SeriesTracker::default()),
    }
}

impl Recorder for PrometheusRecorder {
    fn record_static(&self, min_runners: i32, max_runners: i32) {
        let values = self.scale_set_values();
        self.update(MAX_RUNNERS, &values, Update::Set(f64::from(max_runners)));
        self.update(MIN_RUNNERS, &values, Update::Set(f64::from(min_runners)));
    }

    fn record_statistics(&self, s: &RunnerScaleSetStatistic) {
        let values = self.scale_set_values();
        // i64 counts far below 2^53: exact as f64.
        let gauges = [
            (ASSIGNED_JOBS, s.total_assigned_jobs),
            (RUNNING_JOBS, s.total_running_jobs),
            (REGISTERED_RUNNERS, s.total_registered_runners),
            (BUSY_RUNNERS, s.total_busy_runners),
            (IDLE_RUNNERS, s.total_idle_runners),
        ];
        for (name, value) in gauges {
            self.update(name, &values, Update::Set(value as f64));
        }
    }

    fn record_job_started(&self, job: &JobStarted) {
        let values = self.job_values(&job.common, "");
        self.update(STARTED_JOBS, &values, Update::Inc);
        // Whole seconds as the Go listener computes them (difference of Unix seconds). The
        // Go listener observes garbage when a time is unset; we skip the observation.
        if let (Some(scale_set_assign), Some(runner_assign)) = (
            job.common.scale_set_assign_time,
            job.common.runner_assign_time,
        ) {
            let seconds = runner_assign.unix_timestamp() - scale_set_assign.unix_timestamp();
            self.update_with_exemplar(
                STARTUP_DURATION,
                &values,
                Update::Observe(seconds as f64),
                Some(job.common.workflow_run_id),
            );
        }
    }

    fn record_job_completed(&self, job: &JobCompleted) {
        // Jobs that never reached a runner (cancelled while queued) are not counted.
        let Some(runner_assign) = job.common.runner_assign_time else {
            return;
        };
        let values = self.job_values(&job.common, &job.result);
        self.update(COMPLETED_JOBS, &values, Update::Inc);
        if let Some(finish) = job.common.finish_time {
            let seconds = finish.unix_timestamp() - runner_assign.unix_timestamp();
            self.update_with_exemplar(
                EXECUTION_DURATION,
                &values,
                Update::Observe(seconds as f64),
                Some(job.common.workflow_run_id),
            );
        }
    }

    fn record_desired_runners(&self, count: i32) {
        let values = self.scale_set_values();
        self.update(DESIRED_RUNNERS, &values, Update::Set(f64::from(count)));
    }
}

#[cfg(test)]
mod tests;
