//! The metrics server over real HTTP on loopback, and the exposition checked by promtool.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::time::Duration;

use common::jobs::completed;
use common::otel_settings;
use github_client::{JobCommon, JobCompleted, JobStarted, RunnerScaleSetStatistic};
use recorders::{
    CompositeRecorder, IdScheme, MetricsServer, PrometheusRecorder, Readiness, Recorder,
    ScaleSetLabels, SpanRecorder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (status, headers and body) of a plain HTTP/1.1 GET.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn labels() -> ScaleSetLabels {
    ScaleSetLabels {
        name: "arc-runners".into(),
        namespace: "arc-systems".into(),
        enterprise: "".into(),
        organization: "acme".into(),
        repository: "".into(),
    }
}

/// The fixture job's common part, named `name`.
fn common(name: &str) -> JobCommon {
    JobCommon {
        job_display_name: name.into(),
        ..completed("").common
    }
}

fn scenario(recorder: &dyn Recorder) {
    recorder.record_static(0, 20);
    recorder.record_statistics(&RunnerScaleSetStatistic {
        total_assigned_jobs: 3,
        total_running_jobs: 2,
        total_registered_runners: 3,
        total_busy_runners: 2,
        total_idle_runners: 1,
        ..Default::default()
    });
    recorder.record_desired_runners(3);
    for (i, result) in ["succeeded", "failed", "canceled"].iter().enumerate() {
        let name = format!("job \"{i}\"\\ with\nodd chars");
        recorder.record_job_started(&JobStarted {
            common: common(&name),
            runner_id: i as i64,
            runner_name: format!("runner-{i}"),
        });
        recorder.record_job_completed(&JobCompleted {
            common: common(&name),
            result: (*result).into(),
            runner_id: i as i64,
            runner_name: format!("runner-{i}"),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_health_and_readiness_and_shuts_down() {
    let registry = prometheus::Registry::new();
    let recorder = PrometheusRecorder::new(labels(), None, &registry).unwrap();
    scenario(&recorder);
    let readiness = Readiness::new();
    // ARC's ":port" form: all interfaces; we reach it on loopback.
    let server = MetricsServer::start(":0", "/metrics", registry, readiness.clone())
        .await
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.local_addr().port()));

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{body}"
    );
    assert!(body.contains("gha_desired_runners{enterprise=\"\",name=\"arc-runners\",namespace=\"arc-systems\",organization=\"acme\",repository=\"\"} 3"), "{body}");
    assert!(body.contains("gha_completed_jobs_total{"), "{body}");

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    readiness.set_ready(true);
    assert!(readiness.is_ready());
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);

    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .unwrap();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bad_addresses_are_errors() {
    let registry = prometheus::Registry::new();
    let err = MetricsServer::start("nonsense", "", registry.clone(), Readiness::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonsense"), "{err}");
    let err = MetricsServer::start("127.0.0.1:0", "/healthz", registry, Readiness::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/healthz"), "{err}");
}

/// The exposition of a full scenario (ARC metrics and the listener's own) passes
/// `promtool check metrics` when promtool is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_passes_promtool() {
    let registry = prometheus::Registry::new();
    let prometheus_recorder = PrometheusRecorder::new(labels(), None, &registry).unwrap();
    // A span recorder whose collector does not exist, so its counters move too.
    let mut settings = otel_settings("127.0.0.1:9", true, IdScheme::OtelExplorer);
    settings.timeout = Duration::from_millis(500);
    let spans = std::sync::Arc::new(SpanRecorder::start(settings, &labels(), &registry).unwrap());
    let composite = CompositeRecorder::new(vec![
        std::sync::Arc::new(prometheus_recorder),
        spans.clone(),
    ]);
    scenario(&composite);
    spans.shutdown(Duration::from_secs(5)).await;

    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for name in [
        "gha_started_jobs_total",
        "gha_job_execution_duration_seconds_bucket",
        "gha_listener_spans_dropped_total",
        "gha_listener_spans_export_failed_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exposition.prom");
    std::fs::write(&path, &text).unwrap();

    let Ok(output) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
    else {
        println!("NOTICE: promtool not on PATH; skipping `promtool check metrics`");
        return;
    };
    assert!(
        output.status.success(),
        "promtool check metrics failed:\nstdout: {}\nstderr: {}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
