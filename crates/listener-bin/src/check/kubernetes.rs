//! Kubernetes: the client configuration, then server-side dry runs of the two patches the
//! listener sends. The API server authorizes and validates a dry run like the real patch
//! and stores nothing, so the rights are proven without scaling anything.

use scaler::{
    DRY_RUN_RUNNER_NAME, EphemeralRunnerSetScaler, RunnerStatusRight, ScalerConfig, ScalerError,
};

use super::report::Check;
use crate::config::Config;

const CLIENT: &str = "kubernetes-config";
const SET_PATCH: &str = "kubernetes-set-patch";
const RUNNER_STATUS_PATCH: &str = "kubernetes-runner-status-patch";
/// This module's checks, in the order they run.
pub const NAMES: &[&str] = &[CLIENT, SET_PATCH, RUNNER_STATUS_PATCH];

pub async fn checks(config: &Config) -> Vec<Check> {
    let namespace = &config.ephemeral_runner_set_namespace;
    let name = &config.ephemeral_runner_set_name;
    let scaler_config = ScalerConfig::new(
        namespace.clone(),
        name.clone(),
        config.min_runners_i32(),
        config.max_runners_i32(),
    );
    let scaler = match EphemeralRunnerSetScaler::from_environment(scaler_config).await {
        Ok(scaler) => scaler,
        Err(e) => {
            return vec![
                Check::fail(
                    CLIENT,
                    e.to_string(),
                    "run inside the listener pod (its ServiceAccount token is mounted) or set KUBECONFIG",
                ),
                Check::skip(SET_PATCH, "not checked: no Kubernetes client"),
                Check::skip(RUNNER_STATUS_PATCH, "not checked: no Kubernetes client"),
            ];
        }
    };
    let mut checks = vec![Check::ok(
        CLIENT,
        "client configured (in-cluster ServiceAccount or KUBECONFIG)",
    )];

    checks.push(match scaler.dry_run_scale().await {
        Ok(_) => Check::ok(
            SET_PATCH,
            format!("dry-run merge patch of EphemeralRunnerSet {namespace}/{name} accepted (nothing changed)"),
        ),
        Err(e) => Check::fail(SET_PATCH, e.to_string(), set_fix(&e, namespace, name)),
    });

    checks.push(match scaler.dry_run_runner_status().await {
        Ok(RunnerStatusRight::Granted) => Check::ok(
            RUNNER_STATUS_PATCH,
            format!("`patch` on ephemeralrunners/status in {namespace} granted (dry run on the made-up runner {DRY_RUN_RUNNER_NAME}: not found after authorization)"),
        ),
        Ok(RunnerStatusRight::GrantedRunnerExists) => Check::ok(
            RUNNER_STATUS_PATCH,
            format!("`patch` on ephemeralrunners/status in {namespace} granted (dry run accepted, nothing changed)"),
        ),
        Err(e @ ScalerError::RunnerStatusForbidden { .. }) => Check::fail(
            RUNNER_STATUS_PATCH,
            e.to_string(),
            format!("the listener's Role in {namespace} must grant `patch` on ephemeralrunners/status (group actions.github.com)"),
        ),
        Err(e) => Check::fail(
            RUNNER_STATUS_PATCH,
            e.to_string(),
            "see the detail; check the API server is reachable and the ServiceAccount token valid",
        ),
    });
    checks
}

fn set_fix(error: &ScalerError, namespace: &str, name: &str) -> String {
    match error {
        ScalerError::Forbidden { .. } => format!(
            "the listener's Role in {namespace} must grant `patch` on ephemeralrunnersets (group actions.github.com) with resourceNames [{name}]"
        ),
        ScalerError::NotFound { .. } => format!(
            "config keys `ephemeral_runner_set_namespace` ({namespace}) and `ephemeral_runner_set_name` ({name}) must name an existing EphemeralRunnerSet"
        ),
        ScalerError::Unauthorized { .. } => {
            "the API server rejected the ServiceAccount token: check the token mount (or KUBECONFIG's user)".to_owned()
        }
        _ => "see the detail; check the API server is reachable from the pod".to_owned(),
    }
}
