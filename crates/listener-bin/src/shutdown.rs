//! Shutdown: the signal that asks for it and the one time budget every step after it shares.
//!
//! After SIGTERM the steps run one after another: the loop finishes (or abandons) the work in
//! hand, the message session is deleted, the span exporter flushes, the metrics server lets
//! in-flight scrapes finish, and the runtime drops what is still blocked. Each step gets a
//! named part of [`ShutdownBudget::TOTAL`]; the parts add up to it (checked at compile time),
//! so the worst-case exit is the documented 5 s, well inside ARC's 60 s grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long each shutdown step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownBudget {
    /// The message in hand (its ack, acquire and patches, or a scale being retried); an
    /// unacknowledged message is redelivered to the next listener, so abandoning it is safe.
    pub work_in_hand: Duration,
    /// Deleting the message session, so the next listener does not meet a 409.
    pub session_delete: Duration,
    /// Exporting the job spans still queued; what is left is counted as dropped.
    pub span_flush: Duration,
    /// In-flight scrapes of the metrics server.
    pub metrics_drain: Duration,
    /// Tasks still blocked when the runtime stops (e.g. a stalled collector connection).
    pub runtime_stop: Duration,
}

const WORK_IN_HAND_MS: u64 = 2_000;
const SESSION_DELETE_MS: u64 = 1_500;
const SPAN_FLUSH_MS: u64 = 1_000;
const METRICS_DRAIN_MS: u64 = 250;
const RUNTIME_STOP_MS: u64 = 250;
const TOTAL_MS: u64 = 5_000;

const _: () = assert!(
    WORK_IN_HAND_MS + SESSION_DELETE_MS + SPAN_FLUSH_MS + METRICS_DRAIN_MS + RUNTIME_STOP_MS
        == TOTAL_MS,
    "the shutdown steps must add up to the documented budget"
);

impl ShutdownBudget {
    /// The longest exit after SIGTERM, as docs/reliability.md states it.
    pub const TOTAL: Duration = Duration::from_millis(TOTAL_MS);

    /// The listener's budget.
    pub const DEFAULT: ShutdownBudget = ShutdownBudget {
        work_in_hand: Duration::from_millis(WORK_IN_HAND_MS),
        session_delete: Duration::from_millis(SESSION_DELETE_MS),
        span_flush: Duration::from_millis(SPAN_FLUSH_MS),
        metrics_drain: Duration::from_millis(METRICS_DRAIN_MS),
        runtime_stop: Duration::from_millis(RUNTIME_STOP_MS),
    };

    /// The sum of the parts.
    pub fn total(&self) -> Duration {
        self.work_in_hand
            + self.session_delete
            + self.span_flush
            + self.metrics_drain
            + self.runtime_stop
    }
}

impl Default for ShutdownBudget {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A request to shut down (SIGTERM, SIGINT, or a test) and the budget of the steps after it.
/// Cheap to clone: every clone sees the same request.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    budget: ShutdownBudget,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// The token the loop and the session opening watch.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn budget(&self) -> &ShutdownBudget {
        &self.budget
    }

    pub fn request(&self) {
        self.token.cancel();
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Request shutdown on the first SIGTERM (kubelet) or SIGINT (a terminal).
    pub async fn on_signals(self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested");
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!(signal = "ctrl-c", "shutdown requested");
        }
        self.request();
    }
}

/// A caller's token, with the listener's budget.
impl From<CancellationToken> for Shutdown {
    fn from(token: CancellationToken) -> Self {
        Self {
            token,
            budget: ShutdownBudget::DEFAULT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_add_up_to_the_documented_total() {
        assert_eq!(ShutdownBudget::DEFAULT.total(), ShutdownBudget::TOTAL);
        assert_eq!(ShutdownBudget::TOTAL, Duration::from_secs(5));
    }

    #[test]
    fn clones_share_the_request() {
        let shutdown = Shutdown::new();
        let clone = shutdown.clone();
        assert!(!clone.is_requested());
        shutdown.request();
        assert!(clone.is_requested());
    }
}
