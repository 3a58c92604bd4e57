//! Readiness (`/readyz`): ready while the message session is live and a poll finished
//! recently.
//!
//! The loop sets the flag itself, through [`LoopHealth`]: ready on each finished poll, not
//! ready when the session is lost; the composition clears it when the loop ends. What the
//! loop cannot report is its own silence (a poll that never returns), and recorders'
//! [`Readiness`] is a plain flag the probe reads, not a callback it could ask. So one small
//! task, [`Health::watch_staleness`], sleeps until the moment the last progress would turn stale and
//! clears the flag if nothing happened since; it does no other work.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use recorders::Readiness;

/// Readiness turns false when no poll finished for this long (the long poll holds ~50 s).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(120);

/// The loop's health and the probe's flag, with the staleness limit.
#[derive(Clone)]
pub struct Health {
    loop_health: LoopHealth,
    readiness: Readiness,
    stale_after: Duration,
}

impl Health {
    pub fn new(readiness: Readiness, stale_after: Duration) -> Self {
        Self {
            loop_health: LoopHealth::reporting_to(readiness.clone()),
            readiness,
            stale_after,
        }
    }

    /// The handle the loop reports through.
    pub fn loop_health(&self) -> &LoopHealth {
        &self.loop_health
    }

    /// The loop is over: never ready again.
    pub fn loop_ended(&self) {
        self.readiness.set_ready(false);
    }

    /// Clear readiness whenever the last progress grows older than the limit. Never
    /// returns: drop it (e.g. in a `select!` with the loop) to stop it.
    pub async fn watch_staleness(&self) -> Infallible {
        loop {
            let wait = match self.loop_health.since_progress() {
                Some(age) if age <= self.stale_after => self.stale_after - age,
                _ => self.stale_after,
            };
            // A millisecond past the deadline, so a progress exactly at it is stale.
            tokio::time::sleep(wait + Duration::from_millis(1)).await;
            if !self.loop_health.is_ready(self.stale_after) {
                self.readiness.set_ready(false);
                // A poll that finished between the check and the store would be hidden
                // until the next one: look again.
                if self.loop_health.is_ready(self.stale_after) {
                    self.readiness.set_ready(true);
                }
            }
        }
    }
}

/// Liveness of the loop, read by the readiness probe.
#[derive(Clone, Default)]
pub struct LoopHealth {
    session_live: Arc<AtomicBool>,
    last_progress_ms: Arc<AtomicU64>,
    /// Waiting out a condition someone must fix (see [`crate::recovery`]): never ready.
    degraded: Arc<AtomicBool>,
    /// The `/readyz` flag, set here as the loop progresses or loses its session.
    readiness: Option<Readiness>,
}

impl LoopHealth {
    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Health that also drives `readiness`.
    pub fn reporting_to(readiness: Readiness) -> Self {
        Self {
            readiness: Some(readiness),
            ..Self::default()
        }
    }

    pub fn progress(&self) {
        self.session_live.store(true, Ordering::Relaxed);
        self.last_progress_ms
            .store(Self::now_ms(), Ordering::Relaxed);
        if let Some(readiness) = &self.readiness {
            readiness.set_ready(!self.degraded.load(Ordering::Relaxed));
        }
    }

    /// Degraded: not ready until it ends. Its end counts as progress (the call that was
    /// blocked just succeeded), so readiness returns at once.
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
        if degraded {
            if let Some(readiness) = &self.readiness {
                readiness.set_ready(false);
            }
        } else {
            self.progress();
        }
    }

    pub fn set_session_live(&self, live: bool) {
        self.session_live.store(live, Ordering::Relaxed);
        if let (false, Some(readiness)) = (live, &self.readiness) {
            readiness.set_ready(false);
        }
    }

    /// Time since the last progress, `None` before the first.
    pub fn since_progress(&self) -> Option<Duration> {
        let last = self.last_progress_ms.load(Ordering::Relaxed);
        (last != 0).then(|| Duration::from_millis(Self::now_ms().saturating_sub(last)))
    }

    /// Ready while the session is live and a poll completed within `stale_after`.
    pub fn is_ready(&self, stale_after: Duration) -> bool {
        let last = self.last_progress_ms.load(Ordering::Relaxed);
        let age = Self::now_ms().saturating_sub(last);
        self.session_live.load(Ordering::Relaxed)
            && !self.degraded.load(Ordering::Relaxed)
            && last != 0
            && u128::from(age) <= stale_after.as_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_progress_and_turns_stale() {
        let readiness = Readiness::new();
        let health = Health::new(readiness.clone(), Duration::from_secs(10));
        assert!(!readiness.is_ready());
        health.loop_health().progress();
        assert!(readiness.is_ready(), "progress sets readiness at once");
        health.loop_health().set_session_live(false);
        assert!(!readiness.is_ready(), "a lost session clears it at once");
        health.loop_health().progress();
        health.loop_ended();
        assert!(!readiness.is_ready());
    }
}
