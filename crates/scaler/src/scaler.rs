//! [`EphemeralRunnerSetScaler`]: the [`Scaler`] of ARC's listener on kube-rs, using only the
//! `patch` rights of the listener Role.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource as _};

use crate::error::ScalerError;
use crate::resources::{EphemeralRunner, EphemeralRunnerSet, RunnerStatusPatch, ScalePatch};
use crate::state::DesiredCountState;
use crate::{RunnerJobStatus, Scaler};
use retry::RetryPolicy;

/// Which set to scale, its bounds, and how hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalerConfig {
    pub namespace: String,
    pub name: String,
    pub min_runners: i32,
    pub max_runners: i32,
    /// Runner-status patches in flight at once for one batch of started jobs.
    pub runner_patch_concurrency: usize,
    /// Transient failures (connection errors, timeouts, 408, 409, 429, 5xx) are retried by
    /// this; a server's `retryAfterSeconds` is honoured up to its backoff's cap.
    pub retry: RetryPolicy,
    /// Deadline of one request, after which it counts as a transient failure.
    pub request_timeout: std::time::Duration,
}

impl ScalerConfig {
    /// Default concurrency of runner-status patches.
    pub const DEFAULT_RUNNER_PATCH_CONCURRENCY: usize = 16;

    /// A config with the default concurrency and retry policy.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        min_runners: i32,
        max_runners: i32,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            min_runners,
            max_runners,
            runner_patch_concurrency: Self::DEFAULT_RUNNER_PATCH_CONCURRENCY,
            retry: retry::policies::KUBE_REQUEST_RETRIES,
            request_timeout: retry::policies::KUBE_REQUEST_TIMEOUT,
        }
    }
}

/// Scales an `EphemeralRunnerSet` and writes job details to `EphemeralRunner` statuses.
pub struct EphemeralRunnerSetScaler {
    pub(crate) sets: Api<EphemeralRunnerSet>,
    /// `ephemeralrunners` of the namespace, for the status patches sent by
    /// [`Self::patch_runner_status_text`].
    runners: kube::core::Request,
    client: kube::Client,
    config: ScalerConfig,
    /// Held across the patch so decisions and their patches go out in call order.
    state: tokio::sync::Mutex<DesiredCountState>,
    retries: AtomicU64,
}

impl std::fmt::Debug for EphemeralRunnerSetScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralRunnerSetScaler")
            .field("config", &self.config)
            .field("retries", &self.retries())
            .finish_non_exhaustive()
    }
}

/// How one request failed, after classification.
pub(crate) enum Failure {
    /// Retrying cannot help.
    Permanent {
        code: u16,
        reason: String,
        message: String,
    },
    /// Every attempt failed transiently.
    Exhausted { attempts: u32, last: String },
}

enum Attempt {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent {
        code: u16,
        reason: String,
        message: String,
    },
}

fn classify(error: kube::Error) -> Attempt {
    match error {
        kube::Error::Api(status) => {
            let code = status.code;
            let retry_after = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            if matches!(code, 408 | 409 | 429) || code >= 500 {
                Attempt::Transient {
                    message: format!("{code} {}: {}", status.reason, status.message),
                    retry_after,
                }
            } else {
                Attempt::Permanent {
                    code,
                    reason: status.reason,
                    message: status.message,
                }
            }
        }
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)) => {
            Attempt::Transient {
                message: e.to_string(),
                retry_after: None,
            }
        }
        other => Attempt::Permanent {
            code: 0,
            reason: "ClientError".to_owned(),
            message: other.to_string(),
        },
    }
}

impl EphemeralRunnerSetScaler {
    /// Builds the client as kube's `Config::infer` does: in-cluster inside a pod,
    /// otherwise `KUBECONFIG` or `~/.kube/config`.
    pub async fn from_environment(config: ScalerConfig) -> Result<Self, ScalerError> {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|e| ScalerError::ClientConfig(e.to_string()))?;
        Self::from_kube_config(kube_config, config)
    }

    /// Builds the client from an explicit kube config, with kube's own retry layer turned
    /// off: retries follow [`ScalerConfig::retry`] and are counted in [`Self::retries`].
    pub fn from_kube_config(
        mut kube_config: kube::Config,
        config: ScalerConfig,
    ) -> Result<Self, ScalerError> {
        kube_config.default_retry = false;
        let client = kube::Client::try_from(kube_config)
            .map_err(|e| ScalerError::ClientConfig(e.to_string()))?;
        Ok(Self::new(client, config))
    }

    /// Uses `client` as is. Build it with `kube::Config::default_retry = false` (as
    /// [`Self::from_kube_config`] does), or kube's retries of 429/503/504 multiply ours.
    pub fn new(client: kube::Client, config: ScalerConfig) -> Self {
        let sets = Api::namespaced(client.clone(), &config.namespace);
        let runners = kube::core::Request::new(EphemeralRunner::url_path(
            &(),
            Some(config.namespace.as_str()),
        ));
        Self {
            sets,
            runners,
            client,
            state: tokio::sync::Mutex::new(DesiredCountState::new(
                config.min_runners,
                config.max_runners,
            )),
            config,
            retries: AtomicU64::new(0),
        }
    }

    /// Starts from a given state instead of ARC's initial one (tests of the patchID wrap).
    pub fn with_state(mut self, state: DesiredCountState) -> Self {
        self.state = tokio::sync::Mutex::new(state);
        self
    }

    pub fn config(&self) -> &ScalerConfig {
        &self.config
    }

    /// Retries made so far (all requests), for the reliability report.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// PATCH `ephemeralrunners/{name}/status` as kube's `Api::patch_status` does (same
    /// client, auth, pool and error decoding), but leave the returned runner as text:
    /// nothing reads it, and decoding the whole object on every job's patch was measurable
    /// CPU (docs/benchmarks.md, findings).
    pub(crate) async fn patch_runner_status_text(
        &self,
        name: &str,
        params: &PatchParams,
        patch: &Patch<RunnerStatusPatch<'_>>,
    ) -> Result<(), kube::Error> {
        let mut request = self
            .runners
            .patch_subresource("status", name, params, patch)
            .map_err(kube::Error::BuildRequest)?;
        request.extensions_mut().insert("patch_status");
        self.client.request_text(request).await.map(drop)
    }

    /// Runs `op` until it succeeds, fails permanently, or transient failures use up the
    /// retry budget. `target` names the object in the retry warning; it is written only
    /// then (a runner's name was formatted for every job's patch before).
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        target: impl Fn() -> String,
        mut op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let policy = &self.config.retry;
        let backoff = policy.backoff;
        let request_timeout = self.config.request_timeout;
        let mut retry = 0u32;
        loop {
            let attempt = match tokio::time::timeout(request_timeout, op()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => classify(error),
                Err(_) => Attempt::Transient {
                    message: format!("no response within {request_timeout:?}"),
                    retry_after: None,
                },
            };
            match attempt {
                Attempt::Permanent {
                    code,
                    reason,
                    message,
                } => {
                    return Err(Failure::Permanent {
                        code,
                        reason,
                        message,
                    });
                }
                Attempt::Transient {
                    message,
                    retry_after,
                } => {
                    if retry >= policy.max_retries {
                        return Err(Failure::Exhausted {
                            attempts: retry + 1,
                            last: message,
                        });
                    }
                    let delay = backoff.delay(retry, retry_after);
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target_object = %target(),
                        error = %message,
                        retry = retry + 1,
                        delay_ms = delay.as_millis() as u64,
                        "transient Kubernetes API failure, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
            }
        }
    }

    async fn scale(&self, count: i64, jobs_changed: bool) -> Result<i32, ScalerError> {
        let mut state = self.state.lock().await;
        if jobs_changed {
            state.mark_dirty();
        }
        let decision = state.next(count);
        tracing::info!(
            assigned_jobs = count,
            min = self.config.min_runners,
            max = self.config.max_runners,
            replicas = decision.replicas,
            patch_id = decision.patch_id,
            "calculated target runner count"
        );

        let patch = Patch::Merge(ScalePatch::from(decision));
        let params = PatchParams::default();
        let name = self.config.name.as_str();
        let namespace = self.config.namespace.as_str();
        let target = || format!("ephemeralrunnersets/{namespace}/{name}");
        let result = self
            .with_retries(target, || self.sets.patch(name, &params, &patch))
            .await;
        drop(state);
        match result {
            Ok(set) => {
                tracing::info!(
                    namespace,
                    name,
                    replicas = set.spec.replicas,
                    patch_id = set.spec.patch_id,
                    "EphemeralRunnerSet scaled"
                );
                Ok(decision.replicas)
            }
            Err(failure) => Err(self.set_error(failure)),
        }
    }

    /// What a failed request on the set means for the operator.
    pub(crate) fn set_error(&self, failure: Failure) -> ScalerError {
        let namespace = self.config.namespace.clone();
        let name = self.config.name.clone();
        match failure {
            Failure::Permanent { code: 401, .. } => ScalerError::Unauthorized { namespace, name },
            Failure::Permanent {
                code: 403, message, ..
            } => ScalerError::Forbidden {
                namespace,
                name,
                message,
            },
            Failure::Permanent { code: 404, .. } => ScalerError::NotFound { namespace, name },
            Failure::Permanent {
                code,
                reason,
                message,
            } => ScalerError::Rejected {
                namespace,
                name,
                code,
                reason,
                message,
            },
            Failure::Exhausted { attempts, last } => ScalerError::RetriesExhausted {
                namespace,
                name,
                attempts,
                last,
            },
        }
    }

    async fn patch_runner_status(&self, job: RunnerJobStatus) {
        let runner = job.runner_name.as_str();
        let namespace = self.config.namespace.as_str();
        if runner.is_empty() {
            tracing::warn!(
                job_request_id = job.status.job_request_id,
                "job started without a runner name, not patching any EphemeralRunner"
            );
            return;
        }
        let patch = Patch::Merge(RunnerStatusPatch::from(&job));
        let params = PatchParams::default();
        let target = || format!("ephemeralrunners/{namespace}/{runner}/status");
        let result = self
            .with_retries(target, || {
                self.patch_runner_status_text(runner, &params, &patch)
            })
            .await;
        match result {
            // Debug, not info: one line per job was a write(2) per job (docs/benchmarks.md).
            Ok(()) => tracing::debug!(
                runner,
                job_request_id = job.status.job_request_id,
                job_id = %job.status.job_id,
                "EphemeralRunner status updated with the job"
            ),
            Err(Failure::Permanent { code: 404, .. }) => tracing::info!(
                runner,
                job_request_id = job.status.job_request_id,
                "EphemeralRunner not found (already gone), skipping its status patch"
            ),
            Err(Failure::Permanent {
                code: 403, message, ..
            }) => tracing::error!(
                runner,
                namespace,
                error = %message,
                "ServiceAccount lacks `patch` on ephemeralrunners/status; runner status not updated"
            ),
            Err(Failure::Permanent {
                code,
                reason,
                message,
            }) => tracing::error!(
                runner,
                code,
                reason = %reason,
                error = %message,
                "EphemeralRunner status patch rejected"
            ),
            Err(Failure::Exhausted { attempts, last }) => tracing::warn!(
                runner,
                attempts,
                error = %last,
                "EphemeralRunner status patch failed after retries; continuing"
            ),
        }
    }
}

impl Scaler for EphemeralRunnerSetScaler {
    type Error = ScalerError;

    fn handle_desired_runner_count(
        &self,
        count: i64,
        jobs_changed: bool,
    ) -> impl Future<Output = Result<i32, ScalerError>> + Send {
        self.scale(count, jobs_changed)
    }

    fn handle_jobs_started(&self, jobs: Vec<RunnerJobStatus>) -> impl Future<Output = ()> + Send {
        let limit = self.config.runner_patch_concurrency.max(1);
        async move {
            futures::stream::iter(jobs)
                .for_each_concurrent(limit, |job| self.patch_runner_status(job))
                .await;
        }
    }
}
