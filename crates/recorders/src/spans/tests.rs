use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use github_client::JobCompleted;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus::Registry;
use prost::Message as _;

use super::build::{Scratch, SpanBatch};
use super::otlp_http::ExportError;
use super::*;

#[path = "../../tests/common/jobs.rs"]
mod jobs;
use jobs::completed;

fn settings(scheme: IdScheme) -> OtelSettings {
    OtelSettings::resolve(Some("127.0.0.1:9"), true, scheme, &HashMap::new())
        .unwrap()
        .unwrap()
}

/// The spans of an encoded export request, decoded with the generated OTLP types.
fn decode(request: &[u8]) -> Vec<Span> {
    let request = ExportTraceServiceRequest::decode(request).unwrap();
    request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

/// Collects exported spans; optionally hangs forever.
#[derive(Debug, Clone, Default)]
struct FakeExporter {
    spans: Arc<Mutex<Vec<Span>>>,
    calls: Arc<AtomicUsize>,
    hang: bool,
}

impl otlp_http::Transport for FakeExporter {
    async fn send(&self, request: Vec<u8>) -> Result<(), ExportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.spans.lock().unwrap().extend(decode(&request));
        Ok(())
    }
}

/// A recorder exporting to `exporter`, its counters on a registry of its own.
fn recorder(exporter: FakeExporter, settings: &OtelSettings) -> SpanRecorder {
    let metrics = PipelineMetrics::register(&Registry::new()).unwrap();
    SpanRecorder::with_transport(
        exporter,
        Vec::new(),
        settings,
        metrics,
        &tokio::runtime::Handle::current(),
    )
}

/// A job's spans as they go on the wire.
fn job_spans(r: &SpanRecorder, job: &JobCompleted, attempt: u32) -> Vec<Span> {
    let mut batch = SpanBatch::default();
    r.spans
        .write_job(job, attempt, &mut batch, &mut Scratch::default());
    let spans = decode(&encode::export_request(&[], &[], &batch.encoded));
    assert_eq!(spans.len(), batch.count);
    spans
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// `Status.code`: 0 unset, 2 error.
fn status_code(span: &Span) -> i32 {
    span.status.as_ref().map_or(0, |s| s.code)
}

fn unix_nanos(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos()).unwrap()
}

#[tokio::test]
async fn completed_job_gives_three_spans_with_exact_times_ids_and_attributes() {
    let exporter = FakeExporter::default();
    let r = recorder(exporter.clone(), &settings(IdScheme::OtelExplorer));
    let spans = job_spans(&r, &completed("failed"), 1);
    assert_eq!(
        spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        [SPAN_QUEUE, SPAN_STARTUP, SPAN_EXECUTION]
    );
    let job = completed("failed");
    let c = &job.common;
    let times = [
        (c.queue_time, c.scale_set_assign_time),
        (c.scale_set_assign_time, c.runner_assign_time),
        (c.runner_assign_time, c.finish_time),
    ];
    for (span, (start, end)) in spans.iter().zip(times) {
        assert_eq!(
            span.start_time_unix_nano,
            unix_nanos(start.unwrap()),
            "{}",
            span.name
        );
        assert_eq!(
            span.end_time_unix_nano,
            unix_nanos(end.unwrap()),
            "{}",
            span.name
        );
        assert_eq!(hex(&span.trace_id), "3d7e2f2ea4fca7a337339f10a2f0954e");
        assert_eq!(hex(&span.parent_span_id), "0000000000010932");
        // Flags: sampled, and the parent known to be remote.
        assert_eq!(span.flags, 0x301);
        assert_eq!(span.kind, 1, "SPAN_KIND_INTERNAL");
        assert_eq!(attr(span, "type"), Some(&s(&span.name)));
        assert_eq!(attr(span, "github.run_id"), Some(&Value::IntValue(12345)));
        assert_eq!(attr(span, "github.job_id"), Some(&s("67890")));
        assert_eq!(attr(span, "github.job_name"), Some(&s("build")));
        assert_eq!(attr(span, "github.repository"), Some(&s("acme/widgets")));
        assert_eq!(attr(span, "github.runner_name"), Some(&s("arc-runner-x")));
        assert_eq!(attr(span, "github.runner_id"), Some(&Value::IntValue(42)));
        assert_eq!(attr(span, "github.event_name"), Some(&s("push")));
        assert_eq!(attr(span, "cicd.pipeline.name"), Some(&s("ci")));
        assert_eq!(attr(span, "cicd.pipeline.run.id"), Some(&s("12345")));
        assert_eq!(attr(span, "cicd.pipeline.task.name"), Some(&s("build")));
        assert_eq!(attr(span, "cicd.worker.name"), Some(&s("arc-runner-x")));
        assert_eq!(attr(span, "cicd.worker.id"), Some(&s("42")));
        assert_eq!(
            attr(span, "vcs.repository.url.full"),
            Some(&s("https://github.com/acme/widgets"))
        );
        assert_eq!(attr(span, "vcs.ref.head.name"), Some(&s("main")));
    }
    assert_eq!(hex(&spans[0].span_id), "5c1be415b6ce8e25");
    // queue → 10:00:00.123456789, nanosecond exact.
    assert_eq!(spans[0].start_time_unix_nano % 1_000_000_000, 123_456_789);
    let exec = &spans[2];
    assert_eq!(attr(exec, "github.conclusion"), Some(&s("failed")));
    assert_eq!(
        attr(exec, "cicd.pipeline.task.run.result"),
        Some(&s("failure"))
    );
    assert_eq!(status_code(exec), 2);
    assert_eq!(exec.status.as_ref().unwrap().message, "failed");
    assert_eq!(status_code(&spans[0]), 0);
    assert!(attr(&spans[0], "github.conclusion").is_none());

    let ok = job_spans(&r, &completed("succeeded"), 1);
    assert_eq!(status_code(&ok[2]), 0);
    assert_eq!(
        attr(&ok[2], "cicd.pipeline.task.run.result"),
        Some(&s("success"))
    );
    r.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn spans_are_skipped_when_a_time_is_missing() {
    let r = recorder(FakeExporter::default(), &settings(IdScheme::RunnerContract));
    let names = |job: &JobCompleted| -> Vec<String> {
        job_spans(&r, job, 1).into_iter().map(|s| s.name).collect()
    };
    let mut job = completed("canceled");
    job.common.runner_assign_time = None;
    assert_eq!(names(&job), [SPAN_QUEUE]);
    let mut job = completed("succeeded");
    job.common.queue_time = None;
    assert_eq!(names(&job), [SPAN_STARTUP, SPAN_EXECUTION]);
    let mut job = completed("succeeded");
    job.common.finish_time = None;
    assert_eq!(names(&job), [SPAN_QUEUE, SPAN_STARTUP]);
    let mut job = completed("succeeded");
    job.common.scale_set_assign_time = None;
    assert_eq!(names(&job), [SPAN_EXECUTION]);
    assert!(names(&JobCompleted::default()).is_empty());
    // Cancelled executions are not errors.
    let spans = job_spans(&r, &completed("canceled"), 1);
    assert_eq!(status_code(&spans[2]), 0);
    assert_eq!(
        attr(&spans[2], "cicd.pipeline.task.run.result"),
        Some(&s("cancellation"))
    );
}

#[test]
fn result_mapping() {
    let table = [
        ("succeeded", Some("success")),
        ("Succeeded", Some("success")),
        ("failed", Some("failure")),
        ("canceled", Some("cancellation")),
        ("cancelled", Some("cancellation")),
        ("skipped", Some("skip")),
        ("timedout", Some("timeout")),
        ("abandoned", Some("error")),
        ("", None),
    ];
    for (input, want) in table {
        assert_eq!(map_job_result(input), want, "{input}");
    }
}

#[tokio::test]
async fn records_are_batched_and_exported_in_the_background() {
    let exporter = FakeExporter::default();
    let mut s = settings(IdScheme::OtelExplorer);
    s.max_batch_size = 10;
    s.batch_interval = Duration::from_millis(50);
    let r = recorder(exporter.clone(), &s);
    for _ in 0..7 {
        r.record_job_completed(&completed("succeeded"));
    }
    r.shutdown(Duration::from_secs(10)).await;
    assert_eq!(exporter.spans.lock().unwrap().len(), 21);
    assert!(exporter.calls.load(Ordering::SeqCst) >= 3);
    assert_eq!(r.export.metrics.exported.get(), 21);
    assert_eq!(r.export.metrics.pending.get(), 0);
    // After shutdown, records are dropped and counted, never exported.
    r.record_job_completed(&completed("succeeded"));
    assert_eq!(r.export.metrics.dropped_shutdown.get(), 3);
    r.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_hung_exporter_neither_blocks_records_nor_shutdown() {
    let exporter = FakeExporter {
        hang: true,
        ..Default::default()
    };
    let mut s = settings(IdScheme::OtelExplorer);
    s.queue_capacity = 64;
    s.max_batch_size = 16;
    s.timeout = Duration::from_secs(600);
    let r = recorder(exporter.clone(), &s);
    for _ in 0..1000 {
        r.record_job_completed(&completed("succeeded"));
    }
    let started = std::time::Instant::now();
    r.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let m = &r.export.metrics;
    assert!(m.dropped_queue_full.get() > 0);
    assert_eq!(m.exported.get(), 0);
    assert_eq!(m.pending.get(), 0);
    assert_eq!(
        m.dropped_queue_full.get() + m.dropped_shutdown.get() + m.failed.get(),
        3000
    );
}

/// Answers each run's attempt from a table once `release` is notified (or at once).
struct ScriptedLookup {
    attempts: HashMap<i64, u32>,
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<tokio::sync::Notify>>,
}

impl RunAttemptLookup for ScriptedLookup {
    fn resolve(
        &self,
        _owner: &str,
        _repo: &str,
        run_id: i64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = github_client::ResolvedAttempt> + Send>>
    {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let outcome = match self.attempts.get(&run_id) {
            Some(n) => github_client::RunAttemptOutcome::Ok(*n),
            None => github_client::RunAttemptOutcome::NotFound,
        };
        let gate = self.gate.clone();
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            github_client::ResolvedAttempt {
                outcome,
                cached: false,
            }
        })
    }
}

fn job_of_run(run: i64, request_id: i64) -> JobCompleted {
    let mut job = completed("succeeded");
    job.common.workflow_run_id = run;
    job.common.runner_request_id = request_id;
    job.common.job_id = format!("{}", 1000 + request_id);
    job
}

fn started_of(job: &JobCompleted) -> github_client::JobStarted {
    github_client::JobStarted {
        common: job.common.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn spans_use_the_attempt_looked_up_at_the_start_in_both_schemes() {
    for scheme in [IdScheme::OtelExplorer, IdScheme::RunnerContract] {
        let exporter = FakeExporter::default();
        let r = recorder(exporter.clone(), &settings(scheme));
        let calls = Arc::new(AtomicUsize::new(0));
        r.set_run_attempt_lookup(Arc::new(ScriptedLookup {
            attempts: HashMap::from([(200, 2), (300, 3)]),
            calls: calls.clone(),
            gate: None,
        }));
        let (two, three, unknown) = (job_of_run(200, 1), job_of_run(300, 2), job_of_run(400, 3));
        for job in [&two, &three, &unknown] {
            r.record_job_started(&started_of(job));
        }
        for job in [&two, &three, &unknown] {
            r.record_job_completed(job);
        }
        // A completion whose start was not seen looks up then.
        r.record_job_completed(&job_of_run(300, 9));
        // Shutdown ends the waits at once; wait until the background export has them all.
        while exporter.spans.lock().unwrap().len() < 12 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        r.shutdown(Duration::from_secs(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let spans = exporter.spans.lock().unwrap().clone();
        assert_eq!(spans.len(), 12);
        for (job, attempt) in [(&two, 2), (&three, 3), (&unknown, 1)] {
            let want = job_span_ids(scheme, &job.common, attempt, SPAN_EXECUTION);
            let span = spans
                .iter()
                .find(|s| s.span_id == want.span_id.to_bytes())
                .unwrap_or_else(|| {
                    panic!("{scheme}: no span of run {}", job.common.workflow_run_id)
                });
            assert_eq!(span.trace_id, want.trace_id.to_bytes());
            assert_eq!(span.parent_span_id, want.parent_span_id.to_bytes());
            assert_eq!(
                attr(span, "github.run_attempt"),
                Some(&Value::IntValue(i64::from(attempt)))
            );
            let url = format!(
                "https://github.com/acme/widgets/actions/runs/{}/attempts/{attempt}",
                job.common.workflow_run_id
            );
            assert_eq!(attr(span, "cicd.pipeline.run.url.full"), Some(&s(&url)));
        }
        assert_eq!(
            r.trace_ids().trace_id(300),
            run_trace_id(scheme, 300, 3),
            "exemplars use the resolved attempt"
        );
        let m = &r.export.metrics.run_attempt_lookups;
        assert_eq!(m.with_label_values(&["ok"]).get(), 3);
        assert_eq!(m.with_label_values(&["not_found"]).get(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_lookup_that_never_answers_gives_attempt_one_after_the_wait() {
    let exporter = FakeExporter::default();
    let r = recorder(exporter.clone(), &settings(IdScheme::OtelExplorer));
    let gate = Arc::new(tokio::sync::Notify::new());
    r.set_run_attempt_lookup(Arc::new(ScriptedLookup {
        attempts: HashMap::from([(200, 2)]),
        calls: Arc::default(),
        gate: Some(gate.clone()),
    }));
    let job = job_of_run(200, 1);
    let before = tokio::time::Instant::now();
    r.record_job_started(&started_of(&job));
    r.record_job_completed(&job);
    assert_eq!(r.export.metrics.pending.get(), 3, "counted while it waits");
    // Paused time: the wait's deadline passes as soon as everything else is idle.
    while exporter.spans.lock().unwrap().len() < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(tokio::time::Instant::now() >= before + RUN_ATTEMPT_WAIT);
    let span = exporter.spans.lock().unwrap()[0].clone();
    assert_eq!(
        span.trace_id,
        run_trace_id(IdScheme::OtelExplorer, 200, 1).to_bytes()
    );
    r.shutdown(Duration::from_secs(1)).await;
    assert_eq!(r.export.metrics.pending.get(), 0);
}
