//! A complete simulated world for the listener: the fake Actions service and Kubernetes API
//! wired together, the listener's `config.json` and kubeconfig written as ARC would, and a
//! workload generator that queues bursts of jobs, starts them on the runners the fake
//! controller creates, and completes them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::actions::{FakeActions, FakeActionsConfig, FakeAuth, FakeJob};
use crate::kube_api::FakeKubeApi;

/// The PAT the simulated GitHub accepts.
pub const DEMO_TOKEN: &str = "ghp_simulatorDemoToken0000000000000000";
pub const NAMESPACE: &str = "arc-runners";
pub const SET_NAME: &str = "demo-runner-set-x7k2p";
pub const SCALE_SET_NAME: &str = "demo-runner-set";
pub const SCALE_SET_ID: i64 = 7;

#[derive(Debug, Clone)]
pub struct EnvironmentOptions {
    /// Where config.json and kubeconfig are written.
    pub dir: PathBuf,
    pub min_runners: i64,
    pub max_runners: i64,
    pub long_poll_hold: Duration,
    /// `host:port` the listener's metrics server binds; `None` disables metrics.
    pub metrics_addr: Option<SocketAddr>,
    pub otel_endpoint: Option<String>,
    pub log_level: String,
    pub log_format: String,
    /// The simulated controller creates and deletes runners to follow `spec.replicas`.
    pub runner_controller: bool,
    /// How the listener authenticates to the fake GitHub; `None` is the PAT [`DEMO_TOKEN`].
    pub github_auth: Option<FakeAuth>,
}

impl EnvironmentOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            min_runners: 0,
            max_runners: 10,
            long_poll_hold: Duration::from_secs(5),
            metrics_addr: None,
            otel_endpoint: None,
            log_level: "info".into(),
            log_format: "text".into(),
            runner_controller: true,
            github_auth: None,
        }
    }

    /// The listener with every output on: metrics at `metrics_addr`, spans to
    /// `otel_endpoint`, debug logs, and a 1 s long poll so that a test sees many rounds.
    pub fn observed(
        dir: impl Into<PathBuf>,
        metrics_addr: SocketAddr,
        otel_endpoint: String,
    ) -> Self {
        Self {
            long_poll_hold: Duration::from_secs(1),
            metrics_addr: Some(metrics_addr),
            otel_endpoint: Some(otel_endpoint),
            log_level: "debug".into(),
            ..Self::new(dir)
        }
    }
}

/// Both fakes, and the files the listener needs to reach them.
pub struct Environment {
    pub actions: FakeActions,
    pub kube: FakeKubeApi,
    pub options: EnvironmentOptions,
    pub config_path: PathBuf,
    pub kubeconfig_path: PathBuf,
}

impl Environment {
    pub async fn start(options: EnvironmentOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.dir)?;
        let actions = FakeActions::start(FakeActionsConfig {
            auth: options
                .github_auth
                .clone()
                .unwrap_or_else(|| FakeAuth::Pat {
                    token: DEMO_TOKEN.into(),
                }),
            scale_set_id: SCALE_SET_ID,
            scale_set_name: SCALE_SET_NAME.into(),
            long_poll_hold: options.long_poll_hold,
            ..Default::default()
        })
        .await?;
        let kube = FakeKubeApi::builder()
            .namespace(NAMESPACE)
            .allowed_set_name(SET_NAME)
            .with_runner_controller(options.runner_controller)
            .start()
            .await?;
        kube.put_ephemeral_runner_set(NAMESPACE, SET_NAME, 0);
        let config_path = options.dir.join("config.json");
        let kubeconfig_path = options.dir.join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig_path)?;
        let env = Self {
            actions,
            kube,
            options,
            config_path,
            kubeconfig_path,
        };
        env.write_config(&env.listener_config())?;
        Ok(env)
    }

    /// config.json with every key present, as ARC's controller writes it, plus the OTel keys.
    pub fn listener_config(&self) -> serde_json::Value {
        let o = &self.options;
        let mut config = json!({
            "configure_url": self.actions.configure_url("demo-org"),
            "vault_type": "",
            "vault_lookup_key": "",
            "github_app_id": "",
            "github_app_installation_id": 0,
            "github_app_private_key": "",
            "github_token": DEMO_TOKEN,
            "ephemeral_runner_set_namespace": NAMESPACE,
            "ephemeral_runner_set_name": SET_NAME,
            "max_runners": o.max_runners,
            "min_runners": o.min_runners,
            "runner_scale_set_id": SCALE_SET_ID,
            "runner_scale_set_name": SCALE_SET_NAME,
            "server_root_ca": "",
            "log_level": o.log_level,
            "log_format": o.log_format,
            "metrics_addr": o.metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
            "metrics_endpoint": "/metrics",
            "metrics": null,
        });
        if let Some(endpoint) = &o.otel_endpoint {
            config["otel_endpoint"] = json!(endpoint);
            config["otel_insecure"] = json!(endpoint.starts_with("http://"));
        }
        config
    }

    pub fn write_config(&self, config: &serde_json::Value) -> anyhow::Result<()> {
        std::fs::write(&self.config_path, serde_json::to_vec_pretty(config)?)?;
        Ok(())
    }

    /// The set's `(spec.replicas, spec.patchID)`; a null replicas reads as 0.
    pub fn replicas(&self) -> (i64, i64) {
        let set = self.kube.get_ephemeral_runner_set(NAMESPACE, SET_NAME);
        let spec = set.as_ref().and_then(|s| s.get("spec"));
        let field = |k: &str| {
            spec.and_then(|s| s.get(k))
                .and_then(|v| v.as_i64())
                .unwrap_or(0)
        };
        (field("replicas"), field("patchID"))
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }
}

/// A scripted burst workload.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Jobs queued in each wave.
    pub waves: Vec<usize>,
    /// Time between the starts of two waves.
    pub wave_interval: Duration,
    /// How long a job runs once started.
    pub job_duration: Duration,
    /// Every n-th job fails (0: none).
    pub fail_every: usize,
    /// Give up waiting for jobs to finish after this long.
    pub timeout: Duration,
}

impl WorkloadOptions {
    /// Waves of jobs `wave_interval` apart, each job running `job_duration` once started; no
    /// job fails, and the workload gives up after 60 s.
    pub fn waves(waves: Vec<usize>, wave_interval: Duration, job_duration: Duration) -> Self {
        Self {
            waves,
            wave_interval,
            job_duration,
            fail_every: 0,
            timeout: Duration::from_secs(60),
        }
    }

    /// Every `n`-th job fails.
    pub fn failing_every(self, n: usize) -> Self {
        Self {
            fail_every: n,
            ..self
        }
    }

    /// Give up waiting for the jobs after `timeout`.
    pub fn within(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            waves: vec![3, 8, 5],
            wave_interval: Duration::from_secs(4),
            job_duration: Duration::from_secs(2),
            fail_every: 4,
            timeout: Duration::from_secs(90),
        }
    }
}

/// What happened, for the caller to print or assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadEvent {
    Queued { wave: usize, jobs: usize },
    Started { request_id: i64, runner: String },
    Completed { request_id: i64, result: String },
    Scaled { replicas: i64, patch_id: i64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadSummary {
    pub queued: usize,
    pub started: usize,
    pub completed: usize,
    pub failed: usize,
    pub scale_changes: usize,
    pub max_replicas: i64,
    pub timed_out: bool,
}

/// Drive `options`' waves through the environment until every job completed.
///
/// Jobs start only on runners the fake controller created (when it runs), one job a
/// runner, and a runner is deleted when its job completes, as ephemeral runners are.
pub async fn run_workload(
    env: &Environment,
    options: &WorkloadOptions,
    mut on_event: impl FnMut(&WorkloadEvent),
) -> WorkloadSummary {
    let started_at = Instant::now();
    let mut summary = WorkloadSummary::default();
    let mut waiting: VecDeque<i64> = VecDeque::new();
    let mut running: BTreeMap<i64, (String, Instant)> = BTreeMap::new();
    let mut busy_runners: BTreeMap<String, i64> = BTreeMap::new();
    let mut next_wave = 0usize;
    let mut last_scale = env.replicas();
    let mut job_counter = 0usize;
    let mut synthetic_runner = 0usize;
    loop {
        let now = Instant::now();
        if next_wave < options.waves.len()
            && now
                >= started_at + options.wave_interval * u32::try_from(next_wave).unwrap_or(u32::MAX)
        {
            let n = options.waves[next_wave];
            for i in 0..n {
                let id = env.actions.queue_job(FakeJob {
                    job_display_name: format!("build ({})", i + 1),
                    ..Default::default()
                });
                waiting.push_back(id);
            }
            summary.queued += n;
            on_event(&WorkloadEvent::Queued {
                wave: next_wave + 1,
                jobs: n,
            });
            next_wave += 1;
        }

        let scale = env.replicas();
        if scale != last_scale {
            last_scale = scale;
            summary.scale_changes += 1;
            summary.max_replicas = summary.max_replicas.max(scale.0);
            on_event(&WorkloadEvent::Scaled {
                replicas: scale.0,
                patch_id: scale.1,
            });
        }

        // Start waiting jobs on idle runners. Without the controller, invent runner names.
        let mut idle: VecDeque<String> = if env.options.runner_controller {
            env.kube
                .runners(NAMESPACE)
                .into_iter()
                .filter(|r| !busy_runners.contains_key(r))
                .collect()
        } else {
            VecDeque::new()
        };
        let mut still_waiting = VecDeque::new();
        while let Some(id) = waiting.pop_front() {
            let runner = if env.options.runner_controller {
                match idle.pop_front() {
                    Some(r) => r,
                    None => {
                        still_waiting.push_back(id);
                        continue;
                    }
                }
            } else {
                synthetic_runner += 1;
                format!("{SET_NAME}-runner-s{synthetic_runner}")
            };
            if env.actions.start_job(id, &runner) {
                summary.started += 1;
                busy_runners.insert(runner.clone(), id);
                running.insert(id, (runner.clone(), Instant::now()));
                on_event(&WorkloadEvent::Started {
                    request_id: id,
                    runner,
                });
            } else {
                // Not acquired yet: the listener has not seen it.
                still_waiting.push_back(id);
            }
        }
        waiting = still_waiting;

        let finished: Vec<i64> = running
            .iter()
            .filter(|(_, (_, since))| since.elapsed() >= options.job_duration)
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            if let Some((runner, _)) = running.remove(&id) {
                job_counter += 1;
                let result =
                    if options.fail_every > 0 && job_counter.is_multiple_of(options.fail_every) {
                        summary.failed += 1;
                        "failed"
                    } else {
                        "succeeded"
                    };
                env.actions.complete_job(id, result);
                busy_runners.remove(&runner);
                if env.options.runner_controller {
                    env.kube.remove_ephemeral_runner(NAMESPACE, &runner);
                }
                summary.completed += 1;
                on_event(&WorkloadEvent::Completed {
                    request_id: id,
                    result: result.into(),
                });
            }
        }

        if next_wave >= options.waves.len() && waiting.is_empty() && running.is_empty() {
            return summary;
        }
        if started_at.elapsed() > options.timeout {
            summary.timed_out = true;
            return summary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the set's replicas equal `replicas`, or `timeout`.
pub async fn wait_for_replicas(env: &Environment, replicas: i64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if env.replicas().0 == replicas {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.replicas().0 == replicas
}
