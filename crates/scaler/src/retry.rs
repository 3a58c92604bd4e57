//! Backoff for transient Kubernetes API failures.

use std::time::Duration;

use rand::Rng as _;

/// How transient failures (connection errors, timeouts, 409, 429, 5xx) are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Delay before the first retry; doubles on each further retry.
    pub initial_backoff: Duration,
    /// Cap of a single delay (also caps a server's `Retry-After`).
    pub max_backoff: Duration,
    /// Deadline of one request, after which it counts as a transient failure.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Small delays for tests.
    pub fn fast() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// The delay before retry number `retry` (0-based): exponential, capped, with jitter in
    /// its upper half so many listeners do not retry in lockstep. A server-suggested delay
    /// (`retryAfterSeconds`) is honoured up to the cap.
    pub fn backoff(&self, retry: u32, server_hint: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(30)));
        let capped = exp.min(self.max_backoff);
        let jittered = if capped.is_zero() {
            capped
        } else {
            let half = capped / 2;
            half + rand::rng().random_range(Duration::ZERO..=half)
        };
        match server_hint {
            Some(hint) => jittered.max(hint.min(self.max_backoff)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        for retry in 0..10 {
            let d = policy.backoff(retry, None);
            let full = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
        assert_eq!(
            policy.backoff(0, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
    }
}
