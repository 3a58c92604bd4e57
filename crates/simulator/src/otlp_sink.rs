//! A minimal OTLP/HTTP trace receiver: decodes `ExportTraceServiceRequest` protobufs posted
//! to `/v1/traces` and keeps the spans, so the demo can print them and tests can assert on
//! them without a collector.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use tokio::sync::{Notify, watch};

/// A span as received, with ids in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub attributes: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<u64>,
    arrived: Notify,
}

/// A running receiver on `127.0.0.1`.
#[derive(Clone)]
pub struct OtlpSink {
    addr: SocketAddr,
    received: Arc<Received>,
    shutdown: watch::Sender<bool>,
}

impl OtlpSink {
    pub async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(Received::default());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&received));
        let (shutdown, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            // Not the shared accept loop: axum's already backs off (1 s) on accept errors
            // such as EMFILE, and its graceful shutdown lets an in-flight export finish.
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(error = %e, "OTLP sink stopped");
            }
        });
        Ok(Self {
            addr,
            received,
            shutdown,
        })
    }

    /// `http://127.0.0.1:PORT`, the base an OTLP/HTTP exporter is pointed at.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        self.received.requests.lock().map(|r| *r).unwrap_or(0)
    }

    /// Wait until at least `n` spans arrived or `timeout` passed; returns the spans.
    pub async fn wait_for_spans(
        &self,
        n: usize,
        timeout: std::time::Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.received.arrived.notified();
            let spans = self.spans();
            if spans.len() >= n || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

async fn receive(State(received): State<Arc<Received>>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| key_values(&r.attributes))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    status_code: span.status.map(|s| s.code).unwrap_or(0),
                    attributes: key_values(&span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    if let Ok(mut all) = received.spans.lock() {
        all.extend(spans);
    }
    if let Ok(mut n) = received.requests.lock() {
        *n += 1;
    }
    received.arrived.notify_waiters();
    StatusCode::OK
}

fn key_values(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
