//! Composition: config → recorders → Actions session → scaler → loop → orderly shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use github_client::{ActionsClient, ClientOptions, Credentials, GitHubConfigUrl, SecretString};
use recorders::{
    CompositeRecorder, IdScheme, MetricsConfig, MetricsServer, OtelSettings, PrometheusRecorder,
    Readiness, Recorder, ScaleSetLabels, SpanRecorder,
};
use scaler::{EphemeralRunnerSetScaler, ScalerConfig};
use tokio_util::sync::CancellationToken;

use crate::actions_source::ActionsSource;
use crate::config::{Config, ConfigCredentials};
use crate::listener::{Listener, LoopHealth, LoopMetrics, LoopSettings};
use crate::source::MessageSource;

/// Env overrides for the keys ARC's controller cannot write into config.json: the Helm
/// chart sets these on the listener container.
pub const OTEL_ID_SCHEME_ENV: &str = "GHALISTENER_OTEL_ID_SCHEME";
pub const OTEL_INSECURE_ENV: &str = "OTEL_EXPORTER_OTLP_INSECURE";

/// The most job messages the service puts in one queue message.
const RUNNER_PATCH_CONCURRENCY: usize = 50;

/// Readiness turns false when no poll finished for this long (the long poll holds ~50 s).
const STALE_AFTER: Duration = Duration::from_secs(120);
/// Overrides of the long-poll timeout (default 70 s) and of the readiness staleness
/// (default 120 s), in whole seconds; for fault-injection suites and unusual networks.
pub const LONG_POLL_TIMEOUT_ENV: &str = "GHALISTENER_LONG_POLL_TIMEOUT_SECS";
pub const READINESS_STALE_AFTER_ENV: &str = "GHALISTENER_READINESS_STALE_AFTER_SECS";
/// Bounds on the shutdown steps, well inside ARC's 60 s grace period.
const SESSION_DELETE_TIMEOUT: Duration = Duration::from_secs(3);
const SPAN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

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

fn env_map() -> HashMap<String, String> {
    std::env::vars().collect()
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

/// Retries done inside the GitHub client and the scaler, mirrored onto `/metrics`.
struct RetryCounters {
    github: prometheus::IntCounter,
    kubernetes: prometheus::IntCounter,
}

impl RetryCounters {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str| -> Result<prometheus::IntCounter, prometheus::Error> {
                let c = prometheus::IntCounter::new(name, help)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        Ok(Self {
            github: counter(
                "gha_listener_github_retries_total",
                "GitHub and Actions service requests retried (transport errors, timeouts, 429, 5xx).",
            )?,
            kubernetes: counter(
                "gha_listener_kubernetes_retries_total",
                "Kubernetes API patches retried (transport errors, timeouts, 409, 429, 5xx).",
            )?,
        })
    }

    /// Raise the counters to the sources' monotonic totals.
    fn sync(&self, github_total: u64, kubernetes_total: u64) {
        for (counter, total) in [
            (&self.github, github_total),
            (&self.kubernetes, kubernetes_total),
        ] {
            let behind = total.saturating_sub(counter.get());
            if behind > 0 {
                counter.inc_by(behind);
            }
        }
    }
}

fn env_flag(env: &HashMap<String, String>, key: &str) -> Option<bool> {
    env.get(key)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Run the listener until SIGTERM/SIGINT (`Ok`) or an unrecoverable error.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let env = env_map();
    let config_url = GitHubConfigUrl::parse(&config.configure_url)
        .map_err(|e| anyhow!("config key `configure_url`: {e}"))?;
    let labels = ScaleSetLabels {
        name: config.ephemeral_runner_set_name.clone(),
        namespace: config.ephemeral_runner_set_namespace.clone(),
        enterprise: config_url.enterprise().to_owned(),
        organization: config_url.organization().to_owned(),
        repository: config_url.repository().to_owned(),
    };

    let long_poll_timeout = env_secs(&env, LONG_POLL_TIMEOUT_ENV)?;
    let stale_after = env_secs(&env, READINESS_STALE_AFTER_ENV)?.unwrap_or(STALE_AFTER);

    let registry = prometheus::Registry::new();
    let loop_metrics = LoopMetrics::register(&registry).context("registering listener metrics")?;
    let retry_counters =
        RetryCounters::register(&registry).context("registering listener metrics")?;
    let readiness = Readiness::new();
    let mut composite = CompositeRecorder::default();

    let metrics_server = if config.metrics_addr.is_empty() {
        None
    } else {
        let metrics_config: Option<MetricsConfig> = match &config.metrics {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| anyhow!("config key `metrics`: {e}"))?,
            ),
        };
        let prometheus =
            PrometheusRecorder::new(labels.clone(), metrics_config.as_ref(), &registry)
                .map_err(|e| anyhow!("config key `metrics`: {e}"))?;
        composite.push(Arc::new(prometheus));
        let server = MetricsServer::start(
            &config.metrics_addr,
            config.metrics_endpoint_or_default(),
            registry.clone(),
            readiness.clone(),
        )
        .await
        .map_err(|e| anyhow!("config key `metrics_addr`: {e}"))?;
        Some(server)
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
        .or_else(|| env_flag(&env, OTEL_INSECURE_ENV))
        .unwrap_or(false);
    let spans =
        match OtelSettings::resolve(config.otel_endpoint.as_deref(), insecure, id_scheme, &env)
            .map_err(|e| anyhow!("config key `otel_endpoint`: {e}"))?
        {
            Some(mut settings) => {
                // vcs.repository.url.full points at the GitHub the jobs come from (GHES too).
                settings.server_url = server_url(&config.configure_url);
                let recorder = Arc::new(
                    SpanRecorder::start(settings, &labels, &registry)
                        .map_err(|e| anyhow!("OpenTelemetry exporter: {e}"))?,
                );
                composite.push(recorder.clone());
                Some(recorder)
            }
            None => None,
        };
    composite.record_static(config.min_runners_i32(), config.max_runners_i32());
    let recorder: Arc<dyn Recorder> = Arc::new(composite);

    let result = run_session(
        &config,
        &labels,
        recorder,
        loop_metrics,
        &retry_counters,
        SessionTimeouts {
            long_poll: long_poll_timeout,
            stale_after,
        },
        &readiness,
        &shutdown,
    )
    .await;

    readiness.set_ready(false);
    if let Some(spans) = &spans {
        spans.shutdown(SPAN_FLUSH_TIMEOUT).await;
    }
    if let Some(server) = &metrics_server {
        server.shutdown().await;
    }
    result
}

/// Timeouts the environment may override.
struct SessionTimeouts {
    long_poll: Option<Duration>,
    stale_after: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    config: &Config,
    labels: &ScaleSetLabels,
    recorder: Arc<dyn Recorder>,
    loop_metrics: LoopMetrics,
    retry_counters: &RetryCounters,
    timeouts: SessionTimeouts,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let credentials = match config.credentials()? {
        ConfigCredentials::Token(token) => Credentials::Token(SecretString::new(token)),
        ConfigCredentials::App {
            app_id,
            installation_id,
            private_key,
        } => Credentials::App {
            app_id,
            installation_id,
            private_key: SecretString::new(private_key),
        },
    };
    let mut options = ClientOptions {
        root_ca_pem: Some(config.server_root_ca.clone()).filter(|s| !s.trim().is_empty()),
        ..ClientOptions::default()
    };
    if let Some(timeout) = timeouts.long_poll {
        tracing::info!(
            timeout_s = timeout.as_secs(),
            "long-poll timeout overridden"
        );
        options.long_poll_timeout = timeout;
    }
    let client = ActionsClient::new(&config.configure_url, credentials, options)
        .map_err(|e| anyhow!("GitHub client: {e}"))?;

    let scaler_config = ScalerConfig {
        // A message carries at most 50 jobs: all of its runner patches go out in one
        // round, so a batch of started jobs costs one round trip, not four.
        runner_patch_concurrency: RUNNER_PATCH_CONCURRENCY,
        ..ScalerConfig::new(
            config.ephemeral_runner_set_namespace.clone(),
            config.ephemeral_runner_set_name.clone(),
            config.min_runners_i32(),
            config.max_runners_i32(),
        )
    };
    let scaler = EphemeralRunnerSetScaler::from_environment(scaler_config)
        .await
        .map_err(|e| anyhow!("Kubernetes client: {e}"))?;

    let owner = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("ghalistener-{}", std::process::id()));
    tracing::info!(
        scale_set_id = config.runner_scale_set_id,
        scale_set = %config.runner_scale_set_name,
        namespace = %labels.namespace,
        ephemeral_runner_set = %labels.name,
        min_runners = config.min_runners,
        max_runners = config.max_runners,
        owner = %owner,
        "starting listener"
    );
    let source = match ActionsSource::open(client, config.runner_scale_set_id, owner, shutdown)
        .await
        .map_err(|e| anyhow!("message session: {e}"))?
    {
        Some(source) => source,
        None => {
            tracing::info!("shutdown requested before the session was created");
            return Ok(());
        }
    };

    let client = source.client().clone();
    let health = LoopHealth::default();
    let listener = Listener::new(
        source,
        scaler,
        recorder,
        LoopSettings {
            max_runners: config.max_runners_i32(),
            ..LoopSettings::default()
        },
        loop_metrics,
        health.clone(),
    );
    // The watchdog never returns: the loop's end ends the select.
    let result = tokio::select! {
        result = listener.run(shutdown.clone()) => result,
        never = watchdog(&health, readiness, timeouts.stale_after, || {
            retry_counters.sync(client.metrics().retries(), listener.scaler().retries());
        }) => match never {},
    };
    retry_counters.sync(client.metrics().retries(), listener.scaler().retries());
    readiness.set_ready(false);

    // Delete the session in every case, so the next listener does not meet a 409.
    match tokio::time::timeout(SESSION_DELETE_TIMEOUT, listener.source().close()).await {
        Ok(Ok(())) => tracing::info!("message session deleted"),
        Ok(Err(e)) => tracing::warn!(error = %e, "deleting the message session failed"),
        Err(_) => tracing::warn!("deleting the message session timed out"),
    }
    result.map_err(|e| anyhow!("{e}"))
}

/// Every second: readiness from the loop's health, and the retry counters.
async fn watchdog(
    health: &LoopHealth,
    readiness: &Readiness,
    stale_after: Duration,
    sync_counters: impl Fn(),
) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        readiness.set_ready(health.is_ready(stale_after));
        sync_counters();
    }
}
