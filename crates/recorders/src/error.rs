//! Errors of recorder construction. Recording itself never fails.

/// Why a recorder, the metrics server or the span exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("metrics config: metric {metric}: {reason}")]
    MetricsConfig { metric: String, reason: String },
    #[error("registering metric {metric}: {source}")]
    Register {
        metric: String,
        #[source]
        source: prometheus::Error,
    },
    #[error("metrics address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("metrics endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("binding the metrics server to {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("OpenTelemetry setting {name}: {reason}")]
    OtelSetting { name: String, reason: String },
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
    #[error("{0} must be started inside a tokio runtime")]
    NoRuntime(&'static str),
}
