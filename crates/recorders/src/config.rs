//! The `metrics` value of the listener's config.json, as ARC's controller writes it
//! (Go `v1alpha1.MetricsConfig`): `counters` / `gauges` / `histograms` map a metric name
//! to `{labels, buckets}`. A missing map selects no metric of that kind; the whole
//! value being null or absent selects the defaults (the caller passes `None`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    #[serde(deserialize_with = "null_as_default")]
    pub counters: BTreeMap<String, Option<LabelsMetric>>,
    #[serde(deserialize_with = "null_as_default")]
    pub gauges: BTreeMap<String, Option<LabelsMetric>>,
    #[serde(deserialize_with = "null_as_default")]
    pub histograms: BTreeMap<String, Option<HistogramMetric>>,
}

/// A counter or gauge selection (Go `CounterMetric` / `GaugeMetric`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LabelsMetric {
    #[serde(deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
}

/// A histogram selection (Go `HistogramMetric`); empty buckets mean the defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HistogramMetric {
    #[serde(deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub buckets: Vec<f64>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_the_controller_json() {
        // Shape written by the controller from the AutoscalingRunnerSet's listenerMetrics.
        let json = r#"{
            "counters": {"gha_started_jobs_total": {"labels": ["repository", "job_name"]}},
            "gauges": {"gha_busy_runners": {"labels": ["name"]}, "gha_idle_runners": null},
            "histograms": {"gha_job_execution_duration_seconds":
                {"labels": ["job_result"], "buckets": [1, 2.5, 10]},
                "gha_job_startup_duration_seconds": {"labels": null}}
        }"#;
        let c: MetricsConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            c.counters["gha_started_jobs_total"]
                .as_ref()
                .unwrap()
                .labels,
            ["repository", "job_name"]
        );
        assert_eq!(c.gauges["gha_idle_runners"], None);
        let h = c.histograms["gha_job_execution_duration_seconds"]
            .as_ref()
            .unwrap();
        assert_eq!(h.buckets, [1.0, 2.5, 10.0]);
        let s = c.histograms["gha_job_startup_duration_seconds"]
            .as_ref()
            .unwrap();
        assert!(s.labels.is_empty() && s.buckets.is_empty());
    }

    #[test]
    fn null_or_missing_maps_are_empty_and_null_metrics_is_none() {
        let c: MetricsConfig = serde_json::from_str(r#"{"counters": null}"#).unwrap();
        assert_eq!(c, MetricsConfig::default());
        #[derive(Deserialize)]
        struct Outer {
            metrics: Option<MetricsConfig>,
        }
        let o: Outer = serde_json::from_str(r#"{"metrics": null}"#).unwrap();
        assert!(o.metrics.is_none());
        let err = serde_json::from_str::<MetricsConfig>(r#"{"counters": {"x": {"labels": 3}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }
}
