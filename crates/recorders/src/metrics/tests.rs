use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};
use time::macros::datetime;

use super::*;

fn scale_set() -> ScaleSetLabels {
    ScaleSetLabels {
        name: "arc-runners".into(),
        namespace: "arc-ns".into(),
        enterprise: "".into(),
        organization: "acme".into(),
        repository: "".into(),
    }
}

fn job_common(display: &str) -> JobCommon {
    JobCommon {
        runner_request_id: 1,
        repository_name: "widgets".into(),
        owner_name: "acme-owner".into(),
        job_id: "67890".into(),
        job_workflow_ref: "acme-owner/widgets/.github/workflows/ci.yml@refs/heads/main".into(),
        job_display_name: display.into(),
        workflow_run_id: 12345,
        event_name: "push".into(),
        request_labels: vec!["self-hosted".into()],
        queue_time: Some(datetime!(2024-05-01 10:00:00.5 UTC)),
        scale_set_assign_time: Some(datetime!(2024-05-01 10:00:02.9 UTC)),
        runner_assign_time: Some(datetime!(2024-05-01 10:00:05.1 UTC)),
        finish_time: Some(datetime!(2024-05-01 10:01:05.0 UTC)),
    }
}

fn started(display: &str) -> JobStarted {
    JobStarted {
        common: job_common(display),
        runner_id: 7,
        runner_name: "runner-7".into(),
    }
}

fn completed(display: &str, result: &str) -> JobCompleted {
    JobCompleted {
        common: job_common(display),
        result: result.into(),
        runner_id: 7,
        runner_name: "runner-7".into(),
    }
}

fn family<'a>(families: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    families.iter().find(|f| f.name() == name)
}

type Labels = BTreeMap<String, String>;

fn labels_of(m: &prometheus::proto::Metric) -> Labels {
    m.get_label()
        .iter()
        .map(|l| (l.name().to_owned(), l.value().to_owned()))
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (labels, value) of a gauge/counter, or (labels, sample count) of a histogram.
fn samples(registry: &Registry, name: &str) -> Vec<(Labels, f64)> {
    let families = registry.gather();
    let Some(f) = family(&families, name) else {
        return Vec::new();
    };
    f.get_metric()
        .iter()
        .map(|m| {
            let v = match f.get_field_type() {
                MetricType::COUNTER => m.get_counter().get_value(),
                MetricType::GAUGE => m.get_gauge().get_value(),
                MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                _ => f64::NAN,
            };
            (labels_of(m), v)
        })
        .collect()
}

/// The upper bounds of the first series' buckets.
fn bucket_bounds(f: &MetricFamily) -> Vec<f64> {
    let buckets = f.get_metric()[0].get_histogram().get_bucket();
    buckets.iter().map(|b| b.upper_bound()).collect()
}

fn histogram_sum(registry: &Registry, name: &str) -> f64 {
    let families = registry.gather();
    family(&families, name).unwrap().get_metric()[0]
        .get_histogram()
        .get_sample_sum()
}

/// A recorder with the default metrics and at most `series_limit` series per metric.
fn limited_to(series_limit: usize) -> (Registry, PrometheusRecorder) {
    let registry = Registry::new();
    let options = RecorderOptions { series_limit };
    let recorder = PrometheusRecorder::with_options(scale_set(), None, &registry, options).unwrap();
    (registry, recorder)
}

fn scenario(recorder: &PrometheusRecorder) {
    recorder.record_static(1, 10);
    recorder.record_statistics(&RunnerScaleSetStatistic {
        total_available_jobs: 9,
        total_acquired_jobs: 8,
        total_assigned_jobs: 5,
        total_running_jobs: 4,
        total_registered_runners: 6,
        total_busy_runners: 3,
        total_idle_runners: 2,
    });
    recorder.record_desired_runners(6);
    recorder.record_job_started(&started("build"));
    recorder.record_job_completed(&completed("build", "succeeded"));
}

#[test]
fn default_metrics_types_labels_and_values() {
    let registry = Registry::new();
    let recorder = PrometheusRecorder::new(scale_set(), None, &registry).unwrap();
    scenario(&recorder);
    let families = registry.gather();

    let scale_set_labels = labels(&[
        ("enterprise", ""),
        ("name", "arc-runners"),
        ("namespace", "arc-ns"),
        ("organization", "acme"),
        ("repository", ""),
    ]);
    let gauges = [
        ("gha_assigned_jobs", 5.0),
        ("gha_running_jobs", 4.0),
        ("gha_registered_runners", 6.0),
        ("gha_busy_runners", 3.0),
        ("gha_idle_runners", 2.0),
        ("gha_min_runners", 1.0),
        ("gha_max_runners", 10.0),
        ("gha_desired_runners", 6.0),
    ];
    for (name, value) in gauges {
        let f = family(&families, name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.get_field_type(), MetricType::GAUGE, "{name}");
        assert_eq!(
            samples(&registry, name),
            vec![(scale_set_labels.clone(), value)],
            "{name}"
        );
    }

    let started_labels = labels(&[
        ("enterprise", ""),
        ("organization", "acme-owner"),
        ("repository", "widgets"),
        ("job_name", "build"),
        ("event_name", "push"),
    ]);
    let mut completed_labels = started_labels.clone();
    completed_labels.insert("job_result".into(), "succeeded".into());

    let f = family(&families, "gha_started_jobs_total").unwrap();
    assert_eq!(f.get_field_type(), MetricType::COUNTER);
    assert_eq!(
        samples(&registry, "gha_started_jobs_total"),
        vec![(started_labels.clone(), 1.0)]
    );
    let f = family(&families, "gha_completed_jobs_total").unwrap();
    assert_eq!(f.get_field_type(), MetricType::COUNTER);
    assert_eq!(
        samples(&registry, "gha_completed_jobs_total"),
        vec![(completed_labels.clone(), 1.0)]
    );

    for (name, want_labels, want_sum) in [
        // 10:00:05.1 − 10:00:02.9: whole Unix seconds 5 − 2 = 3 (not 2.2).
        ("gha_job_startup_duration_seconds", &started_labels, 3.0),
        // 10:01:05.0 − 10:00:05.1: 65 − 5 = 60.
        (
            "gha_job_execution_duration_seconds",
            &completed_labels,
            60.0,
        ),
    ] {
        let f = family(&families, name).unwrap();
        assert_eq!(f.get_field_type(), MetricType::HISTOGRAM, "{name}");
        assert_eq!(
            samples(&registry, name),
            vec![(want_labels.clone(), 1.0)],
            "{name}"
        );
        assert_eq!(histogram_sum(&registry, name), want_sum, "{name}");
        let buckets = bucket_bounds(f);
        assert_eq!(buckets, DEFAULT_BUCKETS.to_vec(), "{name}");
    }
    // Exactly ARC's twelve metrics plus our own eviction counter (absent until used).
    let gha: Vec<_> = families
        .iter()
        .map(|f| f.name())
        .filter(|n| n.starts_with("gha_") && !n.starts_with("gha_listener_"))
        .collect();
    assert_eq!(gha.len(), 12, "{gha:?}");
}

#[test]
fn help_texts_are_the_go_listeners() {
    let registry = Registry::new();
    let recorder = PrometheusRecorder::new(scale_set(), None, &registry).unwrap();
    scenario(&recorder);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(text.contains("# HELP gha_busy_runners Number of registered runners running a job.\n"));
    assert!(text.contains("# TYPE gha_completed_jobs_total counter\n"));
    assert!(text.contains("# TYPE gha_job_execution_duration_seconds histogram\n"));
}

#[test]
fn custom_config_selects_metrics_labels_and_buckets() {
    let config: MetricsConfig = serde_json::from_str(
        r#"{
        "gauges": {"gha_busy_runners": {"labels": ["name", "bogus_label", "name"]},
                   "gha_not_a_metric": {"labels": []},
                   "gha_started_jobs_total": {"labels": []}},
        "counters": {"gha_completed_jobs_total":
            {"labels": ["job_workflow_name", "job_workflow_target", "job_workflow_ref", "job_result", "namespace"]}},
        "histograms": {"gha_job_execution_duration_seconds": {"labels": ["job_result"], "buckets": [30, 60, 120]},
                       "gha_job_startup_duration_seconds": {"labels": []}}
    }"#,
    )
    .unwrap();
    let registry = Registry::new();
    let recorder = PrometheusRecorder::new(scale_set(), Some(&config), &registry).unwrap();
    scenario(&recorder);
    let families = registry.gather();
    let mut names: Vec<_> = families.iter().map(|f| f.name().to_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "gha_busy_runners",
            "gha_completed_jobs_total",
            "gha_job_execution_duration_seconds",
            "gha_job_startup_duration_seconds"
        ]
    );
    assert_eq!(
        samples(&registry, "gha_busy_runners"),
        vec![(labels(&[("name", "arc-runners")]), 3.0)]
    );
    assert_eq!(
        samples(&registry, "gha_completed_jobs_total"),
        vec![(
            labels(&[
                ("job_workflow_name", "ci"),
                ("job_workflow_target", "heads/main"),
                (
                    "job_workflow_ref",
                    "acme-owner/widgets/.github/workflows/ci.yml@refs/heads/main"
                ),
                ("job_result", "succeeded"),
                ("namespace", "arc-ns"),
            ]),
            1.0
        )]
    );
    let f = family(&families, "gha_job_execution_duration_seconds").unwrap();
    let buckets = bucket_bounds(f);
    assert_eq!(buckets, [30.0, 60.0, 120.0]);
    let f = family(&families, "gha_job_startup_duration_seconds").unwrap();
    assert_eq!(f.get_metric()[0].get_histogram().get_bucket().len(), 45);
    assert!(f.get_metric()[0].get_label().is_empty());
}

#[test]
fn empty_config_registers_nothing_and_bad_buckets_are_an_error() {
    let registry = Registry::new();
    let recorder =
        PrometheusRecorder::new(scale_set(), Some(&MetricsConfig::default()), &registry).unwrap();
    scenario(&recorder);
    assert!(registry.gather().is_empty());

    let config: MetricsConfig = serde_json::from_str(
        r#"{"histograms": {"gha_job_execution_duration_seconds": {"labels": [], "buckets": [5, 1]}}}"#,
    )
    .unwrap();
    let err = PrometheusRecorder::new(scale_set(), Some(&config), &Registry::new()).unwrap_err();
    assert!(
        err.to_string()
            .contains("gha_job_execution_duration_seconds"),
        "{err}"
    );
    assert!(err.to_string().contains("increasing"), "{err}");
}

#[test]
fn value_edge_cases() {
    let registry = Registry::new();
    let recorder = PrometheusRecorder::new(scale_set(), None, &registry).unwrap();

    // Started with no scale-set assign time: counted, not observed.
    let mut job = started("a");
    job.common.scale_set_assign_time = None;
    recorder.record_job_started(&job);
    // Started with no runner assign time: counted, not observed.
    let mut job = started("a");
    job.common.runner_assign_time = None;
    recorder.record_job_started(&job);
    assert_eq!(samples(&registry, "gha_started_jobs_total")[0].1, 2.0);
    assert!(samples(&registry, "gha_job_startup_duration_seconds").is_empty());

    // Completed without a runner assign time: neither counted nor observed.
    let mut job = completed("a", "canceled");
    job.common.runner_assign_time = None;
    recorder.record_job_completed(&job);
    assert!(samples(&registry, "gha_completed_jobs_total").is_empty());

    // Completed with no finish time: counted, not observed.
    let mut job = completed("a", "failed");
    job.common.finish_time = None;
    recorder.record_job_completed(&job);
    assert_eq!(samples(&registry, "gha_completed_jobs_total")[0].1, 1.0);
    assert!(samples(&registry, "gha_job_execution_duration_seconds").is_empty());

    // Sub-second phases within one Unix second observe 0; crossing a second boundary by
    // 0.2 s observes 1 (the Go listener subtracts whole Unix seconds).
    let mut job = started("b");
    job.common.scale_set_assign_time = Some(datetime!(2024-05-01 10:00:00.1 UTC));
    job.common.runner_assign_time = Some(datetime!(2024-05-01 10:00:00.9 UTC));
    recorder.record_job_started(&job);
    job.common.scale_set_assign_time = Some(datetime!(2024-05-01 10:00:00.9 UTC));
    job.common.runner_assign_time = Some(datetime!(2024-05-01 10:00:01.1 UTC));
    recorder.record_job_started(&job);
    assert_eq!(
        histogram_sum(&registry, "gha_job_startup_duration_seconds"),
        1.0
    );
    assert_eq!(
        samples(&registry, "gha_job_startup_duration_seconds")[0].1,
        2.0
    );

    // Statistics and desired counts overwrite.
    recorder.record_desired_runners(3);
    recorder.record_desired_runners(0);
    assert_eq!(samples(&registry, "gha_desired_runners")[0].1, 0.0);
}

#[test]
fn cardinality_is_bounded_by_evicting_the_least_recently_updated() {
    let (registry, recorder) = limited_to(100);
    recorder.record_job_started(&started("job-keep"));
    for i in 0..1000 {
        recorder.record_job_started(&started(&format!("job-{i}")));
        if i % 50 == 0 {
            // Recently updated series survive eviction.
            recorder.record_job_started(&started("job-keep"));
        }
    }
    let series = samples(&registry, "gha_started_jobs_total");
    assert_eq!(series.len(), 100);
    let names: Vec<&str> = series.iter().map(|(l, _)| l["job_name"].as_str()).collect();
    assert!(names.contains(&"job-keep"));
    assert!(names.contains(&"job-999"));
    assert!(!names.contains(&"job-0"));
    let keep = series
        .iter()
        .find(|(l, _)| l["job_name"] == "job-keep")
        .unwrap();
    assert_eq!(keep.1, 21.0);
    assert_eq!(
        samples(&registry, "gha_job_startup_duration_seconds").len(),
        100
    );

    let evicted = samples(&registry, "gha_listener_metric_series_evicted_total");
    let by_metric: BTreeMap<String, f64> = evicted
        .into_iter()
        .map(|(l, v)| (l["metric"].clone(), v))
        .collect();
    assert_eq!(by_metric["gha_started_jobs_total"], 901.0);
    assert_eq!(by_metric["gha_job_startup_duration_seconds"], 901.0);

    // Scale-set gauges hold one series and are never evicted.
    recorder.record_desired_runners(4);
    assert_eq!(samples(&registry, "gha_desired_runners").len(), 1);
}

#[test]
fn unbounded_when_the_limit_is_zero() {
    let (registry, recorder) = limited_to(0);
    for i in 0..300 {
        recorder.record_job_started(&started(&format!("job-{i}")));
    }
    assert_eq!(samples(&registry, "gha_started_jobs_total").len(), 300);
}

proptest::proptest! {
    #![proptest_config(simulator::strategies::seeded(64))]
    #[test]
    fn series_never_exceed_the_limit(limit in 1usize..20, names in proptest::collection::vec(0u8..40, 0..200)) {
        let mut tracker = SeriesTracker::default();
        let mut live = std::collections::HashSet::new();
        for n in names {
            let key = n.to_string();
            live.insert(vec![key.clone()]);
            for old in tracker.touch(&[key.as_str()], limit) {
                proptest::prop_assert!(live.remove(&old));
            }
            proptest::prop_assert!(live.len() <= limit);
            proptest::prop_assert_eq!(live.len(), tracker.last_update.len());
            proptest::prop_assert_eq!(tracker.by_age.len(), tracker.last_update.len());
        }
    }
}
