//! OTLP/HTTP: one export request POSTed to the collector, in the configured encoding and
//! compression, with the configured headers, TLS roots and client certificate; transient
//! failures retried with [`retry::policies::OTLP_EXPORT`] within the export timeout.
//!
//! This is what opentelemetry-otlp's HTTP exporter did for us (same media types, gzip,
//! retryable answers and `Retry-After` as the OTLP/HTTP specification lists them); it is
//! written here because the spans are encoded here ([`super::encode`]), and so that its
//! retries use the workspace's one backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use retry::describe::error_chain;
use tokio::time::Instant;

use super::{OtelSettings, OtlpCompression, OtlpProtocol};
use crate::RecorderError;

/// Why an export request failed (after its retries). Never holds a header value.
#[derive(Debug, thiserror::Error)]
pub(super) enum ExportError {
    #[error("the collector answered {status}")]
    Status { status: u16 },
    #[error("{0}")]
    Transport(String),
    #[error("encoding the request: {0}")]
    Encode(String),
}

/// Sends one encoded `ExportTraceServiceRequest`.
pub(super) trait Transport: Send + Sync + 'static {
    fn send(&self, request: Vec<u8>) -> impl Future<Output = Result<(), ExportError>> + Send;
}

/// The collector's OTLP/HTTP endpoint.
pub(super) struct OtlpHttp {
    client: reqwest::Client,
    endpoint: url::Url,
    headers: HeaderMap,
    protocol: OtlpProtocol,
    compression: OtlpCompression,
    timeout: Duration,
}

impl OtlpHttp {
    pub(super) fn new(settings: &OtelSettings) -> Result<Self, RecorderError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(name), Ok(mut value)) => {
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                _ => tracing::warn!(
                    header = %name,
                    "OTLP header is not a valid HTTP header; not sent"
                ),
            }
        }
        let content_type = match settings.transport.protocol {
            OtlpProtocol::HttpProtobuf => "application/x-protobuf",
            OtlpProtocol::HttpJson => "application/json",
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if settings.transport.compression == OtlpCompression::Gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(Self {
            client: http_client(settings)?,
            endpoint: settings.endpoint.clone(),
            headers,
            protocol: settings.transport.protocol,
            compression: settings.transport.compression,
            timeout: settings.timeout,
        })
    }

    /// The request body in the configured encoding and compression.
    fn body(&self, request: Vec<u8>) -> Result<Vec<u8>, ExportError> {
        let encoded = match self.protocol {
            OtlpProtocol::HttpProtobuf => request,
            // The JSON mapping (hex ids, 64-bit integers as strings) is opentelemetry-proto's.
            OtlpProtocol::HttpJson => {
                let decoded = ExportTraceServiceRequest::decode(request.as_slice())
                    .map_err(|e| ExportError::Encode(e.to_string()))?;
                serde_json::to_vec(&decoded).map_err(|e| ExportError::Encode(e.to_string()))?
            }
        };
        match self.compression {
            OtlpCompression::None => Ok(encoded),
            OtlpCompression::Gzip => {
                use std::io::Write as _;
                let mut gzip =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gzip.write_all(&encoded)
                    .and_then(|()| gzip.finish())
                    .map_err(|e| ExportError::Encode(e.to_string()))
            }
        }
    }

    /// One POST, and whether a failure is worth repeating.
    async fn post(&self, body: &bytes::Bytes) -> Result<(), (ExportError, Attempt)> {
        let response = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .body(body.clone())
            .send()
            .await
            .map_err(|e| {
                let error = ExportError::Transport(error_chain(&e.without_url()));
                (error, Attempt::Retry(None))
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        // Read the answer to its end, so the connection can carry the next request.
        let _ = response.bytes().await;
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err((
            ExportError::Status { status },
            attempt_after(status, retry_after),
        ))
    }
}

/// Whether a failed attempt is worth repeating, and the server's wait when it gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Retry(Option<Duration>),
    GiveUp,
}

/// The OTLP/HTTP specification's retryable answers: 429, 502, 503, 504 (429 and 503 may
/// say when, in `Retry-After`). Every other status is final.
fn attempt_after(status: u16, retry_after: Option<Duration>) -> Attempt {
    match status {
        429 | 503 => Attempt::Retry(retry_after),
        502 | 504 => Attempt::Retry(None),
        _ => Attempt::GiveUp,
    }
}

impl Transport for OtlpHttp {
    async fn send(&self, request: Vec<u8>) -> Result<(), ExportError> {
        let body = bytes::Bytes::from(self.body(request)?);
        let policy = retry::policies::OTLP_EXPORT_RETRIES;
        let deadline = Instant::now() + self.timeout;
        let mut retries = 0u32;
        loop {
            let (error, attempt) = match self.post(&body).await {
                Ok(()) => return Ok(()),
                Err(failed) => failed,
            };
            let Attempt::Retry(retry_after) = attempt else {
                return Err(error);
            };
            let wait = policy.backoff.delay(retries, retry_after);
            // A wait that would outlast the export's timeout is not started.
            if retries >= policy.max_retries || Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(%error, retry = retries + 1, wait_ms = wait.as_millis() as u64, "span export failed; retrying");
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }
}

/// A reqwest client over rustls with the ring provider, trusting the platform roots, the
/// Mozilla roots and `_CERTIFICATE`'s, and presenting the client certificate when set.
pub(super) fn http_client(settings: &OtelSettings) -> Result<reqwest::Client, RecorderError> {
    let transport = &settings.transport;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    let (extra, rejected) = roots.add_parsable_certificates(transport.extra_roots.iter().cloned());
    if rejected > 0 {
        return Err(RecorderError::OtelSetting {
            name: "OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE".to_owned(),
            reason: format!("{rejected} certificate(s) are not usable as trust anchors"),
        });
    }
    tracing::debug!(
        native_roots = added,
        extra_roots = extra,
        client_certificate = transport.client_identity.is_some(),
        "loaded TLS roots for the OTLP exporter"
    );
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RecorderError::Exporter(format!("TLS configuration: {e}")))?
    .with_root_certificates(roots);
    let tls = match &transport.client_identity {
        None => tls.with_no_client_auth(),
        Some(identity) => tls
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| RecorderError::OtelSetting {
                name: "OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY".to_owned(),
                reason: format!("the key does not fit the client certificate: {e}"),
            })?,
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(settings.timeout)
        .build()
        .map_err(|e| RecorderError::Exporter(format!("HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_answers_are_the_specifications() {
        let wait = Some(Duration::from_secs(2));
        assert_eq!(attempt_after(429, wait), Attempt::Retry(wait));
        assert_eq!(attempt_after(503, None), Attempt::Retry(None));
        assert_eq!(attempt_after(502, wait), Attempt::Retry(None));
        assert_eq!(attempt_after(504, None), Attempt::Retry(None));
        for status in [400, 401, 403, 404, 413, 500, 501] {
            assert_eq!(attempt_after(status, wait), Attempt::GiveUp, "{status}");
        }
    }
}
