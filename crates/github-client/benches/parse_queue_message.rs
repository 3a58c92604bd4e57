//! CPU per job of `parse_queue_message` on a full batch as the Actions service sends it:
//! 50 job messages (available, started and completed mixed), every common field filled,
//! RFC 3339 times with 7 fractional digits as .NET writes them.
//!
//! `cargo bench -p github-client --bench parse_queue_message` prints ns per job: the CPU
//! time of the whole run (from /proc/self/stat, 10 ms ticks over about a second, so within
//! about 1 %; the figure to compare on a machine shared with other work), the wall time of
//! the whole run, and the wall time of the fastest round. Under `cargo test` (no `--bench`
//! argument) it parses the batch once and checks the result, so the tests stay fast.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::hint::black_box;
use std::time::{Duration, Instant};

use github_client::messages::{JobMessage, parse_queue_message};
use serde_json::{Value, json};

const JOBS: usize = 50;
const ROUNDS: usize = 20;
const MESSAGES_PER_ROUND: usize = 200;

fn batch() -> Vec<u8> {
    let items: Vec<Value> = (0..JOBS)
        .map(|i| {
            let id = 4_000_000 + i as i64;
            let kind = ["JobAvailable", "JobStarted", "JobCompleted"][i % 3];
            let mut job = json!({
                "messageType": kind,
                "runnerRequestId": id,
                "repositoryName": "payments-service",
                "ownerName": "contoso",
                "jobId": format!("8f0c2b5e-6b1a-5d3e-9c4f-{:012x}", id),
                "jobWorkflowRef": "contoso/payments-service/.github/workflows/ci.yml@refs/heads/main",
                "jobDisplayName": format!("build (ubuntu-latest, {i})"),
                "workflowRunId": 9_876_543_210i64 + i as i64,
                "eventName": "pull_request",
                "requestLabels": ["self-hosted", "linux", "x64"],
                "queueTime": "2026-01-01T10:00:00.1234567Z",
                "scaleSetAssignTime": "2026-01-01T10:00:00.4567891Z",
                "runnerAssignTime": "0001-01-01T00:00:00Z",
                "finishTime": "0001-01-01T00:00:00Z",
            });
            match kind {
                "JobAvailable" => {
                    job["acquireJobUrl"] = json!(format!(
                        "https://broker.actions.githubusercontent.com/acquirejob/{id}"
                    ));
                }
                _ => {
                    job["runnerId"] = json!(1000 + i);
                    job["runnerName"] = json!(format!("arc-runner-set-x7k2p-runner-{i:05}"));
                    job["runnerAssignTime"] = json!("2026-01-01T10:00:03.7654321Z");
                    if kind == "JobCompleted" {
                        job["result"] = json!("succeeded");
                        job["finishTime"] = json!("2026-01-01T10:04:12.0000001Z");
                    }
                }
            }
            job
        })
        .collect();
    json!({
        "messageId": 1234,
        "messageType": "RunnerScaleSetJobMessages",
        "body": Value::from(items).to_string(),
        "statistics": {
            "totalAvailableJobs": 17, "totalAcquiredJobs": 0, "totalAssignedJobs": 50,
            "totalRunningJobs": 33, "totalRegisteredRunners": 40, "totalBusyRunners": 33,
            "totalIdleRunners": 7
        },
    })
    .to_string()
    .into_bytes()
}

fn main() {
    let raw = batch();
    let message = parse_queue_message(&raw).expect("the batch parses");
    assert_eq!(message.jobs.len(), JOBS);
    assert_eq!(message.skipped_jobs, 0);
    assert!(matches!(message.jobs[2], JobMessage::Completed(_)));
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Warm caches and the allocator before measuring.
    for _ in 0..MESSAGES_PER_ROUND {
        black_box(parse_queue_message(black_box(&raw)).expect("parses"));
    }
    // PARSE_BENCH_ROUNDS=1 keeps a run under valgrind (instruction counts) short.
    let rounds = std::env::var("PARSE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let cpu_start = cpu_ticks();
    let mut total = Duration::ZERO;
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..MESSAGES_PER_ROUND {
            black_box(parse_queue_message(black_box(&raw)).expect("parses"));
        }
        let round = start.elapsed();
        total += round;
        best = best.min(round);
    }
    let cpu = cpu_ticks().zip(cpu_start).map(|(end, start)| end - start);
    let messages = rounds * MESSAGES_PER_ROUND;
    let per_job = |d: Duration, messages: usize| d.as_nanos() as f64 / (messages * JOBS) as f64;
    // Linux counts CPU time in ticks of 10 ms (USER_HZ = 100).
    let cpu = cpu.map_or("n/a".to_owned(), |ticks| {
        format!(
            "{:.0}",
            per_job(Duration::from_millis(ticks * 10), messages)
        )
    });
    println!(
        "parse_queue_message, {} bytes, {JOBS} jobs, {messages} messages: ns per job: cpu {cpu}, wall {:.0}, best round {:.0}",
        raw.len(),
        per_job(total, messages),
        per_job(best, MESSAGES_PER_ROUND),
    );
}

/// User plus system CPU time of this process in clock ticks, where /proc has it.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may hold spaces: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}
