//! `ghalistener`: reads ARC's config from `LISTENER_CONFIG_PATH` and runs the listener.

use std::process::ExitCode;

use listener_bin::config::{CONFIG_PATH_ENV, Config};
use listener_bin::shutdown::Shutdown;
use listener_bin::{COMMIT, VERSION, app, logging};

fn main() -> ExitCode {
    let Some(path) = std::env::var_os(CONFIG_PATH_ENV) else {
        eprintln!("Error: {CONFIG_PATH_ENV} environment variable is not set");
        return ExitCode::FAILURE;
    };
    let config = match Config::load(path.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: failed to read config: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = logging::init(&config.log_level, &config.log_format) {
        eprintln!("Error: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(version = VERSION, commit = COMMIT, "ghalistener starting");
    tracing::debug!(config = ?config, "configuration");

    // One thread: the listener's work is I/O bound, and keeping the loop, the HTTP
    // connections and the exporters on one thread avoids a cross-thread wake-up per request
    // (35% less CPU per job in `make bench`, figure 7).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    let result = runtime.block_on(async {
        tokio::spawn(shutdown.clone().on_signals());
        app::run(config, shutdown.clone()).await
    });
    // Do not wait for blocked tasks (e.g. a stalled collector connection) at exit.
    runtime.shutdown_timeout(shutdown.budget().runtime_stop);
    match result {
        Ok(()) => {
            tracing::info!("ghalistener stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "ghalistener failed");
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
