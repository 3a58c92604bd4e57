//! The span recorder against a real OTLP/HTTP receiver on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::jobs::completed;
use common::otel_settings;
use github_client::{JobCommon, JobCompleted};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use recorders::{IdScheme, OtelSettings, Recorder, ScaleSetLabels, SpanRecorder};

#[derive(Clone, Default)]
struct Received {
    requests: Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>,
}

async fn collect(
    State(state): State<Received>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    state.requests.lock().unwrap().push((headers, request));
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

async fn hang() -> StatusCode {
    std::future::pending::<()>().await;
    StatusCode::OK
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn labels() -> ScaleSetLabels {
    ScaleSetLabels {
        name: "arc-runners".into(),
        namespace: "arc-ns".into(),
        organization: "acme".into(),
        ..Default::default()
    }
}

/// The fixture job as a pull request's run `run` (job "test (linux)" on runner 9) ended.
fn job(run: i64, result: &str) -> JobCompleted {
    let job = completed(result);
    JobCompleted {
        common: JobCommon {
            runner_request_id: 5,
            job_workflow_ref: "acme/widgets/.github/workflows/ci.yml@refs/pull/7/merge".into(),
            job_display_name: "test (linux)".into(),
            workflow_run_id: run,
            event_name: "pull_request".into(),
            ..job.common
        },
        runner_id: 9,
        runner_name: "arc-runners-abc".into(),
        ..job
    }
}

fn unix_nanos(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos()).unwrap()
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref() {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(i.to_string()),
            _ => None,
        })
}

fn counter(registry: &prometheus::Registry, name: &str, label: Option<&str>) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_job_spans_over_otlp_http_protobuf() {
    let received = Received::default();
    let addr = serve(
        Router::new()
            .route("/v1/traces", post(collect))
            .with_state(received.clone()),
    )
    .await;
    let env: HashMap<String, String> = [
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=acme%20ci"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut settings =
        OtelSettings::resolve(Some(&addr.to_string()), true, IdScheme::OtelExplorer, &env)
            .unwrap()
            .unwrap();
    settings.batch_interval = Duration::from_millis(100);
    settings.server_url = "https://ghe.example.com/".into();
    let registry = prometheus::Registry::new();
    let recorder = SpanRecorder::start(settings, &labels(), &registry).unwrap();

    recorder.record_job_completed(&job(12345, "failed"));
    recorder.shutdown(Duration::from_secs(20)).await;

    let requests = received.requests.lock().unwrap();
    let (headers, _) = &requests[0];
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["x-tenant"], "acme ci");
    let resource_spans: Vec<_> = requests
        .iter()
        .flat_map(|(_, r)| r.resource_spans.iter())
        .collect();
    let resource = resource_spans[0].resource.as_ref().unwrap();
    for (key, want) in [
        ("service.name", "gha-listener"),
        ("github.runner_scale_set.name", "arc-runners"),
        ("k8s.namespace.name", "arc-ns"),
        ("deployment.environment", "test"),
    ] {
        let got = string_attr(&resource.attributes, key);
        assert_eq!(got.as_deref(), Some(want), "resource {key}");
    }
    let spans: Vec<_> = resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .collect();
    assert_eq!(spans.len(), 3);
    let j = job(12345, "failed");
    let c = &j.common;
    let expected = [
        (
            "runner.queue",
            c.queue_time,
            c.scale_set_assign_time,
            "5c1be415b6ce8e25",
        ),
        (
            "runner.startup",
            c.scale_set_assign_time,
            c.runner_assign_time,
            "62998a876fc48b02",
        ),
        (
            "runner.execution",
            c.runner_assign_time,
            c.finish_time,
            "49d99fe729823661",
        ),
    ];
    for (name, start, end, span_id) in expected {
        let span = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            hex::encode(&span.trace_id),
            "3d7e2f2ea4fca7a337339f10a2f0954e"
        );
        assert_eq!(hex::encode(&span.span_id), span_id, "{name}");
        assert_eq!(hex::encode(&span.parent_span_id), "0000000000010932");
        assert_eq!(
            span.start_time_unix_nano,
            unix_nanos(start.unwrap()),
            "{name}"
        );
        assert_eq!(span.end_time_unix_nano, unix_nanos(end.unwrap()), "{name}");
        assert_eq!(span.kind, 1, "SPAN_KIND_INTERNAL");
        let a = &span.attributes;
        for (key, want) in [
            ("type", name),
            ("github.run_id", "12345"),
            ("github.job_id", "67890"),
            ("github.repository", "acme/widgets"),
            ("github.runner_name", "arc-runners-abc"),
            ("github.runner_id", "9"),
            ("github.event_name", "pull_request"),
            (
                "github.workflow_ref",
                "acme/widgets/.github/workflows/ci.yml@refs/pull/7/merge",
            ),
            ("cicd.pipeline.name", "ci"),
            ("cicd.pipeline.task.name", "test (linux)"),
            (
                "vcs.repository.url.full",
                "https://ghe.example.com/acme/widgets",
            ),
        ] {
            assert_eq!(string_attr(a, key).as_deref(), Some(want), "{name} {key}");
        }
        let status = span.status.clone().unwrap_or_default();
        if name == "runner.execution" {
            assert_eq!(status.code, 2, "STATUS_CODE_ERROR");
            assert_eq!(
                string_attr(a, "github.conclusion").as_deref(),
                Some("failed")
            );
            assert_eq!(
                string_attr(a, "cicd.pipeline.task.run.result").as_deref(),
                Some("failure")
            );
        } else {
            assert_eq!(status.code, 0, "STATUS_CODE_UNSET");
            assert_eq!(string_attr(a, "github.conclusion"), None);
        }
    }
    assert_eq!(
        counter(&registry, "gha_listener_spans_exported_total", None),
        3.0
    );
    assert_eq!(
        counter(&registry, "gha_listener_spans_dropped_total", None),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_never_blocks_recording_and_shutdown_is_bounded() {
    let addr = serve(Router::new().route("/v1/traces", post(hang))).await;
    let endpoint = format!("http://{addr}");
    let mut settings = otel_settings(&endpoint, false, IdScheme::RunnerContract);
    settings.timeout = Duration::from_secs(1);
    settings.batch_interval = Duration::from_millis(50);
    let registry = prometheus::Registry::new();
    let recorder = SpanRecorder::start(settings, &labels(), &registry).unwrap();

    let started = Instant::now();
    for run in 0..10_000 {
        recorder.record_job_completed(&job(run, "succeeded"));
    }
    let recording = started.elapsed();
    // Generous: enqueueing 30,000 spans takes milliseconds; a blocked recorder would
    // take 10,000 × the export timeout.
    assert!(
        recording < Duration::from_secs(30),
        "recording took {recording:?}"
    );

    let started = Instant::now();
    recorder.shutdown(Duration::from_secs(2)).await;
    let stopping = started.elapsed();
    assert!(
        stopping < Duration::from_secs(20),
        "shutdown took {stopping:?}"
    );

    let dropped = counter(&registry, "gha_listener_spans_dropped_total", None);
    let queue_full = counter(
        &registry,
        "gha_listener_spans_dropped_total",
        Some("queue_full"),
    );
    let failed = counter(&registry, "gha_listener_spans_export_failed_total", None);
    let exported = counter(&registry, "gha_listener_spans_exported_total", None);
    assert!(queue_full > 0.0, "queue never overflowed");
    assert_eq!(exported, 0.0);
    assert_eq!(dropped + failed, 30_000.0);
}

#[test]
fn starting_outside_a_runtime_is_a_clear_error() {
    let settings = otel_settings("127.0.0.1:9", true, IdScheme::OtelExplorer);
    let err = SpanRecorder::start(settings, &labels(), &prometheus::Registry::new()).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
