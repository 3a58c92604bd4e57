//! Client for GitHub authentication and the Actions scale-set service.
//!
//! The listener needs: credentials → registration token → Actions service URL and admin
//! token → a message session on the scale set → long-polled messages, acks and job
//! acquisition. [`messages`] holds the typed wire messages shared with the recorders.
//!
//! TLS is rustls with the ring provider, built here and handed to reqwest as a preconfigured
//! `rustls::ClientConfig` (no process-default provider is installed).
//!
//! Layout:
//! - `client`: [`ActionsClient`], the HTTP core (one retry loop, [`retry::Backoff`]) and
//!   the cached admin connection.
//! - `registration`: the GitHub REST chain behind it (installation token, registration
//!   token, runner registration).
//! - `auth`: PAT and GitHub App credentials, the App JWT.
//! - `scale_set`: [`RunnerScaleSet`], read by the preflight check (no session).
//! - `session`: [`MessageSession`]: create (waiting out a 409), poll, ack, acquire, close.
//! - [`messages`]: typed queue messages.
//! - `runs`: [`RunAttemptResolver`], the run attempt of a workflow run (cached, rate-limit
//!   aware) for job spans.
//! - `error`: [`Error`], classified by [`retry::Classify`].
//! - `retry`: the client's retry counters ([`ClientMetrics`]); its settings are the shared
//!   [`RetryPolicy`] (default [`::retry::policies::GITHUB_REQUEST_RETRIES`]).
//! - `config_url`, `net`, `secret`: the config URL, TLS/proxy, secrets that never print.

mod auth;
mod client;
mod config_url;
mod error;
pub mod messages;
mod net;
mod registration;
mod retry;
mod runs;
mod scale_set;
mod secret;
mod session;

pub use ::retry::RetryPolicy;
pub use auth::{Credentials, jwt_expiry};
pub use client::{ActionsClient, ClientOptions, MAX_RESPONSE_BODY_BYTES, default_user_agent};
pub use config_url::{ConfigUrlError, FORCE_GHES_ENV, GitHubConfigUrl, Scope, force_ghes_from_env};
pub use error::{ApiError, Error};
pub use messages::{
    JobAssigned, JobAvailable, JobCommon, JobCompleted, JobMessage, JobStarted, MessageParseError,
    RunnerScaleSetMessage, RunnerScaleSetStatistic,
};
pub use net::{ProxyConfig, tls_config};
pub use retry::ClientMetrics;
pub use runs::{
    RATE_LIMIT_FLOOR_PERCENT, RUN_ATTEMPT_PERMISSION, RUN_CACHE_CAPACITY, RUN_CACHE_TTL,
    ResolvedAttempt, RunAttemptOutcome, RunAttemptResolver,
};
pub use scale_set::RunnerScaleSet;
pub use secret::SecretString;
pub use session::{HEADER_SCALE_SET_MAX_CAPACITY, MessageSession};
