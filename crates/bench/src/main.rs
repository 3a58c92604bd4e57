//! `make bench`: how fast, small and frugal `ghalistener` is, measured on the simulator.
//!
//! Figures (each the median of repeated runs, with min and max):
//! 1. scale-up latency with latency injected on every call, in process: the real
//!    `Listener` against a sequential handler in the Go listener's order, same client code;
//! 2. throughput and CPU per job of the release binary over a burst of jobs;
//! 3. peak RSS idle and during the burst;
//! 4. start-up: process start to the first scale patch;
//! 5. telemetry overhead: figure 1 (a) on the binary and throughput, with the collector
//!    healthy, stalled, absent, and no endpoint;
//! 6. size of the stripped release binary.
//!
//! No figure is asserted: the bench prints a table, writes JSON (and, in a full run, the
//! results section of `docs/benchmarks.md`), and fails only when it cannot run.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod latency;
mod machine;
mod process;
mod procfs;
mod report;
mod stats;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::latency::{Handler, InProcess, MessageShape};
use crate::process::CollectorState;
use crate::report::{
    BinarySize, BurstRow, LatencyRow, Results, Settings, StartupRow, TelemetryRow,
};
use crate::stats::Summary;

const USAGE: &str = "\
usage: bench [options]      (make bench, or cargo run --release -p bench -- [options])
  --quick                1 repetition, N = 1 and 10, 1,000-job bursts; writes no docs (CI:
                         `cargo run -p bench -- --quick` proves it runs, dev profile)
  --reps N               repetitions of every figure (default 5)
  --latency-ms L         latency injected on every call for figures 1 and 5a (default 20)
  --ns 1,10,50           message sizes N for figure 1
  --jobs N               jobs in the throughput / memory burst (default 10000)
  --telemetry-jobs N     jobs in each burst of figure 5 (default 5000)
  --only 1,2,3,4,5,6,7   run only these figures (7: the runtime-flavour experiment)
  --skip-build           use the existing release binary
  --listener PATH        use this ghalistener binary (implies --skip-build)
  --json PATH            where to write the JSON results
  --no-docs              do not rewrite docs/benchmarks.json and docs/benchmarks.md
";

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    reps: usize,
    latency: Duration,
    ns: Vec<usize>,
    jobs: usize,
    telemetry_jobs: usize,
    only: BTreeSet<u8>,
    skip_build: bool,
    listener: Option<PathBuf>,
    json: Option<PathBuf>,
    docs: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let quick = raw.iter().any(|a| a == "--quick");
    let mut args = Args {
        quick,
        reps: if quick { 1 } else { 5 },
        latency: Duration::from_millis(20),
        ns: if quick { vec![1, 10] } else { vec![1, 10, 50] },
        jobs: if quick { 1_000 } else { 10_000 },
        telemetry_jobs: if quick { 500 } else { 5_000 },
        only: (1..=7).collect(),
        skip_build: false,
        listener: None,
        json: None,
        docs: !quick,
    };
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {}
            "--reps" => args.reps = value("--reps")?.parse().context("--reps")?,
            "--latency-ms" => {
                args.latency =
                    Duration::from_millis(value("--latency-ms")?.parse().context("--latency-ms")?)
            }
            "--ns" => args.ns = comma_list(&value("--ns")?).context("--ns")?,
            "--jobs" => args.jobs = value("--jobs")?.parse().context("--jobs")?,
            "--telemetry-jobs" => {
                args.telemetry_jobs = value("--telemetry-jobs")?
                    .parse()
                    .context("--telemetry-jobs")?
            }
            "--only" => args.only = comma_list(&value("--only")?).context("--only")?,
            "--skip-build" => args.skip_build = true,
            "--listener" => args.listener = Some(PathBuf::from(value("--listener")?)),
            "--json" => args.json = Some(PathBuf::from(value("--json")?)),
            "--no-docs" => args.docs = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if args.reps == 0 || args.jobs == 0 || args.telemetry_jobs == 0 {
        bail!("--reps, --jobs and --telemetry-jobs must be at least 1");
    }
    if args.ns.iter().any(|&n| n == 0 || n > 50) {
        bail!("--ns: message sizes must be 1..=50");
    }
    Ok(args)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Whether this bench was built with the release profile (the figures are only meaningful
/// then; a dev-profile bench drives a dev-profile listener, which is what CI's smoke run does).
const RELEASE: bool = !cfg!(debug_assertions);

/// `cargo build [--release]` of `ghalistener` and `ghalistener-runtime-variant` in the
/// bench's own profile, then the binary next to the bench's.
fn build_listener(skip: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe.parent().context("bench binary directory")?;
    let binary = dir.join("ghalistener");
    if !skip {
        // Figure 7's variant too: it links the same crates, and a stale one measured an old
        // listener.
        let mut cargo_args = vec![
            "build",
            "-p",
            "listener-bin",
            "-p",
            "bench",
            "--bin",
            "ghalistener",
            "--bin",
            "ghalistener-runtime-variant",
        ];
        if RELEASE {
            cargo_args.push("--release");
        }
        eprintln!("bench: cargo {}", cargo_args.join(" "));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(&cargo_args)
            .current_dir(workspace_root())
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("cargo {} failed", cargo_args.join(" "));
        }
    }
    if !binary.is_file() {
        bail!(
            "{} not found; build it or drop --skip-build",
            binary.display()
        );
    }
    Ok(binary)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn summary(samples: &[f64]) -> anyhow::Result<Summary> {
    Summary::of(samples).context("no sample")
}

/// Measure one message, again when a stray empty poll overlapped it.
async fn measure(
    env: &simulator::workload::Environment,
    shape: MessageShape,
    next_id: &mut i64,
    latency: Duration,
) -> anyhow::Result<latency::Sample> {
    for _ in 0..3 {
        *next_id += 1_000;
        if let Some(sample) = latency::measure_message(env, shape, *next_id, latency).await? {
            return Ok(sample);
        }
    }
    bail!("three measurements in a row overlapped an empty poll")
}

fn statuses(samples: &[latency::Sample]) -> String {
    let mut all: Vec<u16> = samples
        .iter()
        .flat_map(|s| s.runner_patch_statuses.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

async fn figure_1(args: &Args, dir: &Path) -> anyhow::Result<Vec<LatencyRow>> {
    let handlers = [
        Handler::Listener {
            runner_patch_concurrency: scaler::ScalerConfig::DEFAULT_RUNNER_PATCH_CONCURRENCY,
        },
        Handler::Listener {
            runner_patch_concurrency: 50,
        },
        Handler::GoListenerOrder,
    ];
    let max_n = args.ns.iter().copied().max().unwrap_or(1);
    let mut setups = Vec::new();
    for (i, handler) in handlers.iter().enumerate() {
        let collector = process::Collector::start(CollectorState::Off).await?;
        let env = process::environment(
            &dir.join(format!("fig1-{i}")),
            &collector,
            200,
            Duration::from_secs(60),
        )
        .await?;
        latency::create_runners(&env.kube, max_n);
        let running = InProcess::start(&env, *handler, 200).await?;
        env.actions.set_latency(args.latency);
        env.kube.set_latency(args.latency);
        setups.push((*handler, env, running, Vec::new(), collector));
    }
    let mut next_id = 10_000_000;
    let mut rows = Vec::new();
    for &n in &args.ns {
        let shape = MessageShape {
            available: n,
            started: n,
            completed: 0,
        };
        for (_, env, _, outstanding, _) in setups.iter_mut() {
            latency::settle_assigned(env, n, outstanding).await?;
            // Warm-up: connections to both fakes for every concurrent request.
            measure(env, shape, &mut next_id, args.latency).await?;
        }
        let mut samples: Vec<Vec<latency::Sample>> = vec![Vec::new(); setups.len()];
        for _ in 0..args.reps {
            for (i, (_, env, _, _, _)) in setups.iter().enumerate() {
                samples[i].push(measure(env, shape, &mut next_id, args.latency).await?);
            }
        }
        for (i, (handler, _, _, _, _)) in setups.iter().enumerate() {
            let s = &samples[i];
            let scale: Vec<f64> = s.iter().map(|x| ms(x.scale)).collect();
            let done: Vec<f64> = s.iter().map(|x| ms(x.done)).collect();
            let row = LatencyRow {
                handler: handler.label(),
                n,
                scale_ms: summary(&scale)?,
                done_ms: summary(&done)?,
                runner_patch_statuses: statuses(s),
            };
            eprintln!(
                "bench: fig 1 N={n} {}: scale {:.1} ms, done {:.1} ms",
                row.handler, row.scale_ms.median, row.done_ms.median
            );
            rows.push(row);
        }
    }
    for (_, env, running, _, _) in setups {
        env.actions.set_latency(Duration::ZERO);
        env.kube.set_latency(Duration::ZERO);
        running.stop().await?;
    }
    Ok(rows)
}

async fn figures_3_4(
    args: &Args,
    binary: &Path,
    dir: &Path,
    ticks: u64,
) -> anyhow::Result<StartupRow> {
    let idle_for = if args.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let mut startup = Vec::new();
    let mut idle_rss = Vec::new();
    let mut idle_peak = Vec::new();
    for rep in 0..args.reps {
        let s =
            process::startup(binary, &dir.join(format!("startup-{rep}")), idle_for, ticks).await?;
        startup.push(ms(s.to_first_scale_patch));
        idle_rss.push(mib(s.idle.rss));
        idle_peak.push(mib(s.idle.peak_rss));
    }
    let row = StartupRow {
        startup_ms: summary(&startup)?,
        idle_rss_mib: summary(&idle_rss)?,
        idle_peak_rss_mib: summary(&idle_peak)?,
        idle_after_s: idle_for.as_secs_f64(),
    };
    eprintln!(
        "bench: fig 4 start-up {:.1} ms; fig 3 idle RSS {:.2} MiB (peak {:.2})",
        row.startup_ms.median, row.idle_rss_mib.median, row.idle_peak_rss_mib.median
    );
    Ok(row)
}

#[allow(clippy::too_many_arguments)]
async fn bursts(
    args: &Args,
    binary: &Path,
    extra_env: &[(String, String)],
    label: &str,
    dir: &Path,
    jobs: usize,
    state: CollectorState,
    ticks: u64,
) -> anyhow::Result<BurstRow> {
    let mut samples = Vec::new();
    for rep in 0..args.reps {
        let dir = dir.join(format!("burst-{label}-{state:?}-{rep}"));
        samples.push(process::burst(binary, extra_env, &dir, jobs, state, ticks).await?);
    }
    let f = |g: &dyn Fn(&process::BurstSample) -> f64| -> anyhow::Result<Summary> {
        summary(&samples.iter().map(g).collect::<Vec<_>>())
    };
    let row = BurstRow {
        collector: state.label().into(),
        jobs,
        messages: samples.first().map_or(0, |s| s.messages),
        jobs_per_s: f(&|s| s.jobs_per_second())?,
        messages_per_s: f(&|s| s.messages_per_second())?,
        cpu_us_per_job: f(&|s| s.cpu_micros_per_job())?,
        context_switches_per_job: f(&|s| s.context_switches_per_job())?,
        wall_s: f(&|s| s.elapsed.as_secs_f64())?,
        peak_rss_mib: f(&|s| mib(s.peak_rss))?,
        rss_before_mib: f(&|s| mib(s.idle_before.rss))?,
        spans_received: samples.first().and_then(|s| s.spans_received),
        spans: samples.first().and_then(|s| s.spans),
    };
    eprintln!(
        "bench: burst of {jobs} jobs, {}: {:.0} jobs/s, {:.0} msg/s, {:.1} us CPU/job, peak RSS {:.2} MiB",
        row.collector,
        row.jobs_per_s.median,
        row.messages_per_s.median,
        row.cpu_us_per_job.median,
        row.peak_rss_mib.median
    );
    Ok(row)
}

async fn figure_5a(
    args: &Args,
    binary: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<(CollectorState, Summary, Summary)>> {
    let n = args.ns.iter().copied().max().unwrap_or(1);
    let shape = MessageShape {
        available: n,
        started: n,
        completed: n,
    };
    let mut targets = Vec::new();
    for state in CollectorState::ALL {
        let target =
            process::LatencyTarget::start(binary, &dir.join(format!("fig5a-{state:?}")), state, n)
                .await?;
        target.env.actions.set_latency(args.latency);
        target.env.kube.set_latency(args.latency);
        targets.push((state, target, Vec::new()));
    }
    let mut next_id = 20_000_000;
    for (_, target, outstanding) in targets.iter_mut() {
        latency::settle_assigned(&target.env, n, outstanding).await?;
        measure(&target.env, shape, &mut next_id, args.latency).await?;
    }
    let mut samples: Vec<Vec<latency::Sample>> = vec![Vec::new(); targets.len()];
    for _ in 0..args.reps {
        for (i, (_, target, _)) in targets.iter_mut().enumerate() {
            target.listener.check_alive()?;
            samples[i].push(measure(&target.env, shape, &mut next_id, args.latency).await?);
        }
    }
    let mut rows = Vec::new();
    for (i, (state, target, _)) in targets.into_iter().enumerate() {
        let scale: Vec<f64> = samples[i].iter().map(|x| ms(x.scale)).collect();
        let done: Vec<f64> = samples[i].iter().map(|x| ms(x.done)).collect();
        rows.push((state, summary(&scale)?, summary(&done)?));
        target.env.actions.set_latency(Duration::ZERO);
        target.env.kube.set_latency(Duration::ZERO);
        target.listener.stop().await?;
    }
    Ok(rows)
}

fn binary_size(binary: &Path) -> anyhow::Result<BinarySize> {
    let bytes = std::fs::metadata(binary)?.len();
    // The release profile strips; `file` confirms it when present.
    let described = std::process::Command::new("file")
        .arg("-b")
        .arg(binary)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Ok(BinarySize {
        bytes,
        mib: mib(bytes),
        stripped: described.is_empty() || described.contains(", stripped"),
        file: described,
    })
}

async fn run(args: Args) -> anyhow::Result<Results> {
    let started = Instant::now();
    let load_at_start = machine::load_average();
    let binary = match &args.listener {
        Some(path) => path.clone(),
        None => build_listener(args.skip_build)?,
    };
    let ticks = procfs::clock_ticks();
    let scratch = tempfile::Builder::new()
        .prefix("ghalistener-bench")
        .tempdir()?;
    let dir = scratch.path();
    if !RELEASE {
        eprintln!(
            "bench: built without --release: a smoke run, the figures are not representative"
        );
    }
    let mut results = Results::new(
        &format!(
            "{}{}",
            if args.quick { "quick" } else { "full" },
            if RELEASE {
                ""
            } else {
                ", dev profile (not representative)"
            }
        ),
        Settings {
            reps: args.reps,
            latency_ms: ms(args.latency),
            ns: args.ns.clone(),
            jobs: args.jobs,
            telemetry_jobs: args.telemetry_jobs,
        },
    );
    if args.only.contains(&6) {
        results.binary = Some(binary_size(&binary)?);
    }
    if args.only.contains(&1) {
        results.latency = figure_1(&args, dir).await?;
    }
    if args.only.contains(&3) || args.only.contains(&4) {
        results.startup = Some(figures_3_4(&args, &binary, dir, ticks).await?);
    }
    if args.only.contains(&2) || args.only.contains(&3) {
        results.burst = Some(
            bursts(
                &args,
                &binary,
                &[],
                "ghalistener",
                dir,
                args.jobs,
                CollectorState::Healthy,
                ticks,
            )
            .await?,
        );
    }
    if args.only.contains(&5) {
        let latencies = figure_5a(&args, &binary, dir).await?;
        for (state, scale_ms, done_ms) in latencies {
            let burst = bursts(
                &args,
                &binary,
                &[],
                "ghalistener",
                dir,
                args.telemetry_jobs,
                state,
                ticks,
            )
            .await?;
            results.telemetry.push(TelemetryRow {
                collector: state.label().into(),
                scale_ms,
                done_ms,
                burst,
            });
        }
    }
    if args.only.contains(&7) {
        let variant = binary.with_file_name("ghalistener-runtime-variant");
        if variant.is_file() {
            for flavour in [
                "block_on",
                "spawned",
                "current_thread",
                "current_thread+warn",
            ] {
                let (runtime, log) = flavour.split_once('+').unwrap_or((flavour, ""));
                let mut env = vec![("GHALISTENER_BENCH_RUNTIME".to_owned(), runtime.to_owned())];
                if !log.is_empty() {
                    env.push(("RUST_LOG".to_owned(), log.to_owned()));
                }
                let mut burst = bursts(
                    &args,
                    &variant,
                    &env,
                    flavour,
                    dir,
                    args.telemetry_jobs,
                    CollectorState::Healthy,
                    ticks,
                )
                .await?;
                burst.collector = flavour.into();
                results.runtime.push(burst);
            }
        } else {
            eprintln!(
                "bench: {} not built; skipping the runtime experiment",
                variant.display()
            );
        }
    }
    results.finish(machine::Machine::describe(load_at_start), started.elapsed());
    Ok(results)
}

/// `a,b,c` parsed item by item, spaces around items allowed.
fn comma_list<T: std::str::FromStr, C: FromIterator<T>>(text: &str) -> Result<C, T::Err> {
    text.split(',').map(|n| n.trim().parse::<T>()).collect()
}

fn main() -> ExitCode {
    let Ok(args) = parse_args().inspect_err(|e| eprintln!("bench: {e:#}")) else {
        return ExitCode::from(2);
    };
    let Some(runtime) = simulator::support::driver_runtime("bench") else {
        return ExitCode::FAILURE;
    };
    let quick = args.quick;
    let json = args.json.clone();
    let docs = args.docs;
    let results = match runtime.block_on(run(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot run: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report::table(&results));
    let root = workspace_root();
    let json_path = json.or_else(|| (docs && RELEASE).then(|| root.join("docs/benchmarks.json")));
    let written = (|| -> anyhow::Result<()> {
        if let Some(path) = &json_path {
            std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("bench: wrote {}", path.display());
        }
        if docs && !quick && RELEASE {
            let md = root.join("docs/benchmarks.md");
            report::update_markdown(&md, &results)?;
            eprintln!("bench: updated {}", md.display());
        }
        Ok(())
    })();
    if let Err(e) = written {
        eprintln!("bench: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
