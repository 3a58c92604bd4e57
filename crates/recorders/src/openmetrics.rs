//! The OpenMetrics exposition, with exemplars: the job-duration histograms' buckets carry
//! the trace id of the last job observed in them, so a slow bucket links to a job's trace.
//!
//! The `prometheus` crate neither stores exemplars nor writes OpenMetrics. Rather than move
//! every metric to `prometheus-client` (and risk the classic text format ARC's dashboards
//! read), the families are gathered as before and written here in OpenMetrics, next to an
//! [`Exemplars`] store of the last exemplar per bucket. The classic text format is still
//! written by the `prometheus` crate, byte for byte as before.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use crate::labels::encode_key;
use crate::spans::JobTraceIds;

/// The Content-Type of an OpenMetrics scrape.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// True when the scraper's `Accept` asks for OpenMetrics (Prometheus does so when it may
/// store exemplars, among other formats it prefers less).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let refused = params.any(|p| p.replace(' ', "") == "q=0");
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

#[derive(Clone, Copy)]
struct Exemplar {
    run_id: i64,
    value: f64,
    at: SystemTime,
}

#[derive(Default)]
struct Store {
    trace_ids: OnceLock<JobTraceIds>,
    by_series: Mutex<BySeries>,
}

/// Each series' buckets, by the series' key ([`series_key`]); `scratch` holds the key
/// being looked up, so observing a known series allocates nothing.
#[derive(Default)]
struct BySeries {
    buckets: HashMap<String, Vec<Option<Exemplar>>>,
    scratch: String,
}

/// The last exemplar of each bucket of each job-duration series: the run whose trace it
/// names (its trace id is computed at scrape time, with the attempt resolved by then).
/// Bounded with the series: a series the recorder evicts loses its exemplars. Cheap to clone.
#[derive(Clone, Default)]
pub struct Exemplars {
    store: Arc<Store>,
}

impl std::fmt::Debug for Exemplars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exemplars")
            .field("enabled", &self.enabled())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A series' key in the exemplar store, written into `out`: the metric and its labels
/// sorted by name (sorted here, in place), as [`encode_key`] writes them.
fn series_key(metric: &str, labels: &mut [(&str, &str)], out: &mut String) {
    labels.sort_unstable();
    let pairs = labels.iter().flat_map(|(k, v)| [*k, *v]);
    encode_key(std::iter::once(metric).chain(pairs), out);
}

impl Exemplars {
    /// Record exemplars with the trace ids of the exported spans (without, none are kept:
    /// a trace id no span carries would link nowhere). Set once.
    pub fn set_trace_ids(&self, trace_ids: JobTraceIds) {
        if self.store.trace_ids.set(trace_ids).is_err() {
            tracing::warn!("exemplar trace ids were already set; keeping the first");
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.store.trace_ids.get().is_some()
    }

    /// `value` of run `run_id` was observed on `metric{labels}` with bucket bounds `bounds`.
    /// `labels` are sorted in place.
    pub(crate) fn observe(
        &self,
        metric: &str,
        labels: &mut [(&str, &str)],
        bounds: &[f64],
        value: f64,
        run_id: i64,
    ) {
        if !self.enabled() {
            return;
        }
        let bucket = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        let mut guard = lock(&self.store.by_series);
        let series = &mut *guard;
        series_key(metric, labels, &mut series.scratch);
        if !series.buckets.contains_key(series.scratch.as_str()) {
            series.buckets.insert(series.scratch.clone(), Vec::new());
        }
        let Some(buckets) = series.buckets.get_mut(series.scratch.as_str()) else {
            return;
        };
        buckets.resize(bounds.len() + 1, None);
        buckets[bucket] = Some(Exemplar {
            run_id,
            value,
            at: SystemTime::now(),
        });
    }

    /// The series was evicted: forget its exemplars.
    pub(crate) fn forget(&self, metric: &str, labels: &mut [(&str, &str)]) {
        let mut key = String::new();
        series_key(metric, labels, &mut key);
        lock(&self.store.by_series).buckets.remove(&key);
    }

    /// ` # {trace_id="…"} value timestamp` for bucket `index` of `metric{labels}`, or "".
    fn suffix(&self, metric: &str, labels: &[LabelPair], index: usize) -> String {
        let Some(trace_ids) = self.store.trace_ids.get() else {
            return String::new();
        };
        let mut pairs: Vec<(&str, &str)> = labels.iter().map(|l| (l.name(), l.value())).collect();
        let mut key = String::new();
        series_key(metric, &mut pairs, &mut key);
        let exemplar = lock(&self.store.by_series)
            .buckets
            .get(&key)
            .and_then(|buckets| buckets.get(index).copied().flatten());
        let Some(e) = exemplar else {
            return String::new();
        };
        let at = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        format!(
            " # {{trace_id=\"{}\"}} {} {}.{:03}",
            trace_ids.trace_id(e.run_id),
            e.value,
            at.as_secs(),
            at.subsec_millis()
        )
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn labels_text(labels: &[LabelPair], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}=\"{}\"", l.name(), escape(l.value())))
        .collect();
    if let Some((name, value)) = extra {
        parts.push(format!("{name}=\"{}\"", escape(value)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A number as the classic text format writes it (`1`, `0.5`, `+Inf`): valid OpenMetrics,
/// and the same `le` values in both formats, so Prometheus before 3.0 (which does not
/// normalise `le`) keeps the very same bucket series when it switches to OpenMetrics.
fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        value.to_string()
    }
}

/// `families` in the OpenMetrics text format, ending in `# EOF`.
pub fn encode(families: &[MetricFamily], exemplars: &Exemplars) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let kind = family.get_field_type();
        let (base, type_name) = match kind {
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name, "unknown"),
            },
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        let _ = writeln!(out, "# TYPE {base} {type_name}");
        if !family.help().is_empty() {
            let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {base} {help}");
        }
        for metric in family.get_metric() {
            write_metric(&mut out, name, kind, metric, exemplars);
        }
    }
    out.push_str("# EOF\n");
    out
}

fn write_metric(
    out: &mut String,
    name: &str,
    kind: MetricType,
    metric: &Metric,
    exemplars: &Exemplars,
) {
    let labels = metric.get_label();
    match kind {
        MetricType::COUNTER => {
            let value = number(metric.get_counter().get_value());
            let _ = writeln!(out, "{name}{} {value}", labels_text(labels, None));
        }
        MetricType::GAUGE | MetricType::UNTYPED => {
            let value = number(metric.get_gauge().get_value());
            let _ = writeln!(out, "{name}{} {value}", labels_text(labels, None));
        }
        MetricType::HISTOGRAM => {
            let h = metric.get_histogram();
            let mut index = 0;
            let mut inf_seen = false;
            for bucket in h.get_bucket() {
                let bound = bucket.upper_bound();
                inf_seen |= bound.is_infinite() && bound > 0.0;
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}{}",
                    labels_text(labels, Some(("le", &number(bound)))),
                    bucket.cumulative_count(),
                    exemplars.suffix(name, labels, index)
                );
                index += 1;
            }
            if !inf_seen {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}{}",
                    labels_text(labels, Some(("le", "+Inf"))),
                    h.get_sample_count(),
                    exemplars.suffix(name, labels, index)
                );
            }
            let plain = labels_text(labels, None);
            let _ = writeln!(out, "{name}_sum{plain} {}", number(h.get_sample_sum()));
            let _ = writeln!(out, "{name}_count{plain} {}", h.get_sample_count());
        }
        MetricType::SUMMARY => {
            let s = metric.get_summary();
            for q in s.get_quantile() {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    labels_text(labels, Some(("quantile", &number(q.quantile())))),
                    number(q.value())
                );
            }
            let plain = labels_text(labels, None);
            let _ = writeln!(out, "{name}_sum{plain} {}", number(s.sample_sum()));
            let _ = writeln!(out, "{name}_count{plain} {}", s.sample_count());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("application/openmetrics-text; q=0"));
        assert!(!wants_openmetrics(""));
    }

    #[test]
    fn families_in_openmetrics() {
        let registry = prometheus::Registry::new();
        let c = crate::metric::register_counter(&registry, "jobs_total", "Jobs.").unwrap();
        c.inc_by(3);
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("wait_seconds", "Wait \\ time.").buckets(vec![1.0, 5.0]),
            &["job"],
        )
        .unwrap();
        registry.register(Box::new(h.clone())).unwrap();
        h.with_label_values(&["a\"b"]).observe(2.0);
        let exemplars = Exemplars::default();
        let text = encode(&registry.gather(), &exemplars);
        assert_eq!(
            text,
            "# TYPE jobs counter\n# HELP jobs Jobs.\njobs_total 3\n\
             # TYPE wait_seconds histogram\n# HELP wait_seconds Wait \\\\ time.\n\
             wait_seconds_bucket{job=\"a\\\"b\",le=\"1\"} 0\n\
             wait_seconds_bucket{job=\"a\\\"b\",le=\"5\"} 1\n\
             wait_seconds_bucket{job=\"a\\\"b\",le=\"+Inf\"} 1\n\
             wait_seconds_sum{job=\"a\\\"b\"} 2\nwait_seconds_count{job=\"a\\\"b\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn series_keys_tell_every_series_apart() {
        let key = |metric: &str, labels: &[(&str, &str)]| {
            let mut out = String::new();
            series_key(metric, &mut labels.to_vec(), &mut out);
            out
        };
        assert_ne!(key("m", &[("ab", "c")]), key("m", &[("a", "bc")]));
        assert_ne!(
            key("m", &[("a", "b:1:c")]),
            key("m", &[("a", "b"), ("c", "")])
        );
        assert_ne!(key("m1", &[]), key("m", &[("1", "")]));
        assert_eq!(key("m", &[("a", "x")]), key("m", &[("a", "x")]));
    }
}
