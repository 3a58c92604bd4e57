//! The metrics HTTP server: the text exposition on `metrics_endpoint`, `/healthz` and
//! `/readyz`, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

use crate::RecorderError;
use crate::openmetrics::{self, Exemplars};

/// How long [`MetricsServer::shutdown`] waits for in-flight scrapes (the Go listener's 5 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Whether the listener is ready (`/readyz` answers 200) — cheap to clone and to set.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready until [`Readiness::set_ready`] says so.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
    exemplars: Exemplars,
}

impl MetricsServer {
    /// Bind `addr` (ARC's `:8080` form means all interfaces; `host:port` and
    /// `[v6]:port` work too) and serve `endpoint` (empty means `/metrics`).
    pub async fn start(
        addr: &str,
        endpoint: &str,
        registry: Registry,
        readiness: Readiness,
    ) -> Result<MetricsServer, RecorderError> {
        Self::start_with_exemplars(addr, endpoint, registry, readiness, Exemplars::default()).await
    }

    /// As [`MetricsServer::start`]; an OpenMetrics scrape also shows `exemplars`.
    pub async fn start_with_exemplars(
        addr: &str,
        endpoint: &str,
        registry: Registry,
        readiness: Readiness,
        exemplars: Exemplars,
    ) -> Result<MetricsServer, RecorderError> {
        let bind_addr = listen_addr(addr)?;
        let endpoint = metrics_path(endpoint)?;
        let listener = tokio::net::TcpListener::bind(&bind_addr)
            .await
            .map_err(|source| RecorderError::Bind {
                addr: bind_addr.clone(),
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| RecorderError::Bind {
                addr: bind_addr.clone(),
                source,
            })?;
        let app = Router::new()
            .route(&endpoint, get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .with_state(AppState {
                registry,
                readiness,
                exemplars,
            });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "metrics server failed");
            }
        });
        tracing::info!(addr = %local_addr, %endpoint, "metrics server listening");
        Ok(MetricsServer {
            local_addr,
            stop: Mutex::new(Some(stop_tx)),
            task: Mutex::new(Some(task)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, let in-flight requests finish for up to 5 s, then stop.
    /// Idempotent.
    pub async fn shutdown(&self) {
        if let Some(stop) = self.stop.lock().await.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            tracing::warn!("metrics server did not stop within its grace period, aborting");
            task.abort();
        }
        tracing::info!("metrics server stopped");
    }
}

/// The classic text format (ARC's, byte for byte), or OpenMetrics with exemplars when the
/// scraper's `Accept` asks for it.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if openmetrics::wants_openmetrics(accept) {
        let body = openmetrics::encode(&state.registry.gather(), &state.exemplars);
        return (
            [(header::CONTENT_TYPE, openmetrics::OPENMETRICS_CONTENT_TYPE)],
            body,
        )
            .into_response();
    }
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, encoder.format_type())], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response()
        }
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// `:8080` → `0.0.0.0:8080`; anything else must be `host:port`. What
/// [`MetricsServer::start`] binds (public for the preflight check).
pub fn listen_addr(addr: &str) -> Result<String, RecorderError> {
    let addr = addr.trim();
    let bad = |reason: &str| RecorderError::Address {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port or :port"))?;
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    if host.is_empty() {
        Ok(format!("0.0.0.0:{port}"))
    } else {
        Ok(addr.to_owned())
    }
}

fn metrics_path(endpoint: &str) -> Result<String, RecorderError> {
    let endpoint = endpoint.trim();
    let path = if endpoint.is_empty() {
        "/metrics".to_owned()
    } else if endpoint.starts_with('/') {
        endpoint.to_owned()
    } else {
        format!("/{endpoint}")
    };
    let bad = |reason: &str| RecorderError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    if path == "/healthz" || path == "/readyz" {
        return Err(bad("collides with the health endpoints"));
    }
    if path.contains(['{', '}', '*', '?', '#']) || path.chars().any(char::is_whitespace) {
        return Err(bad("must be a plain URL path"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_forms() {
        assert_eq!(listen_addr(":8080").unwrap(), "0.0.0.0:8080");
        assert_eq!(listen_addr("127.0.0.1:0").unwrap(), "127.0.0.1:0");
        assert_eq!(listen_addr("[::1]:9090").unwrap(), "[::1]:9090");
        let err = listen_addr("8080").unwrap_err();
        assert!(err.to_string().contains("\"8080\""), "{err}");
        assert!(listen_addr(":http").is_err());
        assert!(listen_addr(":70000").is_err());
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(metrics_path("").unwrap(), "/metrics");
        assert_eq!(metrics_path("/custom").unwrap(), "/custom");
        assert_eq!(metrics_path("prom").unwrap(), "/prom");
        assert!(metrics_path("/healthz").is_err());
        assert!(metrics_path("/{x}").is_err());
    }
}
