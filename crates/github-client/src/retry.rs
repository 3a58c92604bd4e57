//! The client's retry settings (waits from the shared `retry` crate) and its counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How the client retries one request. The waits are the workspace's one [`retry::Backoff`];
/// this struct only holds the client's settings of it.
///
/// Transport errors, timeouts, 408, 429 and 5xx (except 501) are retried `max_retries` times.
/// Wait before retry `n` (0-based): `min(max_backoff, initial_backoff * 2^n)`, jittered down to
/// half of it at random; a `Retry-After` header (seconds or HTTP date) replaces the computed
/// wait, up to [`retry::policies::GITHUB_REQUEST`]'s 300 s ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// The Go listener's: 4 retries, waits from 1 s, capped at 30 s.
    fn default() -> Self {
        let b = retry::policies::GITHUB_REQUEST;
        Self {
            max_retries: retry::policies::GITHUB_REQUEST_MAX_RETRIES,
            initial_backoff: b.initial,
            max_backoff: b.max,
        }
    }
}

impl RetryPolicy {
    /// The shared backoff with this policy's waits and the GitHub `Retry-After` ceiling.
    pub fn backoff(&self) -> retry::Backoff {
        retry::Backoff::new(
            self.initial_backoff,
            self.max_backoff,
            retry::policies::GITHUB_REQUEST.retry_after_cap,
        )
    }
}

/// Counters exposed by [`crate::ActionsClient::metrics`].
#[derive(Debug, Default)]
pub struct ClientMetrics {
    requests: AtomicU64,
    retries: AtomicU64,
    admin_token_refreshes: AtomicU64,
    session_refreshes: AtomicU64,
    session_conflicts: AtomicU64,
}

impl ClientMetrics {
    /// HTTP requests sent (every attempt).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Attempts that were retries (transport errors, timeouts, 429, 5xx, runner-registration 401/403).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    /// Actions service admin-token fetches (the first one included).
    pub fn admin_token_refreshes(&self) -> u64 {
        self.admin_token_refreshes.load(Ordering::Relaxed)
    }
    /// Message sessions refreshed after a 401 (new queue token).
    pub fn session_refreshes(&self) -> u64 {
        self.session_refreshes.load(Ordering::Relaxed)
    }
    /// 409 answers to session creation that were waited out.
    pub fn session_conflicts(&self) -> u64 {
        self.session_conflicts.load(Ordering::Relaxed)
    }

    pub(crate) fn inc_requests(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_retries(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_admin_token_refreshes(&self) {
        self.admin_token_refreshes.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_session_refreshes(&self) {
        self.session_refreshes.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn inc_session_conflicts(&self) {
        self.session_conflicts.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_shared_github_policy() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 4);
        assert_eq!(p.backoff(), retry::policies::GITHUB_REQUEST);
        assert_eq!(
            p.backoff().delay(0, Some(Duration::from_secs(7200))),
            Duration::from_secs(300)
        );
    }
}
