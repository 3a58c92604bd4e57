//! The client's retry counters (its retry settings are the shared [`retry::RetryPolicy`],
//! default [`retry::policies::GITHUB_REQUEST_RETRIES`]).

use std::sync::atomic::{AtomicU64, Ordering};

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
