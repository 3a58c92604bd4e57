//! Waiting out, in place, a condition that needs someone to act: credentials GitHub
//! rejects or that cannot be read from the vault at start, a scale set the service does
//! not know, an EphemeralRunnerSet the Role does not cover or that does not exist.
//!
//! ARC's controller recreates an exited listener at once, with no backoff, so exiting on
//! such a condition is a crash loop: registration-token calls every few seconds against the
//! credentials' rate limit and pod churn, while the error scrolls away. Each of them can
//! clear without a new pod (a rotated secret, a reinstalled App, a re-registered scale set,
//! a fixed Role), so the loop waits them out: `/readyz` answers 503,
//! `gha_listener_degraded{reason}` is 1, one log line marks each change of state (and a
//! warning now and then while it lasts), and attempts back off from 1 s to
//! `GHALISTENER_RECOVERY_MAX_BACKOFF_SECS` (default 300 s).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use retry::Backoff;

use crate::health::LoopHealth;

/// Why the listener cannot do its job; the `reason` label of `gha_listener_degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DegradedReason {
    /// GitHub answered 401/403 to the registration- or installation-token request.
    CredentialsRejected,
    /// The credentials could not be read at start (Azure Key Vault: unreachable, the
    /// secret missing, access denied, the client assertion rejected).
    CredentialsUnavailable,
    /// Session creation answered 404 `RunnerScaleSetNotFoundException`.
    ScaleSetNotFound,
    /// The EphemeralRunnerSet patch answered 403 (or 401).
    SetForbidden,
    /// The EphemeralRunnerSet patch answered 404.
    SetNotFound,
}

/// Which of the loop's calls a reason blocks: a success of that call ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedCall {
    /// Creating the message session or polling it.
    Session,
    /// Patching the EphemeralRunnerSet's replicas.
    Scale,
}

impl DegradedReason {
    pub const ALL: [DegradedReason; 5] = [
        DegradedReason::CredentialsRejected,
        DegradedReason::CredentialsUnavailable,
        DegradedReason::ScaleSetNotFound,
        DegradedReason::SetForbidden,
        DegradedReason::SetNotFound,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DegradedReason::CredentialsRejected => "credentials_rejected",
            DegradedReason::CredentialsUnavailable => "credentials_unavailable",
            DegradedReason::ScaleSetNotFound => "scale_set_not_found",
            DegradedReason::SetForbidden => "set_forbidden",
            DegradedReason::SetNotFound => "set_not_found",
        }
    }

    /// What an operator fixes; goes into the log lines.
    pub fn what_to_fix(self) -> &'static str {
        match self {
            DegradedReason::CredentialsRejected => {
                "GitHub rejects the credentials: rotate github_token or the App key in the \
                 config secret, or reinstall/unsuspend the GitHub App; the file is read again \
                 before each attempt"
            }
            DegradedReason::CredentialsUnavailable => {
                "the GitHub credentials cannot be read from Azure Key Vault (the error says \
                 why: the vault unreachable, the secret missing, access to it denied, the \
                 client assertion rejected): fix it in the vault or Entra ID; the secret is \
                 read again before each attempt"
            }
            DegradedReason::ScaleSetNotFound => {
                "the Actions service does not know runner_scale_set_id: re-register the scale \
                 set (ARC's controller does it when the AutoscalingRunnerSet is reconciled) \
                 or fix configure_url"
            }
            DegradedReason::SetForbidden => {
                "the listener's ServiceAccount may not patch the EphemeralRunnerSet: grant \
                 `patch` on ephemeralrunnersets in its Role (see docs/rbac.md)"
            }
            DegradedReason::SetNotFound => {
                "the EphemeralRunnerSet named by ephemeral_runner_set_name does not exist in \
                 ephemeral_runner_set_namespace: check the names or let the controller \
                 recreate it"
            }
        }
    }

    pub fn blocks(self) -> BlockedCall {
        match self {
            DegradedReason::CredentialsRejected
            | DegradedReason::CredentialsUnavailable
            | DegradedReason::ScaleSetNotFound => BlockedCall::Session,
            DegradedReason::SetForbidden | DegradedReason::SetNotFound => BlockedCall::Scale,
        }
    }
}

/// One spell of degradation.
struct Episode {
    reason: DegradedReason,
    /// Attempts made since it began.
    attempts: u32,
    since: Instant,
}

/// The degraded state of one loop: the gauge, readiness and the log lines, kept together
/// so they cannot disagree.
pub struct Degradation {
    gauge: prometheus::IntGaugeVec,
    health: LoopHealth,
    backoff: Backoff,
    episode: Mutex<Option<Episode>>,
}

/// "Still degraded" is logged at these attempt counts and then every 16 attempts: a few
/// early reminders, then about one an hour at the default cap.
fn reminds_at(attempts: u32) -> bool {
    matches!(attempts, 4 | 8) || (attempts >= 16 && attempts.is_multiple_of(16))
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

impl Degradation {
    pub fn new(gauge: prometheus::IntGaugeVec, health: LoopHealth, max_backoff: Duration) -> Self {
        Self {
            gauge,
            health,
            backoff: retry::policies::recovery(max_backoff),
            episode: Mutex::new(None),
        }
    }

    fn episode(&self) -> std::sync::MutexGuard<'_, Option<Episode>> {
        // Only plain fields are written under the lock: a poisoned one is still whole.
        self.episode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_gauge(&self, reason: DegradedReason, value: i64) {
        self.gauge.with_label_values(&[reason.label()]).set(value);
    }

    /// A call failed with `reason`: mark the listener degraded (logging only when the state
    /// changes, or as an occasional reminder) and return how long to wait before the next
    /// attempt.
    pub fn wait_before_retry(
        &self,
        reason: DegradedReason,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Duration {
        let mut episode = self.episode();
        let attempts = match episode.as_mut() {
            Some(current) if current.reason == reason => {
                current.attempts = current.attempts.saturating_add(1);
                current.attempts
            }
            _ => {
                if let Some(old) = episode.take() {
                    self.set_gauge(old.reason, 0);
                }
                *episode = Some(Episode {
                    reason,
                    attempts: 0,
                    since: Instant::now(),
                });
                0
            }
        };
        let wait = self.backoff.delay(attempts, None);
        let degraded_for = episode
            .as_ref()
            .map(|e| e.since.elapsed())
            .unwrap_or_default();
        drop(episode);
        if attempts == 0 {
            self.set_gauge(reason, 1);
            self.health.set_degraded(true);
            tracing::error!(
                reason = reason.label(),
                error = %error,
                what_to_fix = reason.what_to_fix(),
                retry_in_s = secs(wait),
                "listener degraded: waiting it out in place"
            );
        } else if reminds_at(attempts) {
            tracing::warn!(
                reason = reason.label(),
                attempts,
                degraded_for_s = secs(degraded_for),
                error = %error,
                what_to_fix = reason.what_to_fix(),
                retry_in_s = secs(wait),
                "listener still degraded"
            );
        }
        wait
    }

    /// The reason's work is blocked and reading the credentials again failed: logged once
    /// per spell (the credentials in use are kept).
    pub fn reload_failed(&self, error: &dyn std::fmt::Display) {
        let first = self.episode().as_ref().is_none_or(|e| e.attempts == 0);
        if first {
            tracing::warn!(error = %error, "reading the credentials again failed; keeping the ones in use");
        }
    }

    /// `call` succeeded: a degradation it was blocked by is over.
    pub fn succeeded(&self, call: BlockedCall) {
        let mut episode = self.episode();
        let Some(current) = episode.as_ref() else {
            return;
        };
        if current.reason.blocks() != call {
            return;
        }
        let (reason, attempts, since) = (current.reason, current.attempts, current.since);
        *episode = None;
        drop(episode);
        self.set_gauge(reason, 0);
        self.health.set_degraded(false);
        tracing::info!(
            reason = reason.label(),
            attempts = attempts + 1,
            degraded_for_s = secs(since.elapsed()),
            "listener recovered"
        );
    }

    /// The reason the listener is degraded by now, if any.
    pub fn current(&self) -> Option<DegradedReason> {
        self.episode().as_ref().map(|e| e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn degradation() -> (Degradation, prometheus::IntGaugeVec, LoopHealth) {
        let gauge = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("gha_listener_degraded", "test"),
            &["reason"],
        )
        .unwrap();
        let health = LoopHealth::default();
        let d = Degradation::new(gauge.clone(), health.clone(), Duration::from_secs(4));
        (d, gauge, health)
    }

    #[test]
    fn a_spell_sets_the_gauge_backs_off_to_the_cap_and_ends_on_success_of_its_call() {
        let (d, gauge, health) = degradation();
        health.progress();
        let waits: Vec<Duration> = (0..6)
            .map(|_| d.wait_before_retry(DegradedReason::SetForbidden, &"403"))
            .collect();
        assert!(waits[0] <= Duration::from_secs(1) && waits[0] >= Duration::from_millis(500));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)));
        assert!(waits[5] >= Duration::from_secs(2), "{waits:?}");
        assert_eq!(gauge.with_label_values(&["set_forbidden"]).get(), 1);
        assert!(
            !health.is_ready(Duration::from_secs(60)),
            "degraded is not ready"
        );

        d.succeeded(BlockedCall::Session);
        assert_eq!(
            d.current(),
            Some(DegradedReason::SetForbidden),
            "other call"
        );
        d.succeeded(BlockedCall::Scale);
        assert_eq!(d.current(), None);
        assert_eq!(gauge.with_label_values(&["set_forbidden"]).get(), 0);
        assert!(health.is_ready(Duration::from_secs(60)));
    }

    #[test]
    fn a_new_reason_replaces_the_old_one_on_the_gauge() {
        let (d, gauge, _) = degradation();
        d.wait_before_retry(DegradedReason::CredentialsRejected, &"401");
        d.wait_before_retry(DegradedReason::ScaleSetNotFound, &"404");
        assert_eq!(gauge.with_label_values(&["credentials_rejected"]).get(), 0);
        assert_eq!(gauge.with_label_values(&["scale_set_not_found"]).get(), 1);
        assert!(reminds_at(4) && reminds_at(32) && !reminds_at(5) && !reminds_at(17));
    }
}
