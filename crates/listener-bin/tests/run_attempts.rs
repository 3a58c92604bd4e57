//! The real binary resolves run attempts on the fake's runs endpoint: re-runs land in their
//! attempts' traces under both id schemes, a 404 falls back to attempt 1, one lookup per
//! run, and a slow lookup does not hold up the message's work.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use md5::{Digest as _, Md5};
use sha2::Sha256;
use simulator::actions::{Endpoint, FakeJob, Fault};
use simulator::otlp_sink::{OtlpSink, ReceivedSpan};
use simulator::support::{
    ListenerProcess, environment_command, http_get, observed_environment, wait_until,
};
use simulator::workload::Environment;

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");
const WAIT: Duration = Duration::from_secs(30);

fn trace_id(scheme: &str, run: i64, attempt: u32) -> String {
    let key = format!("{run}-{attempt}");
    match scheme {
        "runner-contract" => hex::encode(&Sha256::digest(key.as_bytes())[..16]),
        _ => hex::encode(Md5::digest(key.as_bytes())),
    }
}

/// `GET /metrics` with `Accept: {accept}`; the whole response.
async fn scrape(addr: SocketAddr, accept: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// The trace ids of the exemplars on `metric`'s buckets.
fn exemplar_trace_ids(exposition: &str, metric: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}_bucket")))
        .filter_map(|l| l.split_once("# {trace_id=\"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect()
}

async fn start(scheme: &str, dir: &std::path::Path) -> (Environment, OtlpSink, ListenerProcess) {
    let (env, sink) = observed_environment(dir).await.expect("environment");
    let mut command = environment_command(LISTENER, &env);
    command.env("GHALISTENER_OTEL_ID_SCHEME", scheme);
    let child = ListenerProcess::start(command, &dir.join("listener.log"), None).expect("spawn");
    (env, sink, child)
}

fn job(run: i64, name: &str) -> FakeJob {
    FakeJob {
        workflow_run_id: run,
        job_display_name: name.into(),
        ..FakeJob::default()
    }
}

/// Queue `jobs`, wait until the listener acquired them, start them all.
async fn queue_and_start(env: &Environment, jobs: &[FakeJob], log: &ListenerProcess) -> Vec<i64> {
    let before = env.actions.stats().jobs_acquired;
    let ids: Vec<i64> = jobs
        .iter()
        .map(|j| env.actions.queue_job(j.clone()))
        .collect();
    let want = before + ids.len() as u64;
    assert!(
        wait_until(WAIT, || env.actions.stats().jobs_acquired >= want).await,
        "jobs not acquired; log:\n{}",
        log.tail(40)
    );
    for (i, id) in ids.iter().enumerate() {
        assert!(env.actions.start_job(*id, &format!("runner-{id}-{i}")));
    }
    ids
}

fn lookups_of(env: &Environment, run: i64) -> usize {
    let suffix = format!("/actions/runs/{run}");
    env.actions
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::WorkflowRun) && r.path.ends_with(&suffix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_land_in_their_attempts_traces_under_both_schemes() {
    for scheme in ["otel-explorer", "runner-contract"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (env, sink, mut child) = start(scheme, dir.path()).await;
        env.actions.set_run_attempt(200, 2);
        env.actions.set_run_attempt(300, 3);
        env.actions.set_run_attempt(400, 5);
        // Run 400's lookup is answered 404 (a token without access): attempt 1.
        env.actions.inject_fault(
            Endpoint::WorkflowRun,
            Fault {
                status: Some(404),
                ..Fault::default()
            },
        );
        let ids = queue_and_start(&env, &[job(400, "lint")], &child).await;
        assert!(wait_until(WAIT, || lookups_of(&env, 400) == 1).await);
        env.actions.complete_job(ids[0], "succeeded");
        // Two jobs of run 200 and one of run 300.
        let ids = queue_and_start(
            &env,
            &[job(200, "build"), job(200, "test"), job(300, "build")],
            &child,
        )
        .await;
        for id in ids {
            env.actions.complete_job(id, "succeeded");
        }
        let spans = sink.wait_for_spans(12, WAIT).await;
        assert_eq!(spans.len(), 12, "{}", child.tail(40));
        let of_run = |run: i64| -> Vec<&ReceivedSpan> {
            spans
                .iter()
                .filter(|s| s.attribute("github.run_id") == Some(&run.to_string()))
                .collect()
        };
        for (run, attempt, count) in [(200, 2, 6), (300, 3, 3), (400, 1, 3)] {
            let run_spans = of_run(run);
            assert_eq!(run_spans.len(), count, "{scheme} run {run}");
            for span in run_spans {
                assert_eq!(
                    span.trace_id,
                    trace_id(scheme, run, attempt),
                    "{scheme} {run}"
                );
                assert_eq!(
                    span.attribute("github.run_attempt"),
                    Some(attempt.to_string().as_str())
                );
                let url = span.attribute("cicd.pipeline.run.url.full").unwrap_or("");
                assert!(
                    url.ends_with(&format!(
                        "/my-org/my-repo/actions/runs/{run}/attempts/{attempt}"
                    )),
                    "{url}"
                );
            }
        }
        if scheme == "runner-contract" {
            let build = of_run(300)[0];
            let parent = hex::encode(&Sha256::digest(b"job-300-3-build")[..8]);
            assert_eq!(build.parent_span_id, parent);
        }
        // One lookup per run, though run 200 had two jobs, each started and completed.
        for run in [200, 300, 400] {
            assert_eq!(lookups_of(&env, run), 1, "{scheme} run {run}");
        }
        // Exemplars: the job-duration buckets link to the traces the spans went to.
        let metrics_addr = env.options.metrics_addr.unwrap();
        let open = scrape(
            metrics_addr,
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2",
        )
        .await;
        assert!(
            open.contains("application/openmetrics-text") && open.trim_end().ends_with("# EOF"),
            "{open}"
        );
        let traces: BTreeSet<String> = spans.iter().map(|s| s.trace_id.clone()).collect();
        for metric in [
            "gha_job_startup_duration_seconds",
            "gha_job_execution_duration_seconds",
        ] {
            let linked = exemplar_trace_ids(&open, metric);
            assert!(!linked.is_empty(), "{metric}: no exemplar\n{open}");
            assert!(
                linked.is_subset(&traces),
                "{metric}: {linked:?} vs {traces:?}"
            );
        }
        let classic = http_get(metrics_addr, "/metrics").await;
        assert!(
            !classic.contains("trace_id") && !classic.contains("# EOF"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE gha_started_jobs_total counter"),
            "{classic}"
        );
        let warnings = child
            .output()
            .lines()
            .filter(|l| l.contains("Actions: read"))
            .count();
        assert_eq!(warnings, 1, "one warning naming the permission");
        child.terminate(WAIT).await.expect("sigterm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lookup_does_not_hold_up_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (env, sink, mut child) = start("otel-explorer", dir.path()).await;
    env.actions.set_run_attempt(500, 2);
    env.actions.inject_fault(
        Endpoint::WorkflowRun,
        Fault::delay(Duration::from_millis(1500), 1),
    );
    let id = env.actions.queue_job(job(500, "build"));
    // The JobAvailable and JobAssigned messages handled and acknowledged.
    assert!(
        wait_until(WAIT, || {
            let s = env.actions.stats();
            s.jobs_acquired == 1
                && s.messages_acked >= 2
                && s.messages_acked == s.messages_delivered - s.messages_redelivered
        })
        .await,
        "{}",
        child.tail(40)
    );
    let before = env.actions.requests().len();
    assert!(env.actions.start_job(id, "runner-500"));
    assert!(wait_until(WAIT, || lookups_of(&env, 500) == 1).await);
    // The log is in order of completion: the JobStarted message was acknowledged (in the
    // same round as its scale and runner patches, which the next poll waits for) before
    // the lookup it started was answered.
    let after: Vec<_> = env.actions.requests().split_off(before);
    let lookup = after
        .iter()
        .position(|r| r.endpoint == Some(Endpoint::WorkflowRun))
        .unwrap();
    let ack = after
        .iter()
        .position(|r| r.endpoint == Some(Endpoint::DeleteMessage));
    assert!(ack.is_some_and(|ack| ack < lookup), "{after:#?}");
    let ids = [id];
    assert!(
        env.kube
            .requests()
            .iter()
            .any(|r| r.path.contains("/status")),
        "runner patch"
    );
    env.actions.complete_job(ids[0], "succeeded");
    let spans = sink.wait_for_spans(3, WAIT).await;
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id == trace_id("otel-explorer", 500, 2))
    );
    child.terminate(WAIT).await.expect("sigterm");
}
