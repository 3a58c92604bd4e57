//! The scaler's retry settings for transient Kubernetes API failures; the waits are the
//! workspace's one [`retry::Backoff`].

use std::time::Duration;

/// How transient failures (connection errors, timeouts, 408, 409, 429, 5xx) are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Delay before the first retry; doubles on each further retry.
    pub initial_backoff: Duration,
    /// Cap of a single delay (also caps a server's `retryAfterSeconds`).
    pub max_backoff: Duration,
    /// Deadline of one request, after which it counts as a transient failure.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// [`retry::policies::KUBE_REQUEST`].
    fn default() -> Self {
        let b = retry::policies::KUBE_REQUEST;
        Self {
            max_retries: retry::policies::KUBE_REQUEST_MAX_RETRIES,
            initial_backoff: b.initial,
            max_backoff: b.max,
            request_timeout: retry::policies::KUBE_REQUEST_TIMEOUT,
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

    /// The shared backoff with these waits; a server hint is honoured up to `max_backoff`.
    pub fn backoff(&self) -> retry::Backoff {
        retry::Backoff::new(self.initial_backoff, self.max_backoff, self.max_backoff)
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
        let backoff = policy.backoff();
        for retry in 0..10 {
            let d = backoff.delay(retry, None);
            let full = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
        assert_eq!(
            backoff.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
        assert_eq!(
            RetryPolicy::default().backoff(),
            retry::policies::KUBE_REQUEST
        );
    }
}
