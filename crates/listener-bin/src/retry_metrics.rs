//! `gha_listener_{github,kubernetes}_retries_total`: retries done inside the GitHub client and
//! the scaler, which count them in their own atomics. The counters are raised to those
//! totals when `/metrics` is scraped, so no timer copies them.

use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Registry};

type Total = Box<dyn Fn() -> u64 + Send + Sync>;

struct Sources {
    github: Total,
    kubernetes: Total,
}

struct Inner {
    github: IntCounter,
    kubernetes: IntCounter,
    /// Set once the client and the scaler exist; until then both read 0.
    sources: OnceLock<Sources>,
}

/// The two retry counters, registered as one collector.
#[derive(Clone)]
pub struct RetryCounters(Arc<Inner>);

impl RetryCounters {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counters = Self(Arc::new(Inner {
            github: IntCounter::new(
                "gha_listener_github_retries_total",
                "GitHub and Actions service requests retried (transport errors, timeouts, 429, 5xx).",
            )?,
            kubernetes: IntCounter::new(
                "gha_listener_kubernetes_retries_total",
                "Kubernetes API patches retried (transport errors, timeouts, 409, 429, 5xx).",
            )?,
            sources: OnceLock::new(),
        }));
        recorders::metric::register(registry, counters)
    }

    /// Where the monotonic totals come from; only the first call counts.
    pub fn read_from(
        &self,
        github: impl Fn() -> u64 + Send + Sync + 'static,
        kubernetes: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let sources = Sources {
            github: Box::new(github),
            kubernetes: Box::new(kubernetes),
        };
        if self.0.sources.set(sources).is_err() {
            tracing::debug!("retry counter sources already set");
        }
    }

    /// Raise the counters to the sources' totals.
    pub fn sync(&self) {
        let Some(sources) = self.0.sources.get() else {
            return;
        };
        for (counter, total) in [
            (&self.0.github, (sources.github)()),
            (&self.0.kubernetes, (sources.kubernetes)()),
        ] {
            let behind = total.saturating_sub(counter.get());
            if behind > 0 {
                counter.inc_by(behind);
            }
        }
    }
}

impl Collector for RetryCounters {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.0.github.desc();
        descs.extend(self.0.kubernetes.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.sync();
        let mut families = self.0.github.collect();
        families.extend(self.0.kubernetes.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_scrape_reads_the_totals() {
        let registry = Registry::new();
        let counters = RetryCounters::register(&registry).unwrap();
        let github = Arc::new(AtomicU64::new(0));
        let read = github.clone();
        counters.read_from(move || read.load(Ordering::Relaxed), || 2);
        github.store(3, Ordering::Relaxed);
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("gha_listener_github_retries_total 3"),
            "{text}"
        );
        assert!(
            text.contains("gha_listener_kubernetes_retries_total 2"),
            "{text}"
        );
    }
}
