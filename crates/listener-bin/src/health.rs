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
use std::time::Duration;

use recorders::Readiness;

use crate::listener::LoopHealth;

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
