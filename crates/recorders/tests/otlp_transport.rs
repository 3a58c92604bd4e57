//! The exporter's transport settings against the simulator's OTLP sink: a collector behind
//! a private CA, one that requires a client certificate (mTLS), gzip and OTLP/JSON, and
//! the retries of the OTLP/HTTP specification's retryable answers. Every
//! setting comes through `OtelSettings::resolve` from the standard variables.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::jobs::completed;
use github_client::JobCompleted;
use recorders::{IdScheme, OtelSettings, Recorder, ScaleSetLabels, SpanRecorder, probe_collector};
use simulator::otlp_sink::{OtlpSink, SinkTransport};
use time::macros::datetime;

/// The fixture job, its queue span exactly two seconds long.
fn job() -> JobCompleted {
    let mut job = completed("succeeded");
    job.common.queue_time = Some(datetime!(2024-05-01 10:00:00 UTC));
    job.common.scale_set_assign_time = Some(datetime!(2024-05-01 10:00:02 UTC));
    job
}

fn settings(sink: &OtlpSink, env: &[(&str, String)]) -> OtelSettings {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut settings =
        OtelSettings::resolve(Some(&sink.endpoint()), false, IdScheme::default(), &env)
            .unwrap()
            .unwrap();
    settings.batch_interval = Duration::from_millis(50);
    settings.timeout = Duration::from_secs(5);
    settings
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_string_lossy().into_owned()
}

/// Record one job through a recorder with `settings`; the spans the sink then holds.
async fn export_one_job(sink: &OtlpSink, settings: OtelSettings) -> usize {
    let registry = prometheus::Registry::new();
    let recorder = SpanRecorder::start(settings, &ScaleSetLabels::default(), &registry).unwrap();
    recorder.record_job_completed(&job());
    recorder.shutdown(Duration::from_secs(10)).await;
    sink.spans().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_behind_a_private_ca_is_trusted_through_the_certificate_variable() {
    let dir = tempfile::tempdir().unwrap();
    let sink = OtlpSink::start_with(SinkTransport::Https).await.unwrap();
    let ca = write(dir.path(), "ca.pem", sink.ca_pem().unwrap());

    // Without the CA the handshake fails: nothing arrives.
    assert_eq!(export_one_job(&sink, settings(&sink, &[])).await, 0);
    assert!(probe_collector(&settings(&sink, &[])).await.is_err());

    let trusted = settings(&sink, &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca)]);
    assert_eq!(probe_collector(&trusted).await.unwrap(), 200);
    assert_eq!(export_one_job(&sink, trusted).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let sink = OtlpSink::start_with(SinkTransport::MutualTls)
        .await
        .unwrap();
    let ca = write(dir.path(), "ca.pem", sink.ca_pem().unwrap());
    let (cert, key) = sink.client_pem().unwrap();
    let cert = write(dir.path(), "client.pem", cert);
    let key = write(dir.path(), "client-key.pem", key);

    // The CA alone is not enough: the sink requires a client certificate.
    let server_only = settings(&sink, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.clone())]);
    assert!(probe_collector(&server_only).await.is_err());
    assert_eq!(export_one_job(&sink, server_only).await, 0);

    let mutual = settings(
        &sink,
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", key),
        ],
    );
    assert_eq!(probe_collector(&mutual).await.unwrap(), 200);
    assert_eq!(export_one_job(&sink, mutual).await, 3);
    let debug = format!("{:?}", settings(&sink, &[]));
    assert!(debug.contains("client_identity: false"), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_json_are_sent_as_configured() {
    let sink = OtlpSink::start().await.unwrap();
    let gzip = settings(&sink, &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into())]);
    assert_eq!(export_one_job(&sink, gzip).await, 3);
    let requests = sink.received_requests();
    assert_eq!(
        requests.last().unwrap().content_encoding,
        "gzip",
        "{requests:?}"
    );
    assert_eq!(
        requests.last().unwrap().content_type,
        "application/x-protobuf"
    );

    let sink = OtlpSink::start().await.unwrap();
    let json = settings(
        &sink,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json".into()),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip".into()),
            // The signal-specific variable wins.
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ],
    );
    assert_eq!(probe_collector(&json).await.unwrap(), 200);
    assert_eq!(export_one_job(&sink, json).await, 3);
    let last = sink.received_requests().last().cloned().unwrap();
    assert!(
        last.content_type.starts_with("application/json"),
        "{last:?}"
    );
    assert_eq!((last.content_encoding.as_str(), last.status), ("gzip", 200));
    let spans = sink.spans();
    let queue = spans.iter().find(|s| s.name == "runner.queue").unwrap();
    assert_eq!(queue.trace_id.len(), 32, "{queue:?}");
    assert_eq!(queue.end_unix_nanos - queue.start_unix_nanos, 2_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_answers_are_retried_and_others_are_not() {
    let sink = OtlpSink::start().await.unwrap();
    // 429, 502, 503 and 504 are retryable: the third retry's request is kept.
    sink.refuse_next(&[503, 502, 429]);
    assert_eq!(export_one_job(&sink, settings(&sink, &[])).await, 3);
    let statuses: Vec<u16> = sink.received_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 502, 429, 200]);

    // A 400 is final: one request, the spans counted as failed.
    let sink = OtlpSink::start().await.unwrap();
    sink.refuse_next(&[400]);
    let registry = prometheus::Registry::new();
    let recorder =
        SpanRecorder::start(settings(&sink, &[]), &ScaleSetLabels::default(), &registry).unwrap();
    recorder.record_job_completed(&job());
    recorder.shutdown(Duration::from_secs(10)).await;
    assert_eq!(sink.received_requests().len(), 1);
    assert!(sink.spans().is_empty());
    let failed = registry
        .gather()
        .iter()
        .find(|f| f.name() == "gha_listener_spans_export_failed_total")
        .map(|f| f.get_metric()[0].get_counter().get_value());
    assert_eq!(failed, Some(3.0));
}
