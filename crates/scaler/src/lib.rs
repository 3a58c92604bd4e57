//! Scales an ARC `EphemeralRunnerSet` and marks `EphemeralRunner`s busy, with merge
//! patches only: the listener's Role grants `patch` and nothing else.
//!
//! Layout:
//! - here: the [`Scaler`] trait the listener drives, and [`RunnerJobStatus`].
//! - `scaler`: [`EphemeralRunnerSetScaler`], the kube-rs client and its one retry loop
//!   ([`retry::Backoff`] via [`RetryPolicy`]).
//! - `dry_run`: server-side dry runs of both patches, for `ghalistener check`.
//! - `state`: [`DesiredCountState`], the Go listener's target and `patchID` arithmetic.
//! - `resources`: the ARC custom resources and the merge patches sent.
//! - `error`: [`ScalerError`], classified by [`retry::Classify`].
//!
//! Retry settings are the shared [`RetryPolicy`] (default
//! [`::retry::policies::KUBE_REQUEST_RETRIES`]) in [`ScalerConfig`].

use std::future::Future;

/// A started job's runner and the job fields written to its status: the runner is
/// the patch's target, `status` its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerJobStatus {
    /// The `EphemeralRunner`'s name (the job's `runnerName`).
    pub runner_name: String,
    pub status: EphemeralRunnerJobStatus,
}

/// What the listener asks of Kubernetes.
pub trait Scaler: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Scale the set to `min_runners + count` (capped at `max_runners`) and return the
    /// target. `jobs_changed` says whether the message that produced `count` held job
    /// started/completed messages (ARC's `dirty`).
    fn handle_desired_runner_count(
        &self,
        count: i64,
        jobs_changed: bool,
    ) -> impl Future<Output = Result<i32, Self::Error>> + Send;

    /// Write job details to the runners that started them. Failures are logged, never
    /// returned: a missing runner must not stop the listener.
    fn handle_jobs_started(&self, jobs: Vec<RunnerJobStatus>) -> impl Future<Output = ()> + Send;
}

mod dry_run;
mod error;
mod resources;
mod scaler;
mod state;

#[cfg(test)]
mod go_listener_cases;

pub use ::retry::RetryPolicy;
pub use dry_run::{DRY_RUN_RUNNER_NAME, RunnerStatusRight};
pub use error::ScalerError;
pub use resources::{
    EphemeralRunner, EphemeralRunnerJobStatus, EphemeralRunnerSet, EphemeralRunnerSetSpec,
    RunnerStatusPatch, ScalePatch, ScalePatchSpec,
};
pub use scaler::{EphemeralRunnerSetScaler, ScalerConfig};
pub use state::{DesiredCountState, ScaleDecision};
