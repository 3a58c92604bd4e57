//! Registering a metric on a Prometheus registry: the one way every counter, gauge and
//! vector of the listener is created, so a name or help text is written once and a
//! registration error is never dropped.
//!
//! ```
//! let registry = prometheus::Registry::new();
//! let polls = recorders::metric::register_counter(&registry, "polls_total", "Polls.")?;
//! polls.inc();
//! # Ok::<(), prometheus::Error>(())
//! ```

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::RecorderError;

/// Register `collector` on `registry` and hand it back (metrics are cheap handles onto
/// what the registry gathers).
pub fn register<C>(registry: &Registry, collector: C) -> Result<C, prometheus::Error>
where
    C: Collector + Clone + 'static,
{
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// A new counter `name` with `help`, registered on `registry`.
pub fn register_counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntCounter, prometheus::Error> {
    register(registry, IntCounter::new(name, help)?)
}

/// A new counter family `name` with `help` over `labels`, registered on `registry`.
pub fn register_counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// A new gauge `name` with `help`, registered on `registry`.
pub fn register_gauge(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntGauge, prometheus::Error> {
    register(registry, IntGauge::new(name, help)?)
}

/// The recorders' error for a failed registration of `metric`, naming it.
pub(crate) fn register_error(metric: &str) -> impl FnOnce(prometheus::Error) -> RecorderError {
    let metric = metric.to_owned();
    move |source| RecorderError::Register { metric, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_are_gathered_and_duplicates_are_errors() {
        let registry = Registry::new();
        let c = register_counter(&registry, "a_total", "A.").unwrap();
        c.inc_by(2);
        let v = register_counter_vec(&registry, "b_total", "B.", &["reason"]).unwrap();
        v.with_label_values(&["x"]).inc();
        let g = register_gauge(&registry, "c", "C.").unwrap();
        g.set(-1);
        let names: Vec<_> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(names, ["a_total", "b_total", "c"]);
        assert!(register_counter(&registry, "a_total", "A.").is_err());
        assert!(register_counter(&registry, "bad name", "A.").is_err());
        let err = register_error("a_total")(prometheus::Error::AlreadyReg);
        assert!(err.to_string().contains("a_total"), "{err}");
    }
}
