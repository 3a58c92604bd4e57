//! `ghalistener` composed exactly as `crates/listener-bin/src/main.rs` does, except for how
//! the Tokio runtime runs the loop, chosen by `GHALISTENER_BENCH_RUNTIME`:
//! - `block_on` (default): as the real binary: the loop runs in `block_on` on the main
//!   thread while connection tasks run on two workers;
//! - `spawned`: the same two workers, with the loop spawned onto them;
//! - `current_thread`: one thread for everything.
//!
//! Used only by the bench's runtime experiment, to measure what the runtime flavour costs
//! per job; not a product binary.

use std::process::ExitCode;

use listener_bin::app;
use listener_bin::config::{CONFIG_PATH_ENV, Config};
use listener_bin::logging;
use tokio_util::sync::CancellationToken;

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
    let flavour = std::env::var("GHALISTENER_BENCH_RUNTIME").unwrap_or_default();
    let runtime = match flavour.as_str() {
        "current_thread" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        if flavour == "spawned" {
            match tokio::spawn(app::run(config, shutdown)).await {
                Ok(result) => result,
                Err(e) => Err(anyhow::anyhow!("listener task: {e}")),
            }
        } else {
            app::run(config, shutdown).await
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
