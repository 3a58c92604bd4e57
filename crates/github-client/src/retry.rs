//! Retry policy (exponential backoff with jitter, `Retry-After`) and the client's counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rand::Rng;
use time::OffsetDateTime;

/// Longest `Retry-After` we honour; a larger value is clamped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Transport errors, timeouts, 408, 429 and 5xx (except 501) are retried `max_retries` times.
/// Wait before retry `n` (0-based): `min(max_backoff, initial_backoff * 2^n)`, jittered down to
/// half of it at random; a `Retry-After` header (seconds or HTTP date) replaces the computed wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// The anchor's: 4 retries, waits from 1 s, capped at 30 s.
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The un-jittered wait before retry `attempt` (0-based).
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The wait before retry `attempt`: jittered in `[base/2, base]`, or `Retry-After` when given.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(MAX_RETRY_AFTER);
        }
        let base = self.base_delay(attempt);
        let half = base / 2;
        let jitter_ns = u64::try_from((base - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter_ns == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter_ns)
        };
        half + Duration::from_nanos(extra)
    }
}

/// Parse `Retry-After`: delay-seconds or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    let now = OffsetDateTime::from(now);
    let d = at - now;
    Some(if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    })
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
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.base_delay(0), Duration::from_secs(1));
        assert_eq!(p.base_delay(1), Duration::from_secs(2));
        assert_eq!(p.base_delay(4), Duration::from_secs(16));
        assert_eq!(p.base_delay(5), Duration::from_secs(30));
        assert_eq!(p.base_delay(100), Duration::from_secs(30));
        for attempt in 0..8 {
            let d = p.delay(attempt, None);
            let base = p.base_delay(attempt);
            assert!(d >= base / 2 && d <= base, "{attempt}: {d:?}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(7200))), MAX_RETRY_AFTER);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_767); // 1994-11-06 08:49:27 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
