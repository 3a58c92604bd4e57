//! What every `ghalistener` entry point does before it has a runtime: find the config
//! (`LISTENER_CONFIG_PATH`), read and validate it, and set up logging from it; then run on a
//! runtime until done or signalled, within the shutdown budget. Shared by the binary and the
//! bench's runtime variant so the two start and stop alike.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use crate::config::{CONFIG_PATH_ENV, Config};
use crate::logging;
use crate::shutdown::Shutdown;

/// A config that was read, validated, and has set up logging.
pub struct Started {
    /// Where the config was read from; read again when GitHub rejects its credentials.
    pub config_path: PathBuf,
    pub config: Config,
}

/// Read the config named by `LISTENER_CONFIG_PATH` and set up logging from it; `None` once
/// the reason it could not has been printed to stderr (logging is not set up yet).
pub fn config_and_logging() -> Option<Started> {
    match read_config_and_init_logging() {
        Ok(started) => Some(started),
        Err(e) => {
            eprintln!("Error: {e:#}");
            None
        }
    }
}

fn read_config_and_init_logging() -> anyhow::Result<Started> {
    let config_path = std::env::var_os(CONFIG_PATH_ENV)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{CONFIG_PATH_ENV} environment variable is not set"))?;
    let config = Config::load(&config_path).context("failed to read config")?;
    logging::init(&config.log_level, &config.log_format).map_err(|e| anyhow!(e))?;
    Ok(Started {
        config_path,
        config,
    })
}

/// Run `work` on a runtime from `builder` until it ends or a signal's shutdown completes,
/// and turn its result into the process's exit code (the error on stderr and in the log).
pub fn run_to_exit<F, Fut>(mut builder: tokio::runtime::Builder, work: F) -> ExitCode
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    let result = runtime.block_on(async {
        tokio::spawn(shutdown.clone().on_signals());
        work(shutdown.clone()).await
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
