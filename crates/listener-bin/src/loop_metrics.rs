//! The counters and gauges the loop keeps, exported as `gha_listener_*` metrics.

use crate::recovery::DegradedReason;

/// Counters the loop keeps; exported as `gha_listener_*` metrics.
#[derive(Clone)]
pub struct LoopMetrics {
    pub messages: prometheus::IntCounter,
    pub poison_messages: prometheus::IntCounter,
    pub poll_errors: prometheus::IntCounter,
    pub ack_failures: prometheus::IntCounter,
    pub acquire_failures: prometheus::IntCounter,
    pub scale_failures: prometheus::IntCounter,
    pub jobs_acquired: prometheus::IntCounter,
    /// `gha_listener_degraded{reason}`: 1 while the loop waits out that condition.
    pub degraded: prometheus::IntGaugeVec,
}

impl LoopMetrics {
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str| recorders::metric::register_counter(registry, name, help);
        Ok(Self {
            messages: counter("gha_listener_messages_total", "Queue messages handled.")?,
            poison_messages: counter(
                "gha_listener_poison_messages_total",
                "Malformed queue messages acknowledged and skipped.",
            )?,
            poll_errors: counter(
                "gha_listener_poll_errors_total",
                "Message polls that failed after the client's retries.",
            )?,
            ack_failures: counter(
                "gha_listener_ack_failures_total",
                "Message acknowledgements that failed after retries (the message is redelivered).",
            )?,
            acquire_failures: counter(
                "gha_listener_acquire_failures_total",
                "Job acquisitions that failed after retries.",
            )?,
            scale_failures: counter(
                "gha_listener_scale_failures_total",
                "Scale patches that failed after the scaler's retries.",
            )?,
            jobs_acquired: counter("gha_listener_jobs_acquired_total", "Jobs acquired.")?,
            degraded: degraded_gauge(registry)?,
        })
    }

    /// Counters on a private registry, for tests and benchmarks.
    pub fn unregistered() -> Self {
        let registry = prometheus::Registry::new();
        // Names are fixed and unique on a fresh registry, so this cannot fail.
        Self::register(&registry).unwrap_or_else(|_| unreachable!("fresh registry"))
    }
}

/// `gha_listener_degraded{reason}`, every reason present at 0 so a dashboard sees the series
/// before the first degradation.
fn degraded_gauge(
    registry: &prometheus::Registry,
) -> Result<prometheus::IntGaugeVec, prometheus::Error> {
    let gauge = recorders::metric::register(
        registry,
        prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "gha_listener_degraded",
                "1 while the listener waits out a condition someone must fix (label reason), else 0.",
            ),
            &["reason"],
        )?,
    )?;
    for reason in DegradedReason::ALL {
        gauge.with_label_values(&[reason.label()]).set(0);
    }
    Ok(gauge)
}
