//! `ghalistener`: ARC's scale-set listener, composed from the workspace's crates.
//!
//! Layout:
//! - [`check`]: `ghalistener check`, the side-effect-free preflight;
//! - [`config`]: ARC's `config.json`, parsed and validated (errors name the key);
//! - [`credentials`]: where the GitHub credentials come from, read again when rejected;
//! - [`settings`]: the config plus the environment overrides, resolved once into [`settings::Settings`];
//! - [`app`]: composition: builds the recorders, the client, the scaler, the source and the
//!   loop from the settings, and takes them down in order;
//! - [`listener`]: the message loop, generic over a [`source::MessageSource`], a
//!   [`scaler::Scaler`] and a [`recorders::Recorder`], so each is testable alone;
//! - [`source`], [`actions_source`]: the loop's view of the Actions service, and its real one;
//! - [`health`]: readiness (`/readyz`), set by the loop;
//! - [`recovery`]: waiting out, in place, conditions someone must fix (degraded state);
//! - [`loop_metrics`]: the loop's `gha_listener_*` counters and the degraded gauge;
//! - [`run_attempts`]: the span recorder's run-attempt lookups, over the GitHub client;
//! - [`retry_metrics`]: the client's and the scaler's retry totals, read at scrape time;
//! - [`shutdown`]: the shutdown request and the one budget of the steps after it;
//! - [`startup`]: the config from `LISTENER_CONFIG_PATH` and logging, before the runtime;
//! - [`logging`]: `tracing` set up from `log_level` and `log_format`.

pub mod actions_source;
pub mod app;
pub mod check;
pub mod config;
pub mod credentials;
pub mod health;
pub mod listener;
pub mod logging;
pub mod loop_metrics;
pub mod recovery;
pub mod retry_metrics;
pub mod run_attempts;
pub mod settings;
pub mod shutdown;
pub mod source;
pub mod startup;

/// The version baked in at build time (`GHALISTENER_VERSION`), else the crate's.
pub const VERSION: &str = match option_env!("GHALISTENER_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// The commit baked in at build time (`GHALISTENER_COMMIT`).
pub const COMMIT: &str = match option_env!("GHALISTENER_COMMIT") {
    Some(c) => c,
    None => "unknown",
};
