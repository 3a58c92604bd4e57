//! Logging through `tracing`, configured by `log_level` and `log_format` as ARC sets them.
//!
//! `RUST_LOG`, when set, overrides the level for finer control. Dependencies log at `warn`
//! unless `RUST_LOG` says otherwise: their debug output can carry request details.

use tracing_subscriber::EnvFilter;

const OWN_CRATES: [&str; 5] = [
    "ghalistener",
    "listener_bin",
    "github_client",
    "scaler",
    "recorders",
];

pub fn init(log_level: &str, log_format: &str) -> Result<(), String> {
    let level = match log_level {
        "" => "info",
        "warn" | "warning" => "warn",
        other => other,
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.trim().is_empty() => EnvFilter::try_new(directive)
            .map_err(|e| format!("RUST_LOG is not a valid filter: {e}"))?,
        _ => {
            let directives = OWN_CRATES
                .iter()
                .map(|c| format!("{c}={level}"))
                .collect::<Vec<_>>()
                .join(",");
            EnvFilter::try_new(format!("warn,{directives}"))
                .map_err(|e| format!("log_level {log_level:?}: {e}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_target(true);
    let result = if log_format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
