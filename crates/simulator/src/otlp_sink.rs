//! A minimal OTLP/HTTP trace receiver: decodes `ExportTraceServiceRequest`s posted to
//! `/v1/traces` (protobuf or JSON, plain or gzip) and keeps the spans, so the demo can print
//! them and tests can assert on them without a collector. Plain HTTP, TLS with a generated
//! CA, or mTLS (a client certificate signed by that CA required), as collectors are run.

mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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

/// How one export request came: its media type and content encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub content_type: String,
    /// `Content-Encoding` (`gzip`), empty when none.
    pub content_encoding: String,
    /// The status answered.
    pub status: u16,
}

/// How the sink is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTransport {
    Http,
    /// HTTPS with a certificate from a generated CA ([`OtlpSink::ca_pem`]).
    Https,
    /// HTTPS that requires a client certificate signed by the same CA
    /// ([`OtlpSink::client_pem`]).
    MutualTls,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<u64>,
    log: Mutex<Vec<ReceivedRequest>>,
    /// Statuses to answer, in order, instead of taking the next requests' spans.
    refusals: Mutex<std::collections::VecDeque<u16>>,
    arrived: Notify,
}

/// A running receiver on `127.0.0.1`.
#[derive(Clone)]
pub struct OtlpSink {
    addr: SocketAddr,
    received: Arc<Received>,
    shutdown: watch::Sender<bool>,
    /// CA, client certificate and key PEM in the TLS modes.
    tls: Option<Arc<(String, (String, String))>>,
}

impl OtlpSink {
    /// Plain HTTP.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(SinkTransport::Http).await
    }

    pub async fn start_with(transport: SinkTransport) -> anyhow::Result<Self> {
        let received = Arc::new(Received::default());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        if transport != SinkTransport::Http {
            let tls = tls::generate(transport == SinkTransport::MutualTls)?;
            let (shutdown, rx) = watch::channel(false);
            let handler_received = Arc::clone(&received);
            tokio::spawn(crate::accept::serve(
                "OTLP sink",
                listener,
                Some(tokio_rustls::TlsAcceptor::from(tls.config)),
                rx,
                move |request| receive_tls(Arc::clone(&handler_received), request),
            ));
            return Ok(Self {
                addr,
                received,
                shutdown,
                tls: Some(Arc::new((tls.ca_pem, tls.client_pem))),
            });
        }
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
            tls: None,
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` in the TLS modes), the base an OTLP/HTTP
    /// exporter is pointed at.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM of the CA that signed the server (and client) certificate, in the TLS modes.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.0.as_str())
    }

    /// `(certificate, private key)` PEM of a client the mTLS mode accepts.
    pub fn client_pem(&self) -> Option<(&str, &str)> {
        self.tls.as_ref().map(|t| (t.1.0.as_str(), t.1.1.as_str()))
    }

    /// Every export request, in arrival order.
    /// Answer the next requests with `statuses`, one each, in order, keeping none of their
    /// spans (as a collector that is overloaded, 503, or refuses a request, 400).
    pub fn refuse_next(&self, statuses: &[u16]) {
        if let Ok(mut refusals) = self.received.refusals.lock() {
            refusals.extend(statuses);
        }
    }

    pub fn received_requests(&self) -> Vec<ReceivedRequest> {
        self.received
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
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

async fn receive(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    store(&received, &headers, body)
}

/// The TLS modes' handler (the shared accept loop speaks hyper, not axum).
async fn receive_tls(
    received: Arc<Received>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<http_body_util::Full<Bytes>>, crate::faults::DropConnection> {
    use http_body_util::BodyExt as _;
    let (parts, body) = request.into_parts();
    let status = if parts.method != http::Method::POST || parts.uri.path() != "/v1/traces" {
        StatusCode::NOT_FOUND
    } else {
        match body.collect().await {
            Ok(body) => store(&received, &parts.headers, body.to_bytes()),
            Err(_) => StatusCode::BAD_REQUEST,
        }
    };
    let mut response = http::Response::new(http_body_util::Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

/// Decode (gunzip, then protobuf or JSON by media type) and keep the spans; the status to answer.
fn store(received: &Received, headers: &HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let content_encoding = header(http::header::CONTENT_ENCODING);
    let refusal = received
        .refusals
        .lock()
        .ok()
        .and_then(|mut r| r.pop_front())
        .and_then(|code| StatusCode::from_u16(code).ok());
    let status = match (refusal, decode(&content_type, &content_encoding, body)) {
        (Some(refused), _) => refused,
        (None, Ok(request)) => {
            keep_spans(received, request);
            StatusCode::OK
        }
        (None, Err(status)) => status,
    };
    if let Ok(mut log) = received.log.lock() {
        log.push(ReceivedRequest {
            content_type,
            content_encoding,
            status: status.as_u16(),
        });
    }
    if let Ok(mut n) = received.requests.lock() {
        *n += 1;
    }
    received.arrived.notify_waiters();
    status
}

fn decode(
    content_type: &str,
    content_encoding: &str,
    body: Bytes,
) -> Result<ExportTraceServiceRequest, StatusCode> {
    let body = match content_encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => body.to_vec(),
        "gzip" => {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .read_to_end(&mut out)
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            out
        }
        _ => return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
    };
    if content_type.starts_with("application/json") {
        serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)
    } else {
        ExportTraceServiceRequest::decode(body.as_slice()).map_err(|_| StatusCode::BAD_REQUEST)
    }
}

fn keep_spans(received: &Received, request: ExportTraceServiceRequest) {
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
