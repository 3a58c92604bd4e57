//! The real release `ghalistener` as a child process against the simulator: start-up,
//! idle memory, a 10,000-job burst (throughput, CPU per job, peak memory), and the
//! collector states of figure 5.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use simulator::actions::Endpoint;
use simulator::kube_api::FakeKubeApi;
use simulator::otlp_sink::OtlpSink;
use simulator::support::{self, free_addr, http_get, metric_value, wait_until_every};
use simulator::workload::{Environment, EnvironmentOptions, NAMESPACE, SET_NAME};
use tokio::task::JoinHandle;

use crate::procfs::{self, Usage};

/// Where the listener's spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorState {
    /// An OTLP/HTTP receiver that answers.
    Healthy,
    /// A TCP listener that accepts connections and never answers.
    Stalled,
    /// A closed port: connections are refused.
    Absent,
    /// No `otel_endpoint`: no exporter at all.
    Off,
}

impl CollectorState {
    pub const ALL: [CollectorState; 4] = [
        CollectorState::Healthy,
        CollectorState::Stalled,
        CollectorState::Absent,
        CollectorState::Off,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            CollectorState::Healthy => "collector healthy",
            CollectorState::Stalled => "collector stalled",
            CollectorState::Absent => "collector absent (port closed)",
            CollectorState::Off => "no otel_endpoint",
        }
    }
}

/// A collector in one of the [`CollectorState`]s, alive as long as this value.
pub struct Collector {
    pub endpoint: Option<String>,
    pub sink: Option<OtlpSink>,
    stalled: Option<JoinHandle<()>>,
}

impl Collector {
    pub async fn start(state: CollectorState) -> anyhow::Result<Collector> {
        Ok(match state {
            CollectorState::Healthy => {
                let sink = OtlpSink::start().await?;
                Collector {
                    endpoint: Some(sink.endpoint()),
                    sink: Some(sink),
                    stalled: None,
                }
            }
            CollectorState::Stalled => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let task = tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((stream, _)) = listener.accept().await {
                        held.push(stream);
                    }
                });
                Collector {
                    endpoint: Some(format!("http://{addr}")),
                    sink: None,
                    stalled: Some(task),
                }
            }
            CollectorState::Absent => {
                let addr = free_addr()?;
                Collector {
                    endpoint: Some(format!("http://{addr}")),
                    sink: None,
                    stalled: None,
                }
            }
            CollectorState::Off => Collector {
                endpoint: None,
                sink: None,
                stalled: None,
            },
        })
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(task) = self.stalled.take() {
            task.abort();
        }
        if let Some(sink) = &self.sink {
            sink.shutdown();
        }
    }
}

/// Fakes with metrics on and spans going to `collector`.
pub async fn environment(
    dir: &Path,
    collector: &Collector,
    max_runners: i64,
    long_poll_hold: Duration,
) -> anyhow::Result<Environment> {
    let mut options = EnvironmentOptions::new(dir);
    options.max_runners = max_runners;
    options.long_poll_hold = long_poll_hold;
    options.metrics_addr = Some(free_addr()?);
    options.otel_endpoint = collector.endpoint.clone();
    options.runner_controller = false;
    Environment::start(options).await
}

/// A running `ghalistener`.
pub struct ListenerProcess {
    process: support::ListenerProcess,
    pub pid: u32,
    pub spawned_at: SystemTime,
}

impl ListenerProcess {
    pub fn spawn(binary: &Path, env: &Environment) -> anyhow::Result<Self> {
        Self::spawn_with(binary, env, &[])
    }

    /// With extra environment variables.
    pub fn spawn_with(
        binary: &Path,
        env: &Environment,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let process = support::ListenerProcess::spawn_with(binary, env, extra_env)
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            pid: process.pid(),
            spawned_at: process.spawned_at(),
            process,
        })
    }

    pub fn usage(&self, ticks: u64) -> anyhow::Result<Usage> {
        procfs::usage(self.pid, ticks).ok_or_else(|| {
            anyhow!(
                "cannot read /proc/{} (did the listener exit? see {})",
                self.pid,
                self.process.log().display()
            )
        })
    }

    /// Fails when the listener already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.try_exit()? {
            bail!(
                "the listener exited early ({status}); its log:\n{}",
                self.process.tail(20)
            );
        }
        Ok(())
    }

    /// SIGTERM, as the kubelet sends it; killed when it does not exit within 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let stopped = self.process.terminate(Duration::from_secs(10)).await?;
        if stopped.exit.is_none() {
            bail!("the listener did not exit within 10 s of SIGTERM")
        }
        Ok(())
    }
}

/// Wait for the first scale patch; returns its stamp in the fake.
pub async fn first_scale_patch(
    env: &Environment,
    listener: &mut ListenerProcess,
    timeout: Duration,
) -> anyhow::Result<SystemTime> {
    let set_path = FakeKubeApi::set_path(NAMESPACE, SET_NAME);
    let mut patched_at = None;
    // The stamp comes from the fake's log, so the poll interval does not skew it.
    wait_until_every(timeout, Duration::from_millis(1), || {
        patched_at = env
            .kube
            .requests()
            .iter()
            .find(|r| r.method == "PATCH" && r.path == set_path)
            .map(|r| r.at);
        patched_at.is_some() || listener.check_alive().is_err()
    })
    .await;
    if let Some(at) = patched_at {
        return Ok(at);
    }
    listener.check_alive()?;
    bail!(
        "no scale patch within {timeout:?}; listener log:\n{}",
        listener.process.tail(20)
    )
}

/// Start-up and idle memory of one fresh listener.
#[derive(Debug, Clone)]
pub struct StartupSample {
    pub to_first_scale_patch: Duration,
    pub idle: Usage,
}

pub async fn startup(
    binary: &Path,
    dir: &Path,
    idle_for: Duration,
    ticks: u64,
) -> anyhow::Result<StartupSample> {
    let collector = Collector::start(CollectorState::Healthy).await?;
    let env = environment(dir, &collector, 10, Duration::from_secs(30)).await?;
    let mut listener = ListenerProcess::spawn(binary, &env)?;
    let first = first_scale_patch(&env, &mut listener, Duration::from_secs(30)).await?;
    let to_first_scale_patch = first
        .duration_since(listener.spawned_at)
        .unwrap_or_default();
    tokio::time::sleep(idle_for).await;
    listener.check_alive()?;
    let idle = listener.usage(ticks)?;
    listener.stop().await?;
    Ok(StartupSample {
        to_first_scale_patch,
        idle,
    })
}

/// One burst of jobs through a fresh listener.
#[derive(Debug, Clone)]
pub struct BurstSample {
    pub jobs: usize,
    pub messages: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
    pub context_switches: u64,
    pub peak_rss: u64,
    pub idle_before: Usage,
    pub spans_received: Option<usize>,
    /// The listener's own span counters at the end of the burst.
    pub spans: Option<SpanCounters>,
}

/// `gha_listener_spans_*` as the listener's metrics endpoint reports them.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SpanCounters {
    pub exported: f64,
    pub failed: f64,
    pub dropped: f64,
    pub pending: f64,
}

/// Scrape the listener's `/metrics` for its span counters.
pub async fn span_counters(addr: SocketAddr) -> Option<SpanCounters> {
    let text = http_get(addr, "/metrics").await;
    let counters = SpanCounters {
        exported: metric_value(&text, "gha_listener_spans_exported_total"),
        failed: metric_value(&text, "gha_listener_spans_export_failed_total"),
        dropped: metric_value(&text, "gha_listener_spans_dropped_total"),
        pending: metric_value(&text, "gha_listener_spans_pending"),
    };
    text.contains("gha_listener_spans_").then_some(counters)
}

impl BurstSample {
    pub fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
    pub fn messages_per_second(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    pub fn cpu_micros_per_job(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.jobs as f64
    }
    pub fn context_switches_per_job(&self) -> f64 {
        self.context_switches as f64 / self.jobs as f64
    }
}

pub fn burst_runner(i: usize) -> String {
    format!("bench-burst-runner-{i}")
}

/// Queue `jobs` jobs at once; start each as soon as the listener acquired it (on a runner
/// that exists in the fake, so its status patch succeeds) and complete it right away. Ends
/// when the listener acknowledged every message. Metrics are on, spans go to `state`.
pub async fn burst(
    binary: &Path,
    extra_env: &[(String, String)],
    dir: &Path,
    jobs: usize,
    state: CollectorState,
    ticks: u64,
) -> anyhow::Result<BurstSample> {
    let collector = Collector::start(state).await?;
    let max_runners = i64::try_from(jobs)?.max(10);
    let env = environment(dir, &collector, max_runners, Duration::from_secs(2)).await?;
    env.actions.set_request_log_limit(jobs * 2 + 10_000);
    for i in 0..jobs {
        env.kube.put_ephemeral_runner(NAMESPACE, &burst_runner(i));
    }
    let mut listener = ListenerProcess::spawn_with(binary, &env, extra_env)?;
    first_scale_patch(&env, &mut listener, Duration::from_secs(30)).await?;
    crate::latency::wait_quiet(&env, Duration::from_secs(30)).await?;
    listener.check_alive()?;
    let before = listener.usage(ticks)?;
    let stats_before = env.actions.stats();
    env.actions.clear_requests();
    env.kube.clear_requests();

    let started_at = SystemTime::now();
    let ids = env.actions.queue_jobs(jobs);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut next = 0usize;
    while next < ids.len() {
        while next < ids.len() && env.actions.start_job(ids[next], &burst_runner(next)) {
            env.actions.complete_job(ids[next], "succeeded");
            next += 1;
        }
        if Instant::now() > deadline {
            bail!("burst: only {next} of {jobs} jobs acquired within 300 s");
        }
        listener.check_alive()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every message acknowledged and nothing new for a while: the listener is done.
    let done = |s: &simulator::actions::FakeStats| {
        s.messages_delivered - s.messages_redelivered == s.messages_acked
    };
    let mut last = env.actions.stats();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = env.actions.stats();
        if done(&now) && now.messages_acked == last.messages_acked {
            last = now;
            break;
        }
        if Instant::now() > deadline {
            bail!("burst: the listener did not finish within 300 s");
        }
        last = now;
    }
    listener.check_alive()?;
    let after = listener.usage(ticks)?;
    let last_ack = env
        .actions
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::DeleteMessage))
        .map(|r| r.at)
        .max()
        .context("no acknowledgement logged")?;
    let spans_received = match &collector.sink {
        Some(sink) => Some(
            sink.wait_for_spans(jobs * 3, Duration::from_secs(10))
                .await
                .len(),
        ),
        None => None,
    };
    let spans = match env.options.metrics_addr {
        Some(addr) => span_counters(addr).await,
        None => None,
    };
    listener.stop().await?;
    Ok(BurstSample {
        jobs,
        messages: last.messages_acked - stats_before.messages_acked,
        elapsed: last_ack.duration_since(started_at).unwrap_or_default(),
        cpu: after.cpu.saturating_sub(before.cpu),
        context_switches: after
            .context_switches
            .saturating_sub(before.context_switches),
        peak_rss: after.peak_rss,
        idle_before: before,
        spans_received,
        spans,
    })
}

/// Figure 5a on the binary: the scale latency of one message (with completed jobs, so spans
/// are recorded on the measured path) with the collector in `state`.
pub struct LatencyTarget {
    pub env: Environment,
    pub listener: ListenerProcess,
    _collector: Collector,
}

impl LatencyTarget {
    pub async fn start(
        binary: &Path,
        dir: &Path,
        state: CollectorState,
        runners: usize,
    ) -> anyhow::Result<LatencyTarget> {
        let collector = Collector::start(state).await?;
        let env = environment(dir, &collector, 200, Duration::from_secs(60)).await?;
        crate::latency::create_runners(&env.kube, runners);
        let mut listener = ListenerProcess::spawn(binary, &env)?;
        first_scale_patch(&env, &mut listener, Duration::from_secs(30)).await?;
        Ok(LatencyTarget {
            env,
            listener,
            _collector: collector,
        })
    }
}
