//! One empty OTLP export request, for the preflight check: an empty protobuf
//! `ExportTraceServiceRequest` is zero bytes (`{}` in JSON), which every collector accepts
//! with 2xx. It
//! goes through the exporter's own HTTP client, so TLS and headers are the ones spans get.

use retry::describe::error_chain;

use super::otlp_http::http_client;
use super::{OtelSettings, OtlpProtocol};

/// Why the collector did not accept the empty export. Never holds a header value.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Client(#[from] crate::RecorderError),
    #[error("POST {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("POST {endpoint}: the collector answered {status}")]
    Refused { endpoint: String, status: u16 },
}

impl retry::Classify for ProbeError {
    fn kind(&self) -> retry::FailureKind {
        match self {
            Self::Client(_) => retry::FailureKind::InvalidInput,
            Self::Unreachable { .. } => retry::FailureKind::Transient { retry_after: None },
            Self::Refused { status, .. } => retry::FailureKind::Rejected {
                status: Some(*status),
            },
        }
    }
}

/// POST an empty export to `settings.endpoint`; `Ok(status)` when answered 2xx.
pub async fn probe_collector(settings: &OtelSettings) -> Result<u16, ProbeError> {
    let client = http_client(settings)?;
    let endpoint = settings.endpoint.to_string();
    // The empty request in the configured encoding (uncompressed: collectors take both).
    let (content_type, body) = match settings.transport.protocol {
        OtlpProtocol::HttpProtobuf => ("application/x-protobuf", Vec::new()),
        OtlpProtocol::HttpJson => ("application/json", b"{}".to_vec()),
    };
    let mut request = client
        .post(settings.endpoint.clone())
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body);
    for (name, value) in &settings.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.map_err(|e| ProbeError::Unreachable {
        endpoint: endpoint.clone(),
        reason: error_chain(&e.without_url()),
    })?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err(ProbeError::Refused { endpoint, status })
    }
}
