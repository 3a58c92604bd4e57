//! One backoff and one failure taxonomy for the whole workspace.
//!
//! - [`Backoff`]: exponential from `initial`, capped at `max`, jittered in `[base/2, base]`
//!   so many listeners do not retry in lockstep; a server's `Retry-After` replaces the
//!   computed wait, clamped to `retry_after_cap`.
//! - [`policies`]: every backoff parameter of the workspace, side by side.
//! - [`FailureKind`] and [`Classify`]: what a failure means to a caller deciding whether to
//!   retry, wait, skip or give up.
//! - [`parse_retry_after`]: the `Retry-After` header (seconds or HTTP date).
//! - [`describe`]: a failure's text: its cause chain on one line, bounded.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod describe;

use std::time::{Duration, SystemTime};

use rand::Rng as _;

/// Exponential backoff with jitter. Wait before retry `n` (0-based):
/// `base = min(max, initial * 2^n)`, drawn uniformly from `[base/2, base]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Base wait before the first retry; doubles on each further retry.
    pub initial: Duration,
    /// Cap of the computed base wait.
    pub max: Duration,
    /// Longest server-suggested wait (`Retry-After`) honoured; a larger one is clamped.
    pub retry_after_cap: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration, retry_after_cap: Duration) -> Self {
        Self {
            initial,
            max,
            retry_after_cap,
        }
    }

    /// The un-jittered wait before retry `attempt` (0-based).
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `attempt`: `retry_after` (clamped to `retry_after_cap`) when the
    /// server gave one, as the Go listener's HTTP client does; otherwise the jittered base.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(hint) = retry_after {
            return hint.min(self.retry_after_cap);
        }
        let base = self.base_delay(attempt);
        let half = base / 2;
        let spread = u64::try_from((base - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            rand::rng().random_range(0..=spread)
        };
        half + Duration::from_nanos(extra)
    }
}

/// How one request is retried: up to `max_retries` attempts after the first, waiting by
/// `backoff` between them. The workspace's two ([`policies::GITHUB_REQUEST_RETRIES`],
/// [`policies::KUBE_REQUEST_RETRIES`]) sit side by side in [`policies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Backoff,
}

/// Every backoff of the workspace. Retry counts sit next to the waits they bound.
pub mod policies {
    use std::time::Duration;

    use super::{Backoff, RetryPolicy};

    /// One GitHub / Actions service HTTP request: transport errors, timeouts, 408, 429 and
    /// 5xx except 501 (and runner-registration 401/403). The Go listener's retryablehttp
    /// settings: waits from 1 s capped at 30 s; `Retry-After` honoured up to 300 s.
    pub const GITHUB_REQUEST: Backoff = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Duration::from_secs(300),
    );
    /// Retries of one GitHub request after the first attempt.
    pub const GITHUB_REQUEST_MAX_RETRIES: u32 = 4;
    /// The GitHub client's default: [`GITHUB_REQUEST`], [`GITHUB_REQUEST_MAX_RETRIES`].
    pub const GITHUB_REQUEST_RETRIES: RetryPolicy = RetryPolicy {
        max_retries: GITHUB_REQUEST_MAX_RETRIES,
        backoff: GITHUB_REQUEST,
    };

    /// Session creation answered 409 (a previous session still alive): the same waits as a
    /// request ([`GITHUB_REQUEST`], or the client's configured request backoff), never
    /// shorter than [`SESSION_CONFLICT_MIN_WAIT`], until the client's
    /// `session_conflict_timeout` has passed.
    pub const SESSION_CONFLICT: Backoff = GITHUB_REQUEST;
    /// Floor of one wait between 409s, so a zero backoff cannot spin.
    pub const SESSION_CONFLICT_MIN_WAIT: Duration = Duration::from_millis(10);

    /// One Kubernetes API patch: connection errors, timeouts, 408, 409, 429, 5xx. Waits from
    /// 200 ms capped at 5 s; the server's `retryAfterSeconds` is honoured up to the same 5 s.
    pub const KUBE_REQUEST: Backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    /// Retries of one Kubernetes patch after the first attempt.
    pub const KUBE_REQUEST_MAX_RETRIES: u32 = 5;
    /// The scaler's default: [`KUBE_REQUEST`], [`KUBE_REQUEST_MAX_RETRIES`].
    pub const KUBE_REQUEST_RETRIES: RetryPolicy = RetryPolicy {
        max_retries: KUBE_REQUEST_MAX_RETRIES,
        backoff: KUBE_REQUEST,
    };
    /// Deadline of one Kubernetes request, after which it counts as a transient failure.
    pub const KUBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// One Azure request (an Entra ID token, a Key Vault secret): the same waits as a GitHub
    /// request, as they share the listener's start-up and heal-in-place budget.
    pub const KEY_VAULT_REQUEST: Backoff = GITHUB_REQUEST;
    /// Retries of one Azure request after the first attempt.
    pub const KEY_VAULT_REQUEST_MAX_RETRIES: u32 = 4;

    /// One OTLP span export request: transport errors, 429, 502, 503, 504 (the OTLP/HTTP
    /// specification's retryable answers). Waits from 100 ms capped at 1.6 s; `Retry-After`
    /// honoured up to 30 s; never past the export's own timeout (10 s by default). The
    /// figures opentelemetry-otlp's exporter used before the listener encoded spans itself.
    pub const OTLP_EXPORT: Backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(1600),
        Duration::from_secs(30),
    );
    /// Retries of one export request after the first attempt.
    pub const OTLP_EXPORT_MAX_RETRIES: u32 = 3;
    /// The span exporter's policy: [`OTLP_EXPORT`], [`OTLP_EXPORT_MAX_RETRIES`].
    pub const OTLP_EXPORT_RETRIES: RetryPolicy = RetryPolicy {
        max_retries: OTLP_EXPORT_MAX_RETRIES,
        backoff: OTLP_EXPORT,
    };

    /// The listener's own loop, once a library gave up: failed polls, failed scale patches,
    /// failed session creation at start. Waits from 1 s capped at 30 s, no server hint.
    pub const LISTENER_LOOP: Backoff = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Duration::from_secs(30),
    );

    /// Waiting out a condition that needs someone to act (credentials rejected, the scale
    /// set or the EphemeralRunnerSet missing, RBAC denying the patch): from 1 s doubling to
    /// the cap, so a day-long outage costs one attempt per cap. The cap is the listener's
    /// `GHALISTENER_RECOVERY_MAX_BACKOFF_SECS` (default [`RECOVERY_MAX_DEFAULT`]).
    pub const RECOVERY_INITIAL: Duration = Duration::from_secs(1);
    /// Default cap of [`recovery`]'s wait.
    pub const RECOVERY_MAX_DEFAULT: Duration = Duration::from_secs(300);

    /// The recovery backoff with the given cap (no server hint applies).
    pub const fn recovery(max: Duration) -> Backoff {
        Backoff::new(RECOVERY_INITIAL, max, max)
    }
}

/// What a failure means to whoever decides whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A later attempt with the same request may succeed (connection, timeout, 408, 429,
    /// 5xx, an expired token); `retry_after` is the server's suggestion, when it gave one.
    Transient { retry_after: Option<Duration> },
    /// Another party holds what we asked for (a live message session: 409).
    Conflict,
    /// The object (scale set, session, resource) does not exist.
    NotFound,
    /// The credentials were refused (GitHub 401/403, Kubernetes 401).
    CredentialsRejected,
    /// Authenticated but not allowed (Kubernetes RBAC 403).
    Forbidden,
    /// Our own configuration is unusable (URL, key, client config).
    InvalidInput,
    /// The server refused this request for a reason retrying it unchanged cannot fix
    /// (another 4xx, a TLS failure, a malformed success body); `status` when HTTP gave one.
    Rejected { status: Option<u16> },
    /// A queue message that cannot be parsed: acknowledge it and move on.
    Poison { message_id: i64 },
}

impl FailureKind {
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// Errors that can say which [`FailureKind`] they are.
pub trait Classify {
    fn kind(&self) -> FailureKind;
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
    let d = at - time::OffsetDateTime::from(now);
    Some(if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let p = policies::GITHUB_REQUEST;
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
    }

    #[test]
    fn retry_after_replaces_the_wait_within_its_cap() {
        let p = policies::GITHUB_REQUEST;
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7200))),
            Duration::from_secs(300)
        );
        assert_eq!(
            policies::KUBE_REQUEST.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(5)
        );
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
