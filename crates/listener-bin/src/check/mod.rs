//! `ghalistener check [--json]`: a preflight of everything the listener needs, with the
//! same config file and environment as the pod, and no side effects: it never creates a
//! message session (the running listener's would conflict) and never changes an object
//! (Kubernetes rights are proven by server-side dry runs).
//!
//! - `report`: the result of each check, as lines or JSON;
//! - `github`: credentials, registration token, runner registration, the scale set;
//! - `kubernetes`: the client config and dry runs of both patches;
//! - `endpoints`: the OTLP collector and the metrics address.
//!
//! Exit 0 only when no check failed (a check that does not apply is skipped, not failed).

mod endpoints;
mod github;
mod kubernetes;
mod report;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

pub use report::{Check, Report, Status};

use crate::config::{CONFIG_PATH_ENV, Config};
use crate::settings::Settings;

/// The first argument that selects the check.
pub const COMMAND: &str = "check";

const CONFIG: &str = "config";

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The arguments after `check`: `--json` or nothing.
pub fn parse_args(args: &[String]) -> Result<Format, String> {
    match args {
        [] => Ok(Format::Text),
        [flag] if flag == "--json" => Ok(Format::Json),
        other => Err(format!(
            "usage: ghalistener check [--json] (unexpected arguments {other:?})"
        )),
    }
}

/// Run every check, print the report on stdout, and exit 0 only when all passed.
pub fn main(args: &[String]) -> ExitCode {
    let format = match parse_args(args) {
        Ok(format) => format,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run());
    let printed = match format {
        Format::Text => report.text(),
        Format::Json => report.json() + "\n",
    };
    let _ = std::io::stdout().write_all(printed.as_bytes());
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every check against the process's config and environment.
pub async fn run() -> Report {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(check) => {
            let mut checks = vec![check];
            checks.extend(
                github::NAMES
                    .iter()
                    .chain(kubernetes::NAMES)
                    .chain(endpoints::NAMES)
                    .map(|&name| Check::skip(name, "not checked: the config is not valid")),
            );
            return Report::new(checks);
        }
    };
    let mut checks = vec![Check::ok(
        CONFIG,
        format!("{} is valid", config_path_display()),
    )];
    checks.extend(github::checks(&settings).await);
    checks.extend(kubernetes::checks(&settings.config).await);
    checks.push(endpoints::otlp(&settings).await);
    checks.push(endpoints::metrics(&settings).await);
    Report::new(checks)
}

fn config_path_display() -> String {
    std::env::var(CONFIG_PATH_ENV).unwrap_or_default()
}

/// The config and the environment, validated as the listener validates them at start.
fn settings() -> Result<Settings, Check> {
    let Some(path) = std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from) else {
        return Err(Check::fail(
            CONFIG,
            format!("{CONFIG_PATH_ENV} is not set"),
            format!(
                "set {CONFIG_PATH_ENV} to the path of ARC's config.json (as in the listener pod)"
            ),
        ));
    };
    let config = Config::load(&path).map_err(|e| {
        Check::fail(
            CONFIG,
            e.to_string(),
            "correct the named key in config.json (ARC's controller writes it from the scale set's Helm values)",
        )
    })?;
    Settings::from_process_env(config, Some(&path)).map_err(|e| {
        Check::fail(
            CONFIG,
            format!("{e:#}"),
            "correct the named key or environment variable",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_is_an_option() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&[])), Ok(Format::Text));
        assert_eq!(parse_args(&args(&["--json"])), Ok(Format::Json));
        let err = parse_args(&args(&["--jsn"])).unwrap_err();
        assert!(err.contains("usage") && err.contains("--jsn"), "{err}");
        assert!(parse_args(&args(&["--json", "x"])).is_err());
    }
}
