//! `ghalistener`: reads ARC's config from `LISTENER_CONFIG_PATH` and runs the listener;
//! `ghalistener check [--json]` verifies the same setup without side effects.

use std::process::ExitCode;

use listener_bin::{COMMIT, VERSION, app, check, startup};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(check::COMMAND) {
        return check::main(&args[1..]);
    }
    let Some(started) = startup::config_and_logging() else {
        return ExitCode::FAILURE;
    };
    tracing::info!(version = VERSION, commit = COMMIT, "ghalistener starting");
    tracing::debug!(config = ?started.config, "configuration");

    // One thread: the listener's work is I/O bound, and keeping the loop, the HTTP
    // connections and the exporters on one thread avoids a cross-thread wake-up per request
    // (35% less CPU per job in `make bench`, figure 7).
    startup::run_to_exit(tokio::runtime::Builder::new_current_thread(), |shutdown| {
        app::run(started, shutdown)
    })
}
