//! Composition: settings → recorders → Actions session → scaler → loop → orderly shutdown.
//!
//! What each piece is lives in its module ([`crate::settings`], [`crate::health`],
//! [`crate::shutdown`], [`crate::retry_metrics`]); this one only builds them, wires them
//! together and takes them down in order, each step within its part of the shutdown budget.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use github_client::{ActionsClient, ClientOptions};
use recorders::{
    CompositeRecorder, MetricsServer, PrometheusRecorder, Readiness, Recorder, SpanRecorder,
};
use scaler::{EphemeralRunnerSetScaler, RunnerJobStatus, Scaler, ScalerConfig};

use crate::actions_source::ActionsSource;
use crate::health::Health;
use crate::listener::{Listener, LoopMetrics, LoopSettings};
use crate::recovery::Degradation;
use crate::retry_metrics::RetryCounters;
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::source::MessageSource;
use crate::startup::Started;

pub use crate::settings::{
    LONG_POLL_TIMEOUT_ENV, OTEL_ID_SCHEME_ENV, OTEL_INSECURE_ENV, READINESS_STALE_AFTER_ENV,
    RECOVERY_MAX_BACKOFF_ENV,
};

/// The most job messages the service puts in one queue message.
const RUNNER_PATCH_CONCURRENCY: usize = 50;

/// The scaler, shared with the retry counters that read its total at scrape time.
struct SharedScaler(Arc<EphemeralRunnerSetScaler>);

impl Scaler for SharedScaler {
    type Error = scaler::ScalerError;

    fn handle_desired_runner_count(
        &self,
        count: i64,
        jobs_changed: bool,
    ) -> impl Future<Output = Result<i32, Self::Error>> + Send {
        self.0.handle_desired_runner_count(count, jobs_changed)
    }

    fn handle_jobs_started(&self, jobs: Vec<RunnerJobStatus>) -> impl Future<Output = ()> + Send {
        self.0.handle_jobs_started(jobs)
    }
}

/// Run the listener until `shutdown` is requested (`Ok`) or an unrecoverable error. A bare
/// `CancellationToken` gets the listener's default shutdown budget.
pub async fn run(started: Started, shutdown: impl Into<Shutdown>) -> anyhow::Result<()> {
    let shutdown = shutdown.into();
    let settings = Settings::from_process_env(started.config, Some(&started.config_path))?;
    run_with(settings, &shutdown).await
}

/// Run with resolved settings.
pub async fn run_with(settings: Settings, shutdown: &Shutdown) -> anyhow::Result<()> {
    let budget = shutdown.budget();
    let registry = prometheus::Registry::new();
    let loop_metrics = LoopMetrics::register(&registry).context("registering listener metrics")?;
    let retry_counters =
        RetryCounters::register(&registry).context("registering listener metrics")?;
    let readiness = Readiness::new();
    let mut composite = CompositeRecorder::default();
    let mut exemplars = None;

    let metrics_server = match &settings.metrics {
        None => None,
        Some(metrics) => {
            let prometheus = PrometheusRecorder::new(
                settings.labels.clone(),
                metrics.config.as_ref(),
                &registry,
            )
            .map_err(|e| anyhow!("config key `metrics`: {e}"))?;
            exemplars = Some(prometheus.exemplars());
            composite.push(Arc::new(prometheus));
            let server = MetricsServer::start_with_exemplars(
                &metrics.addr,
                &metrics.endpoint,
                registry.clone(),
                readiness.clone(),
                exemplars.clone().unwrap_or_default(),
            )
            .await
            .map_err(|e| anyhow!("config key `metrics_addr`: {e}"))?;
            Some(server)
        }
    };

    let spans = match &settings.otel {
        Some(otel) => {
            let recorder = Arc::new(
                SpanRecorder::start(otel.clone(), &settings.labels, &registry)
                    .map_err(|e| anyhow!("OpenTelemetry exporter: {e}"))?,
            );
            composite.push(recorder.clone());
            if let Some(exemplars) = &exemplars {
                exemplars.set_trace_ids(recorder.trace_ids());
            }
            Some(recorder)
        }
        None => None,
    };
    let config = &settings.config;
    composite.record_static(config.min_runners_i32(), config.max_runners_i32());
    let recorder: Arc<dyn Recorder> = Arc::new(composite);

    let health = Health::new(readiness, settings.stale_after);
    let result = run_session(
        &settings,
        spans.as_deref(),
        recorder,
        loop_metrics,
        &retry_counters,
        &health,
        shutdown,
    )
    .await;

    health.loop_ended();
    if let Some(spans) = &spans {
        spans.shutdown(budget.span_flush).await;
    }
    if let Some(server) = &metrics_server {
        // Dropping the wait leaves the server task to the runtime's own stop.
        if tokio::time::timeout(budget.metrics_drain, server.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("metrics server did not stop within its part of the shutdown budget");
        }
    }
    result
}

async fn run_session(
    settings: &Settings,
    spans: Option<&SpanRecorder>,
    recorder: Arc<dyn Recorder>,
    loop_metrics: LoopMetrics,
    retry_counters: &RetryCounters,
    health: &Health,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let config = &settings.config;
    if settings.client_options.long_poll_timeout != ClientOptions::default().long_poll_timeout {
        tracing::info!(
            timeout_s = settings.client_options.long_poll_timeout.as_secs(),
            "long-poll timeout overridden"
        );
    }
    // A vault that is down or a secret not there yet is waited out in place, as the loop
    // waits out rejected credentials; only credentials that cannot work as written exit.
    let degradation = Degradation::new(
        loop_metrics.degraded.clone(),
        health.loop_health().clone(),
        settings.recovery_max_backoff,
    );
    let Some(credentials) = settings
        .credentials
        .load_waiting_out(&degradation, shutdown.token())
        .await
        .context("reading the GitHub credentials")?
    else {
        return Ok(());
    };
    let client = ActionsClient::new(
        &config.configure_url,
        credentials,
        settings.client_options.clone(),
    )
    .map_err(|e| anyhow!("GitHub client: {e}"))?;
    if let Some(spans) = spans.filter(|_| settings.resolve_run_attempt) {
        let resolver = github_client::RunAttemptResolver::new(client.clone());
        spans.set_run_attempt_lookup(Arc::new(crate::run_attempts::GitHubRunAttempts(resolver)));
    }

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
    let scaler = Arc::new(
        EphemeralRunnerSetScaler::from_environment(scaler_config)
            .await
            .map_err(|e| anyhow!("Kubernetes client: {e}"))?,
    );

    let owner = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("ghalistener-{}", std::process::id()));
    tracing::info!(
        scale_set_id = config.runner_scale_set_id,
        scale_set = %config.runner_scale_set_name,
        namespace = %settings.labels.namespace,
        ephemeral_runner_set = %settings.labels.name,
        min_runners = config.min_runners,
        max_runners = config.max_runners,
        owner = %owner,
        "starting listener"
    );
    // The session is opened by the loop, which waits out what can clear (rejected
    // credentials, an unknown scale set) instead of exiting.
    let source = ActionsSource::new(client, config.runner_scale_set_id, owner)
        .with_credentials(settings.credentials.clone());

    let client = source.client().clone();
    let scaler_totals = scaler.clone();
    retry_counters.read_from(
        move || client.metrics().retries(),
        move || scaler_totals.retries(),
    );
    let listener = Listener::new(
        source,
        SharedScaler(scaler),
        recorder,
        LoopSettings {
            max_runners: config.max_runners_i32(),
            shutdown_grace: shutdown.budget().work_in_hand,
            recovery_max_backoff: settings.recovery_max_backoff,
            ..LoopSettings::default()
        },
        loop_metrics,
        health.loop_health().clone(),
    );
    // The staleness watcher never returns: the loop's end ends the select.
    let result = tokio::select! {
        result = listener.run(shutdown.token().clone()) => result,
        never = health.watch_staleness() => match never {},
    };
    health.loop_ended();

    // Delete the session in every case, so the next listener does not meet a 409.
    match tokio::time::timeout(shutdown.budget().session_delete, listener.source().close()).await {
        Ok(Ok(())) => tracing::info!("message session deleted"),
        Ok(Err(e)) => tracing::warn!(error = %e, "deleting the message session failed"),
        Err(_) => tracing::warn!("deleting the message session timed out"),
    }
    result.map_err(|e| anyhow!("{e}"))
}
