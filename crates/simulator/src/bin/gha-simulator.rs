//! `gha-simulator`: the listener's world without a cluster or GitHub.
//!
//! `gha-simulator demo` starts the fakes, runs the real `ghalistener` against them under a
//! burst workload, prints scaling decisions as they happen and a waterfall of each job's
//! spans once all three arrived (`--raw-spans` adds every span as received), and ends
//! with a summary. `gha-simulator serve --dir DIR` starts the same world and writes
//! `DIR/config.json` and `DIR/kubeconfig` for a listener started by someone else (the
//! end-to-end suites), then runs the workload. `--key-vault` (demo) moves the listener's
//! GitHub credentials into a fake Azure Key Vault it reads them from with a certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use simulator::azure::{FakeAzure, FakeAzureConfig};
use simulator::otlp_sink::{OtlpSink, ReceivedSpan};
use simulator::support::{ListenerProcess, free_addr, http_body, http_get};
use simulator::waterfall::Waterfalls;
use simulator::workload::{
    Environment, EnvironmentOptions, WorkloadEvent, WorkloadOptions, run_workload,
    wait_for_replicas,
};

const USAGE: &str = "usage:
  gha-simulator demo [--listener PATH] [--dir DIR] [--waves 3,8,5] [--job-seconds N]
                     [--raw-spans] [--key-vault]
  gha-simulator serve --dir DIR [--metrics-addr HOST:PORT] [--otel-endpoint URL]
                      [--waves 3,8,5] [--job-seconds N] [--linger-seconds N]";

struct Args {
    command: String,
    listener: Option<PathBuf>,
    dir: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
    otel_endpoint: Option<String>,
    waves: Vec<usize>,
    job_seconds: f64,
    linger_seconds: u64,
    /// Print each span as received, besides the per-job waterfalls.
    raw_spans: bool,
    /// The listener reads its GitHub credentials from a fake Azure Key Vault.
    key_vault: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().context("missing command")?;
    if !matches!(command.as_str(), "demo" | "serve") {
        bail!("unknown command {command:?}");
    }
    let mut args = Args {
        command,
        listener: None,
        dir: None,
        metrics_addr: None,
        otel_endpoint: std::env::var("OTEL_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty()),
        waves: vec![3, 8, 5],
        job_seconds: 2.0,
        linger_seconds: 0,
        raw_spans: false,
        key_vault: false,
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--listener" => args.listener = Some(value("--listener")?.into()),
            "--dir" => args.dir = Some(value("--dir")?.into()),
            "--metrics-addr" => {
                let v = value("--metrics-addr")?;
                args.metrics_addr = Some(
                    v.parse()
                        .with_context(|| format!("--metrics-addr {v:?} is not HOST:PORT"))?,
                );
            }
            "--otel-endpoint" => args.otel_endpoint = Some(value("--otel-endpoint")?),
            "--waves" => {
                let v = value("--waves")?;
                args.waves = v
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| {
                        format!("--waves {v:?} is not a comma-separated list of counts")
                    })?;
            }
            "--job-seconds" => {
                let v = value("--job-seconds")?;
                args.job_seconds = v
                    .parse()
                    .with_context(|| format!("--job-seconds {v:?} is not a number"))?;
            }
            "--linger-seconds" => {
                let v = value("--linger-seconds")?;
                args.linger_seconds = v
                    .parse()
                    .with_context(|| format!("--linger-seconds {v:?} is not a whole number"))?;
            }
            "--raw-spans" => args.raw_spans = true,
            "--key-vault" => args.key_vault = true,
            other => bail!("unknown flag {other:?}"),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let Ok(args) = parse_args().inspect_err(|e| eprintln!("gha-simulator: {e:#}\n{USAGE}")) else {
        return ExitCode::from(2);
    };
    let Some(runtime) = simulator::support::driver_runtime("gha-simulator") else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        match args.command.as_str() {
            "demo" => demo(args).await,
            _ => serve(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gha-simulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workload_options(args: &Args) -> WorkloadOptions {
    WorkloadOptions {
        waves: args.waves.clone(),
        job_duration: Duration::from_secs_f64(args.job_seconds.max(0.0)),
        ..Default::default()
    }
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().context("serve needs --dir DIR")?;
    let mut options = EnvironmentOptions::new(&dir);
    options.metrics_addr = Some(match args.metrics_addr {
        Some(a) => a,
        None => free_addr()?,
    });
    options.otel_endpoint = args.otel_endpoint.clone();
    let env = Environment::start(options).await?;
    println!(
        "READY config={} kubeconfig={}",
        env.config_path.display(),
        env.kubeconfig_path.display()
    );
    let summary = run_workload(&env, &workload_options(&args), |e| {
        println!("{}", describe(e))
    })
    .await;
    let scaled_down = wait_for_replicas(&env, 0, Duration::from_secs(30)).await;
    println!(
        "DONE queued={} started={} completed={} failed={} max_replicas={} scaled_down={} timed_out={}",
        summary.queued,
        summary.started,
        summary.completed,
        summary.failed,
        summary.max_replicas,
        scaled_down,
        summary.timed_out
    );
    tokio::time::sleep(Duration::from_secs(args.linger_seconds)).await;
    Ok(if summary.timed_out {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn describe(event: &WorkloadEvent) -> String {
    match event {
        WorkloadEvent::Queued { wave, jobs } => format!("workload: wave {wave} queued {jobs} jobs"),
        WorkloadEvent::Started { request_id, runner } => {
            format!("workload: job {request_id} started on {runner}")
        }
        WorkloadEvent::Completed { request_id, result } => {
            format!("workload: job {request_id} completed: {result}")
        }
        WorkloadEvent::Scaled { replicas, patch_id } => {
            format!("SCALE   EphemeralRunnerSet replicas={replicas} patchID={patch_id}")
        }
    }
}

fn print_span(span: &ReceivedSpan) {
    let ms = (span.end_unix_nanos.saturating_sub(span.start_unix_nanos)) / 1_000_000;
    println!(
        "SPAN    {:<17} trace={} parent={} span={} {:>6} ms job={} status={}",
        span.name,
        span.trace_id,
        span.parent_span_id,
        span.span_id,
        ms,
        span.attribute("github.job_id").unwrap_or("?"),
        match span.status_code {
            2 => "error",
            1 => "ok",
            _ => "unset",
        }
    );
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let listener_bin = match &args.listener {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ghalistener"),
    };
    if !listener_bin.exists() {
        bail!(
            "listener binary {} not found (build it with `cargo build -p listener-bin`, or pass --listener)",
            listener_bin.display()
        );
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("gha-simulator-demo-{}", std::process::id())),
    };
    let sink = match &args.otel_endpoint {
        Some(_) => None,
        None => Some(OtlpSink::start().await?),
    };
    let mut options = EnvironmentOptions::new(&dir);
    options.metrics_addr = Some(free_addr()?);
    options.otel_endpoint = args
        .otel_endpoint
        .clone()
        .or_else(|| sink.as_ref().map(OtlpSink::endpoint));
    let env = Environment::start(options).await?;
    let metrics_addr = env.options.metrics_addr.context("metrics address")?;
    let mut listener_env = Vec::new();
    let vault = if args.key_vault {
        let vault = FakeAzure::start(FakeAzureConfig::default()).await?;
        let mut config = env.listener_config();
        listener_env = vault.take_over_credentials(&mut config, &dir, "arc-github-credentials")?;
        env.write_config(&config)?;
        Some(vault)
    } else {
        None
    };

    println!("== gha-simulator demo");
    println!("   fake Actions service  {}", env.actions.url());
    println!("   fake Kubernetes API   {}", env.kube.url());
    if let Some(vault) = &vault {
        println!(
            "   fake Entra ID + Key Vault {} (credentials in secret arc-github-credentials)",
            vault.url()
        );
    }
    println!("   listener metrics      http://{metrics_addr}/metrics");
    match (&sink, &args.otel_endpoint) {
        (Some(s), _) => println!(
            "   spans                 printed from a built-in OTLP receiver at {}",
            s.endpoint()
        ),
        (None, Some(e)) => println!("   spans                 exported to {e}"),
        _ => {}
    }
    println!(
        "   listener log          {}",
        dir.join("listener.log").display()
    );
    println!();

    // A clean environment: the listener follows the config written above, not whatever
    // RUST_LOG or OTEL_* the shell exported.
    let mut child = ListenerProcess::spawn_with(&listener_bin, &env, &listener_env)
        .with_context(|| format!("starting {}", listener_bin.display()))?;

    let started = Instant::now();
    let mut printed_spans = 0usize;
    let mut waterfalls = Waterfalls::default();
    let raw_spans = args.raw_spans;
    let mut print_new_spans = |sink: &Option<OtlpSink>| {
        if let Some(s) = sink {
            let spans = s.spans();
            for span in &spans[printed_spans.min(spans.len())..] {
                if raw_spans {
                    print_span(span);
                }
                if let Some(picture) = waterfalls.add(span) {
                    println!("{picture}");
                }
            }
            printed_spans = spans.len();
        }
        waterfalls.incomplete()
    };
    let workload = workload_options(&args);
    let summary = {
        let run = run_workload(&env, &workload, |e| {
            let line = describe(e);
            println!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
        });
        tokio::pin!(run);
        loop {
            tokio::select! {
                s = &mut run => break s,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    print_new_spans(&sink);
                }
                status = child.wait() => bail!("the listener exited early ({status:?}); see {}", dir.join("listener.log").display()),
            }
        }
    };
    println!(
        "[{:>5.1}s] workload done; waiting for scale-down",
        started.elapsed().as_secs_f64()
    );
    let scaled_down =
        wait_for_replicas(&env, env.options.min_runners, Duration::from_secs(30)).await;
    if let Some(s) = &sink {
        s.wait_for_spans(summary.completed * 3, Duration::from_secs(10))
            .await;
    }
    let incomplete = print_new_spans(&sink);
    if sink.is_some() && incomplete > 0 {
        println!("   ({incomplete} jobs with only some of their spans: not drawn)");
    }

    let response = http_get(metrics_addr, "/metrics").await;
    let metrics = http_body(&response);
    println!();
    println!("== metrics (gha_* series, from http://{metrics_addr}/metrics)");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("gha_") && !l.contains("_bucket{"))
    {
        println!("   {line}");
    }

    // SIGTERM, as the kubelet sends it; the listener deletes its session and exits 0.
    let stopped = child.terminate(Duration::from_secs(10)).await?;
    let exit = match stopped.exit {
        Some(s) => s
            .code()
            .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string()),
        None => "did not exit within 10 s".to_string(),
    };
    let stats = env.actions.stats();
    println!();
    println!("== summary");
    println!(
        "   jobs queued/started/completed/failed  {}/{}/{}/{}",
        summary.queued, summary.started, summary.completed, summary.failed
    );
    println!(
        "   scale changes seen                    {} (max replicas {})",
        summary.scale_changes, summary.max_replicas
    );
    println!("   scaled back to min_runners            {scaled_down}");
    println!(
        "   messages delivered/acked              {}/{}",
        stats.messages_delivered, stats.messages_acked
    );
    println!(
        "   jobs acquired                         {}",
        stats.jobs_acquired
    );
    println!("   spans received                        {printed_spans}");
    println!(
        "   sessions created/deleted              {}/{}",
        stats.sessions_created, stats.sessions_deleted
    );
    println!(
        "   listener exit after SIGTERM           {exit} in {} ms",
        stopped.took.as_millis()
    );
    let ok = !summary.timed_out && scaled_down && exit == "0" && stats.sessions_deleted >= 1;
    println!(
        "   result                                {}",
        if ok {
            "OK"
        } else {
            "PROBLEM (see listener.log)"
        }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
