//! ARC's metric families and labels, each declared once: the label list, and one table
//! of every metric with its kind, help text and default labels.

use crate::config::{HistogramMetric, LabelsMetric, MetricsConfig};

/// ARC's default histogram buckets (seconds).
pub const DEFAULT_BUCKETS: [f64; 45] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 18.0,
    20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0, 150.0, 180.0, 210.0,
    240.0, 300.0, 360.0, 420.0, 480.0, 540.0, 600.0, 900.0, 1200.0, 1800.0, 2400.0, 3000.0, 3600.0,
];

/// Declares [`Label`], its names and [`KNOWN_LABELS`] from one list, so they cannot
/// drift apart.
macro_rules! labels {
    ($($variant:ident => $name:literal),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Label {
            $($variant),*
        }

        /// Every label a `gha_*` metric may carry, as ARC names them.
        pub const KNOWN_LABELS: [&str; [$($name),*].len()] = [$($name),*];

        impl Label {
            pub(super) fn parse(s: &str) -> Option<Label> {
                match s {
                    $($name => Some(Label::$variant),)*
                    _ => None,
                }
            }

            pub(super) fn name(self) -> &'static str {
                match self {
                    $(Label::$variant => $name),*
                }
            }
        }
    };
}

labels! {
    Name => "name",
    Namespace => "namespace",
    Enterprise => "enterprise",
    Organization => "organization",
    Repository => "repository",
    JobName => "job_name",
    JobWorkflowRef => "job_workflow_ref",
    JobWorkflowName => "job_workflow_name",
    JobWorkflowTarget => "job_workflow_target",
    EventName => "event_name",
    JobResult => "job_result",
}

pub(super) const ASSIGNED_JOBS: &str = "gha_assigned_jobs";
pub(super) const RUNNING_JOBS: &str = "gha_running_jobs";
pub(super) const REGISTERED_RUNNERS: &str = "gha_registered_runners";
pub(super) const BUSY_RUNNERS: &str = "gha_busy_runners";
pub(super) const MIN_RUNNERS: &str = "gha_min_runners";
pub(super) const MAX_RUNNERS: &str = "gha_max_runners";
pub(super) const DESIRED_RUNNERS: &str = "gha_desired_runners";
pub(super) const IDLE_RUNNERS: &str = "gha_idle_runners";
pub(super) const STARTED_JOBS: &str = "gha_started_jobs_total";
pub(super) const COMPLETED_JOBS: &str = "gha_completed_jobs_total";
pub(super) const STARTUP_DURATION: &str = "gha_job_startup_duration_seconds";
pub(super) const EXECUTION_DURATION: &str = "gha_job_execution_duration_seconds";

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// One of ARC's metrics: its kind, ARC's help text and its default labels.
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    pub(super) help: &'static str,
    pub(super) labels: &'static [Label],
}

use Label::{Enterprise, EventName, JobName, JobResult, Name, Namespace, Organization, Repository};
pub(super) const SCALE_SET_LABELS: &[Label] =
    &[Enterprise, Organization, Repository, Name, Namespace];
pub(super) const STARTED_LABELS: &[Label] =
    &[Enterprise, Organization, Repository, JobName, EventName];
pub(super) const COMPLETED_LABELS: &[Label] = &[
    Enterprise,
    Organization,
    Repository,
    JobName,
    EventName,
    JobResult,
];

/// The one table of ARC's metrics; the default config and the lookups derive from it.
pub(super) const FAMILIES: [Family; 12] = {
    const fn f(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        labels: &'static [Label],
    ) -> Family {
        Family {
            name,
            kind,
            help,
            labels,
        }
    }
    use Kind::{Counter, Gauge, Histogram};
    [
        f(
            ASSIGNED_JOBS,
            Gauge,
            "Number of jobs assigned to this scale set.",
            SCALE_SET_LABELS,
        ),
        f(
            RUNNING_JOBS,
            Gauge,
            "Number of jobs running (or about to be run).",
            SCALE_SET_LABELS,
        ),
        f(
            REGISTERED_RUNNERS,
            Gauge,
            "Number of runners registered by the scale set.",
            SCALE_SET_LABELS,
        ),
        f(
            BUSY_RUNNERS,
            Gauge,
            "Number of registered runners running a job.",
            SCALE_SET_LABELS,
        ),
        f(
            MIN_RUNNERS,
            Gauge,
            "Minimum number of runners.",
            SCALE_SET_LABELS,
        ),
        f(
            MAX_RUNNERS,
            Gauge,
            "Maximum number of runners.",
            SCALE_SET_LABELS,
        ),
        f(
            DESIRED_RUNNERS,
            Gauge,
            "Number of runners desired by the scale set.",
            SCALE_SET_LABELS,
        ),
        f(
            IDLE_RUNNERS,
            Gauge,
            "Number of registered runners not running a job.",
            SCALE_SET_LABELS,
        ),
        f(
            STARTED_JOBS,
            Counter,
            "Total number of jobs started.",
            STARTED_LABELS,
        ),
        f(
            COMPLETED_JOBS,
            Counter,
            "Total number of jobs completed.",
            COMPLETED_LABELS,
        ),
        f(
            STARTUP_DURATION,
            Histogram,
            "Time spent waiting for workflow job to get started on the runner owned by the scale set (in seconds).",
            STARTED_LABELS,
        ),
        f(
            EXECUTION_DURATION,
            Histogram,
            "Time spent executing workflow jobs by the scale set (in seconds).",
            COMPLETED_LABELS,
        ),
    ]
};

/// ARC's default selection: every metric with its default labels and buckets.
pub fn default_metrics_config() -> MetricsConfig {
    let mut config = MetricsConfig::default();
    for family in &FAMILIES {
        let name = family.name.to_owned();
        let labels = family.labels.iter().map(|l| l.name().to_owned()).collect();
        match family.kind {
            Kind::Gauge => {
                config.gauges.insert(name, Some(LabelsMetric { labels }));
            }
            Kind::Counter => {
                config.counters.insert(name, Some(LabelsMetric { labels }));
            }
            Kind::Histogram => {
                let buckets = DEFAULT_BUCKETS.to_vec();
                config
                    .histograms
                    .insert(name, Some(HistogramMetric { labels, buckets }));
            }
        }
    }
    config
}
