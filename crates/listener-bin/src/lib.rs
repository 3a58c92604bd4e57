//! `ghalistener`: ARC's scale-set listener, composed from the workspace's crates.
//!
//! [`config`] reads ARC's `config.json`; [`listener`] is the message loop, generic over a
//! [`source::MessageSource`], a [`scaler::Scaler`] and a [`recorders::Recorder`], so each
//! is testable alone.
#![forbid(unsafe_code)]

pub mod actions_source;
pub mod app;
pub mod config;
pub mod listener;
pub mod logging;
pub mod source;

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
