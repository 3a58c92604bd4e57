//! Server-side dry runs (`?dryRun=All`) of the two patches the listener sends, for the
//! preflight check: the API server authenticates, authorizes (RBAC), validates and answers
//! as if it applied them, and stores nothing. So a check proves the rights are there
//! without scaling the set or touching a runner.

use kube::api::{Patch, PatchParams};

use crate::RunnerJobStatus;
use crate::error::ScalerError;
use crate::resources::{EphemeralRunnerJobStatus, RunnerStatusPatch, ScalePatch};
use crate::scaler::{EphemeralRunnerSetScaler, Failure};
use crate::state::ScaleDecision;

/// A runner name no controller creates (ARC's are `{set}-runner-{suffix}`): its status
/// patch is answered 404 after authorization when the right is there, 403 when not.
pub const DRY_RUN_RUNNER_NAME: &str = "ghalistener-check-no-such-runner";

/// What the dry run of the runner-status patch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerStatusRight {
    /// Authorized; the made-up runner does not exist (404), as expected.
    Granted,
    /// Authorized, and a runner by that name exists: the dry run was accepted (200).
    GrantedRunnerExists,
}

fn dry_run() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

impl EphemeralRunnerSetScaler {
    /// Dry-run the first scale patch the listener would send (`min_runners`, patch id 0).
    /// Returns the set's `spec.replicas` as the server would leave it.
    pub async fn dry_run_scale(&self) -> Result<i32, ScalerError> {
        let config = self.config();
        let patch = Patch::Merge(ScalePatch::from(ScaleDecision {
            replicas: config.min_runners,
            patch_id: 0,
        }));
        let params = dry_run();
        let name = config.name.as_str();
        let target = || format!("ephemeralrunnersets/{}/{name} (dry run)", config.namespace);
        self.with_retries(target, || self.sets.patch(name, &params, &patch))
            .await
            .map(|set| set.spec.replicas)
            .map_err(|failure| self.set_error(failure))
    }

    /// Dry-run a runner-status patch on [`DRY_RUN_RUNNER_NAME`].
    pub async fn dry_run_runner_status(&self) -> Result<RunnerStatusRight, ScalerError> {
        let namespace = self.config().namespace.clone();
        let job = RunnerJobStatus {
            runner_name: DRY_RUN_RUNNER_NAME.to_owned(),
            status: EphemeralRunnerJobStatus {
                job_request_id: 1,
                job_repository_name: "ghalistener/check".to_owned(),
                job_id: "ghalistener-check".to_owned(),
                workflow_run_id: 1,
                job_workflow_ref: String::new(),
                job_display_name: "ghalistener check".to_owned(),
            },
        };
        let patch = Patch::Merge(RunnerStatusPatch::from(&job));
        let params = dry_run();
        let target =
            || format!("ephemeralrunners/{namespace}/{DRY_RUN_RUNNER_NAME}/status (dry run)");
        let result = self
            .with_retries(target, || {
                self.patch_runner_status_text(DRY_RUN_RUNNER_NAME, &params, &patch)
            })
            .await;
        let failed = |code: Option<u16>, reason: String| ScalerError::RunnerStatusFailed {
            namespace: namespace.clone(),
            runner: DRY_RUN_RUNNER_NAME.to_owned(),
            code,
            reason,
        };
        match result {
            Ok(_) => Ok(RunnerStatusRight::GrantedRunnerExists),
            Err(Failure::Permanent { code: 404, .. }) => Ok(RunnerStatusRight::Granted),
            Err(Failure::Permanent {
                code: 403, message, ..
            }) => Err(ScalerError::RunnerStatusForbidden {
                namespace: namespace.clone(),
                message,
            }),
            Err(Failure::Permanent {
                code,
                reason,
                message,
            }) => Err(failed(Some(code), format!("{code} {reason}: {message}"))),
            Err(Failure::Exhausted { attempts, last }) => {
                Err(failed(None, format!("{attempts} attempts, last: {last}")))
            }
        }
    }
}
