//! Errors of the scaler, split into configuration errors (fatal: retrying cannot help) and
//! transient failures that outlived the retry budget.

use retry::FailureKind;

/// Why a scale patch (or building the client) failed.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// No usable Kubernetes client configuration (in-cluster or kubeconfig).
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfig(String),
    /// The API server rejected the ServiceAccount token.
    #[error(
        "the Kubernetes API server rejected the ServiceAccount token (401 Unauthorized) patching EphemeralRunnerSet {namespace}/{name}"
    )]
    Unauthorized { namespace: String, name: String },
    /// RBAC does not grant `patch` on the set.
    #[error("ServiceAccount lacks `patch` on ephemeralrunnersets/{name} in {namespace}: {message}")]
    Forbidden {
        namespace: String,
        name: String,
        message: String,
    },
    /// The set does not exist.
    #[error("EphemeralRunnerSet {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    /// The API server refused the patch for a reason retrying cannot fix (400, 415, 422...).
    #[error(
        "the Kubernetes API server rejected the patch of EphemeralRunnerSet {namespace}/{name} with {code} {reason}: {message}"
    )]
    Rejected {
        namespace: String,
        name: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// RBAC does not grant `patch` on `ephemeralrunners/status` (found by a dry run).
    #[error("ServiceAccount lacks `patch` on ephemeralrunners/status in {namespace}: {message}")]
    RunnerStatusForbidden { namespace: String, message: String },
    /// A dry-run patch of a runner's status failed for another reason; `code` is `None`
    /// when every attempt failed transiently.
    #[error("dry-run patch of EphemeralRunner {namespace}/{runner} status failed: {reason}")]
    RunnerStatusFailed {
        namespace: String,
        runner: String,
        code: Option<u16>,
        reason: String,
    },
    /// Transient failures (connection, timeout, 409, 429, 5xx) on every attempt.
    #[error("patching EphemeralRunnerSet {namespace}/{name} failed {attempts} times, last: {last}")]
    RetriesExhausted {
        namespace: String,
        name: String,
        attempts: u32,
        last: String,
    },
}

impl retry::Classify for ScalerError {
    /// Configuration errors (client config, token, RBAC, set name) are the kinds the
    /// listener exits on; exhausted transient failures may pass with the next message.
    fn kind(&self) -> FailureKind {
        match self {
            Self::ClientConfig(_) => FailureKind::InvalidInput,
            Self::Unauthorized { .. } => FailureKind::CredentialsRejected,
            Self::Forbidden { .. } => FailureKind::Forbidden,
            Self::NotFound { .. } => FailureKind::NotFound,
            Self::Rejected { code, .. } => FailureKind::Rejected {
                status: Some(*code),
            },
            Self::RunnerStatusForbidden { .. } => FailureKind::Forbidden,
            Self::RunnerStatusFailed { code: None, .. } | Self::RetriesExhausted { .. } => {
                FailureKind::Transient { retry_after: None }
            }
            Self::RunnerStatusFailed {
                code: Some(401), ..
            } => FailureKind::CredentialsRejected,
            Self::RunnerStatusFailed { code, .. } => FailureKind::Rejected { status: *code },
        }
    }
}
