//! The config file and the environment, resolved once into one validated [`Settings`].
//!
//! ARC's controller writes `config.json`; the keys it cannot write come from the
//! environment, which the Helm chart sets on the listener container. Everything the
//! composition needs is parsed here, so a bad value fails before anything starts, naming
//! the key or the variable to fix.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use github_client::{ClientOptions, GitHubConfigUrl};
use recorders::{IdScheme, MetricsConfig, OtelSettings, ScaleSetLabels};

use crate::config::Config;
use crate::credentials::CredentialsSource;
use crate::health::DEFAULT_STALE_AFTER;

/// Env overrides for the keys ARC's controller cannot write into config.json.
pub const OTEL_ID_SCHEME_ENV: &str = "GHALISTENER_OTEL_ID_SCHEME";
pub const OTEL_INSECURE_ENV: &str = "OTEL_EXPORTER_OTLP_INSECURE";
/// Overrides of the long-poll timeout (default 70 s) and of the readiness staleness
/// (default 120 s), in whole seconds; for fault-injection suites and unusual networks.
pub const LONG_POLL_TIMEOUT_ENV: &str = "GHALISTENER_LONG_POLL_TIMEOUT_SECS";
pub const READINESS_STALE_AFTER_ENV: &str = "GHALISTENER_READINESS_STALE_AFTER_SECS";
/// Cap of the wait between attempts while the listener waits out a condition someone must
/// fix (rejected credentials, a missing scale set, RBAC), in whole seconds (default 300).
pub const RECOVERY_MAX_BACKOFF_ENV: &str = "GHALISTENER_RECOVERY_MAX_BACKOFF_SECS";
/// `false` turns off the run-attempt lookups of job spans (on by default when spans are
/// exported).
pub const RESOLVE_RUN_ATTEMPT_ENV: &str = "GHALISTENER_RESOLVE_RUN_ATTEMPT";

/// The metrics server, when `metrics_addr` is set.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub addr: String,
    pub endpoint: String,
    pub config: Option<MetricsConfig>,
}

/// Everything the listener runs with. No `Debug`: the OTLP headers are secrets.
pub struct Settings {
    pub config: Config,
    /// `configure_url`, parsed.
    pub config_url: GitHubConfigUrl,
    pub labels: ScaleSetLabels,
    /// Where the GitHub credentials are read from, at start and after GitHub rejects them.
    pub credentials: CredentialsSource,
    pub client_options: ClientOptions,
    /// How long a poll with no message may go on before readiness turns false.
    pub stale_after: Duration,
    /// Cap of the recovery backoff while degraded.
    pub recovery_max_backoff: Duration,
    pub metrics: Option<MetricsSettings>,
    /// The span exporter, when an OTLP endpoint is configured.
    pub otel: Option<OtelSettings>,
    /// Look up each run's attempt on GitHub REST for the spans (only with `otel`).
    pub resolve_run_attempt: bool,
}

impl Settings {
    /// From the process environment; `config_path` is where `config` was read from.
    pub fn from_process_env(config: Config, config_path: Option<&Path>) -> anyhow::Result<Self> {
        Self::resolve(config, config_path, &std::env::vars().collect())
    }

    /// The checks run in the order the listener used to meet them while starting up, so a
    /// config with several problems reports the same one first.
    pub fn resolve(
        config: Config,
        config_path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let config_url = GitHubConfigUrl::parse(&config.configure_url)
            .map_err(|e| anyhow!("config key `configure_url`: {e}"))?;
        let labels = ScaleSetLabels {
            name: config.ephemeral_runner_set_name.clone(),
            namespace: config.ephemeral_runner_set_namespace.clone(),
            enterprise: config_url.enterprise().to_owned(),
            organization: config_url.organization().to_owned(),
            repository: config_url.repository().to_owned(),
        };

        let long_poll_timeout = env_secs(env, LONG_POLL_TIMEOUT_ENV)?;
        let stale_after = env_secs(env, READINESS_STALE_AFTER_ENV)?.unwrap_or(DEFAULT_STALE_AFTER);
        let recovery_max_backoff = env_secs(env, RECOVERY_MAX_BACKOFF_ENV)?
            .unwrap_or(retry::policies::RECOVERY_MAX_DEFAULT);

        // `metrics` is read only when the server runs, as before: with the server off, a
        // malformed `metrics` value is ignored rather than fatal.
        let metrics = if config.metrics_addr.is_empty() {
            None
        } else {
            let metrics_config: Option<MetricsConfig> = match &config.metrics {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(
                    serde_json::from_value(v.clone())
                        .map_err(|e| anyhow!("config key `metrics`: {e}"))?,
                ),
            };
            Some(MetricsSettings {
                addr: config.metrics_addr.clone(),
                endpoint: config.metrics_endpoint_or_default().to_owned(),
                config: metrics_config,
            })
        };

        let id_scheme_name = config
            .otel_id_scheme
            .clone()
            .or_else(|| env.get(OTEL_ID_SCHEME_ENV).cloned())
            .filter(|s| !s.trim().is_empty());
        let id_scheme: IdScheme = match id_scheme_name {
            Some(name) => name
                .trim()
                .parse()
                .map_err(|e| anyhow!("config key `otel_id_scheme`: {e}"))?,
            None => IdScheme::default(),
        };
        let insecure = config
            .otel_insecure
            .or_else(|| env_flag(env, OTEL_INSECURE_ENV))
            .unwrap_or(false);
        let otel = OtelSettings::resolve(config.otel_endpoint.as_deref(), insecure, id_scheme, env)
            .map_err(|e| anyhow!("config key `otel_endpoint`: {e}"))?
            .map(|mut otel| {
                // vcs.repository.url.full points at the GitHub the jobs come from (GHES too).
                otel.server_url = server_url(&config.configure_url);
                otel
            });

        let resolve_run_attempt = match env.get(RESOLVE_RUN_ATTEMPT_ENV).map(|v| v.trim()) {
            None | Some("") => true,
            Some(v) if ["true", "1", "yes"].contains(&v.to_ascii_lowercase().as_str()) => true,
            Some(v) if ["false", "0", "no"].contains(&v.to_ascii_lowercase().as_str()) => false,
            Some(v) => {
                return Err(anyhow!(
                    "environment variable `{RESOLVE_RUN_ATTEMPT_ENV}`: {v:?} is not true or false"
                ));
            }
        } && otel.is_some();

        let credentials = CredentialsSource::for_config(&config, config_path)?;
        let mut client_options = ClientOptions {
            root_ca_pem: Some(config.server_root_ca.clone()).filter(|s| !s.trim().is_empty()),
            ..ClientOptions::default()
        };
        if let Some(timeout) = long_poll_timeout {
            client_options.long_poll_timeout = timeout;
        }

        Ok(Self {
            config,
            config_url,
            labels,
            credentials,
            client_options,
            stale_after,
            recovery_max_backoff,
            metrics,
            otel,
            resolve_run_attempt,
        })
    }
}

/// `scheme://host[:port]` of the configure URL.
fn server_url(configure_url: &str) -> String {
    match url_origin(configure_url) {
        Some(origin) if !origin.contains("://www.github.com") => origin,
        _ => "https://github.com".to_owned(),
    }
}

fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// A positive whole number of seconds from `key`, if set.
fn env_secs(env: &HashMap<String, String>, key: &str) -> anyhow::Result<Option<Duration>> {
    let Some(raw) = env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(anyhow!(
            "environment variable `{key}`: {raw:?} is not a positive whole number of seconds"
        )),
    }
}

fn env_flag(env: &HashMap<String, String>, key: &str) -> Option<bool> {
    env.get(key)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_json(
            br#"{"configure_url":"https://ghes.example.com/org","github_token":"ghp_x",
                "ephemeral_runner_set_namespace":"ns","ephemeral_runner_set_name":"set",
                "runner_scale_set_id":1,"max_runners":2}"#,
        )
        .unwrap()
    }

    #[test]
    fn environment_overrides_are_read_once_here() {
        let env: HashMap<String, String> = [
            (LONG_POLL_TIMEOUT_ENV, "9"),
            (READINESS_STALE_AFTER_ENV, "6"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::resolve(config(), None, &env).unwrap();
        assert_eq!(
            settings.client_options.long_poll_timeout,
            Duration::from_secs(9)
        );
        assert_eq!(settings.stale_after, Duration::from_secs(6));
        assert_eq!(settings.labels.organization, "org");
        assert!(settings.metrics.is_none() && settings.otel.is_none());

        let bad: HashMap<String, String> =
            [(READINESS_STALE_AFTER_ENV.to_owned(), "0".to_owned())].into();
        let err = match Settings::resolve(config(), None, &bad) {
            Ok(_) => panic!("a zero staleness was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(READINESS_STALE_AFTER_ENV), "{err}");
        assert!(!settings.resolve_run_attempt, "off without spans");
        let bad: HashMap<String, String> =
            [(RESOLVE_RUN_ATTEMPT_ENV.to_owned(), "maybe".to_owned())].into();
        let err = Settings::resolve(config(), None, &bad)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(RESOLVE_RUN_ATTEMPT_ENV) && err.contains("maybe"),
            "{err}"
        );
    }

    #[test]
    fn server_url_is_the_origin_of_the_configure_url() {
        assert_eq!(
            server_url("https://ghes.example.com/org"),
            "https://ghes.example.com"
        );
        assert_eq!(
            server_url("https://www.github.com/org"),
            "https://github.com"
        );
        assert_eq!(server_url("not a url"), "https://github.com");
    }
}
