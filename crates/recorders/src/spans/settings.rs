//! Where and how job spans are exported, resolved from the config and the environment.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use url::Url;

use super::IdScheme;
use crate::RecorderError;

mod transport;

pub use transport::{ClientIdentity, OtlpCompression, OtlpProtocol, OtlpTransport};

const DEFAULT_SERVICE_NAME: &str = "gha-listener";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const TRACES_PATH: &str = "/v1/traces";

/// Everything the span recorder needs. Build it with [`OtelSettings::resolve`]; the
/// public fields may be tuned afterwards.
#[derive(Clone)]
pub struct OtelSettings {
    /// The full URL spans are POSTed to (OTLP/HTTP, protobuf).
    pub endpoint: Url,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`); values are secrets.
    pub headers: Vec<(String, String)>,
    /// Bound on one export request (`OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`, default 10 s).
    pub timeout: Duration,
    /// Protocol, compression, private CA and client certificate.
    pub transport: OtlpTransport,
    pub id_scheme: IdScheme,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Other resource attributes from `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
    /// Web URL of the GitHub server, for `vcs.repository.url.full`.
    pub server_url: String,
    /// Spans held while the collector is slow; past it new spans are dropped (counted).
    pub queue_capacity: usize,
    /// Spans per export request.
    pub max_batch_size: usize,
    /// A partial batch is exported after this long.
    pub batch_interval: Duration,
}

impl fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}: <redacted>"))
            .collect();
        f.debug_struct("OtelSettings")
            .field("endpoint", &self.endpoint.as_str())
            .field("headers", &header_names)
            .field("timeout", &self.timeout)
            .field("transport", &self.transport)
            .field("id_scheme", &self.id_scheme)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("server_url", &self.server_url)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch_size", &self.max_batch_size)
            .field("batch_interval", &self.batch_interval)
            .finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EndpointKind {
    /// `otel_endpoint` or `OTEL_ENDPOINT`: `host:port` or a base URL; `/v1/traces` is
    /// added unless the path already ends with it.
    Seed,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as is.
    Traces,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is appended (OTel spec).
    Generic,
}

impl OtelSettings {
    /// Resolve the collector from the config (`otel_endpoint`, `otel_insecure`) and the
    /// environment given as a map (pure, for tests; pass `std::env::vars().collect()`).
    /// Precedence: `otel_endpoint`, `OTEL_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. None of them set: `Ok(None)` (no exporter).
    pub fn resolve(
        endpoint: Option<&str>,
        insecure: bool,
        id_scheme: IdScheme,
        env: &HashMap<String, String>,
    ) -> Result<Option<OtelSettings>, RecorderError> {
        let var = |name: &str| {
            env.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let candidates = [
            (
                "otel_endpoint",
                endpoint
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
                EndpointKind::Seed,
            ),
            ("OTEL_ENDPOINT", var("OTEL_ENDPOINT"), EndpointKind::Seed),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                EndpointKind::Traces,
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                var("OTEL_EXPORTER_OTLP_ENDPOINT"),
                EndpointKind::Generic,
            ),
        ];
        let Some((source, raw, kind)) = candidates
            .into_iter()
            .find_map(|(name, value, kind)| value.map(|v| (name, v, kind)))
        else {
            return Ok(None);
        };
        let endpoint = traces_url(source, &raw, kind, insecure)?;

        let headers = match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(h) => parse_key_values("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &h)?,
            None => match var("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(h) => parse_key_values("OTEL_EXPORTER_OTLP_HEADERS", &h)?,
                None => Vec::new(),
            },
        };
        let timeout = match (
            var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
            var("OTEL_EXPORTER_OTLP_TIMEOUT"),
        ) {
            (Some(t), _) => parse_millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", &t)?,
            (None, Some(t)) => parse_millis("OTEL_EXPORTER_OTLP_TIMEOUT", &t)?,
            (None, None) => DEFAULT_TIMEOUT,
        };
        let transport = transport::resolve(var)?;
        let mut resource_attributes = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(a) => parse_key_values("OTEL_RESOURCE_ATTRIBUTES", &a)?,
            None => Vec::new(),
        };
        let attribute_service_name = resource_attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone());
        resource_attributes.retain(|(k, _)| k != "service.name");
        let service_name = var("OTEL_SERVICE_NAME")
            .or(attribute_service_name)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());

        Ok(Some(OtelSettings {
            endpoint,
            headers,
            timeout,
            transport,
            id_scheme,
            service_name,
            resource_attributes,
            server_url: "https://github.com".to_owned(),
            queue_capacity: 2048,
            max_batch_size: 512,
            batch_interval: Duration::from_secs(2),
        }))
    }
}

fn traces_url(
    source: &str,
    raw: &str,
    kind: EndpointKind,
    insecure: bool,
) -> Result<Url, RecorderError> {
    let bad = |reason: String| RecorderError::OtelSetting {
        name: source.to_owned(),
        reason,
    };
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{raw}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| bad(format!("{raw:?} is not a URL or host:port: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad(format!(
            "{raw:?}: the scheme must be http or https (OTLP over HTTP)"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!("{raw:?} names no host")));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    match kind {
        EndpointKind::Traces => {}
        EndpointKind::Seed if path.ends_with(TRACES_PATH) => {}
        EndpointKind::Seed | EndpointKind::Generic => url.set_path(&format!("{path}{TRACES_PATH}")),
    }
    Ok(url)
}

/// `k=v,k2=v2` with percent-encoded values (W3C baggage-like, as the OTel env spec says).
fn parse_key_values(var: &str, input: &str) -> Result<Vec<(String, String)>, RecorderError> {
    let mut pairs = Vec::new();
    for item in input.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            // Do not echo the item: header values may be credentials.
            return Err(RecorderError::OtelSetting {
                name: var.to_owned(),
                reason: format!("entry {} is not key=value", pairs.len() + 1),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(RecorderError::OtelSetting {
                name: var.to_owned(),
                reason: format!("entry {} has an empty key", pairs.len() + 1),
            });
        }
        pairs.push((percent_decode(key.trim()), percent_decode(value.trim())));
    }
    Ok(pairs)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_millis(var: &str, value: &str) -> Result<Duration, RecorderError> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| RecorderError::OtelSetting {
            name: var.to_owned(),
            reason: format!("{value:?} is not a whole number of milliseconds"),
        })
}

#[cfg(test)]
mod tests;
