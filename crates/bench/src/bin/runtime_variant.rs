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

use listener_bin::{app, startup};

fn main() -> ExitCode {
    let Some(started) = startup::config_and_logging() else {
        return ExitCode::FAILURE;
    };
    let flavour = std::env::var("GHALISTENER_BENCH_RUNTIME").unwrap_or_default();
    let builder = if flavour == "current_thread" {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    };
    startup::run_to_exit(builder, |shutdown| async move {
        if flavour == "spawned" {
            match tokio::spawn(app::run(started, shutdown)).await {
                Ok(result) => result,
                Err(e) => Err(anyhow::anyhow!("listener task: {e}")),
            }
        } else {
            app::run(started, shutdown).await
        }
    })
}
