//! How spans travel to the collector, from the standard OpenTelemetry exporter variables:
//! `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, `_COMPRESSION`, `_CERTIFICATE` (a private CA),
//! `_CLIENT_CERTIFICATE` and `_CLIENT_KEY` (mTLS). The signal-specific `TRACES_` variable
//! wins over the generic one, as the OTel specification says. Files are read and parsed
//! here, so a bad path or PEM fails at start, naming the variable.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::RecorderError;

/// The wire encoding (`_PROTOCOL`). gRPC is not offered: it would pull in tonic and an
/// HTTP/2 stack for what OTLP/HTTP already does on every collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// `http/protobuf`, the default.
    #[default]
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
}

/// Request body compression (`_COMPRESSION`: `gzip` or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpCompression {
    #[default]
    None,
    Gzip,
}

/// A client certificate chain and its key, for collectors that require mTLS.
#[derive(Clone)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    /// Shared, not copied: `PrivateKeyDer` is deliberately not `Clone`.
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// Protocol, compression and TLS of the exporter. `Debug` shows no key material.
#[derive(Clone, Default)]
pub struct OtlpTransport {
    pub protocol: OtlpProtocol,
    pub compression: OtlpCompression,
    /// Trusted on top of the platform and Mozilla roots (`_CERTIFICATE`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub client_identity: Option<ClientIdentity>,
}

impl fmt::Debug for OtlpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpTransport")
            .field("protocol", &self.protocol)
            .field("compression", &self.compression)
            .field("extra_roots", &self.extra_roots.len())
            .field("client_identity", &self.client_identity.is_some())
            .finish()
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_{suffix}`, else `OTEL_EXPORTER_OTLP_{suffix}`: (name, value).
fn pick(var: &impl Fn(&str) -> Option<String>, suffix: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
    .into_iter()
    .find_map(|name| var(&name).map(|value| (name, value)))
}

fn bad(name: &str, reason: String) -> RecorderError {
    RecorderError::OtelSetting {
        name: name.to_owned(),
        reason,
    }
}

fn read(name: &str, path: &str) -> Result<Vec<u8>, RecorderError> {
    std::fs::read(path).map_err(|e| bad(name, format!("cannot read {path:?}: {e}")))
}

fn certificates(name: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, RecorderError> {
    let pem = read(name, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(name, format!("{path:?} is not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad(name, format!("{path:?} holds no PEM certificate")));
    }
    Ok(certs)
}

/// Resolve from `var` (the trimmed, non-empty value of an environment variable).
pub(super) fn resolve(
    var: impl Fn(&str) -> Option<String>,
) -> Result<OtlpTransport, RecorderError> {
    let protocol = match pick(&var, "PROTOCOL") {
        None => OtlpProtocol::default(),
        Some((name, value)) => match value.to_ascii_lowercase().as_str() {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "http/json" => OtlpProtocol::HttpJson,
            "grpc" => {
                return Err(bad(
                    &name,
                    "grpc is not supported: use http/protobuf or http/json (the collector's OTLP/HTTP port, usually 4318)".to_owned(),
                ));
            }
            _ => {
                return Err(bad(
                    &name,
                    format!("{value:?} is not http/protobuf or http/json"),
                ));
            }
        },
    };
    let compression = match pick(&var, "COMPRESSION") {
        None => OtlpCompression::default(),
        Some((name, value)) => match value.to_ascii_lowercase().as_str() {
            "gzip" => OtlpCompression::Gzip,
            "none" => OtlpCompression::None,
            _ => return Err(bad(&name, format!("{value:?} is not gzip or none"))),
        },
    };
    let extra_roots = match pick(&var, "CERTIFICATE") {
        None => Vec::new(),
        Some((name, path)) => certificates(&name, &path)?,
    };
    let client_identity = match (pick(&var, "CLIENT_CERTIFICATE"), pick(&var, "CLIENT_KEY")) {
        (None, None) => None,
        (Some((name, _)), None) => {
            return Err(bad(
                &name,
                "set without OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY: mTLS needs both".to_owned(),
            ));
        }
        (None, Some((name, _))) => {
            return Err(bad(
                &name,
                "set without OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE: mTLS needs both"
                    .to_owned(),
            ));
        }
        (Some((cert_name, cert_path)), Some((key_name, key_path))) => {
            let chain = certificates(&cert_name, &cert_path)?;
            let key_pem = read(&key_name, &key_path)?;
            // The parse error could quote the file: name the path only.
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                bad(
                    &key_name,
                    format!("{key_path:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
                )
            })?;
            Some(ClientIdentity {
                chain,
                key: Arc::new(key),
            })
        }
    };
    Ok(OtlpTransport {
        protocol,
        compression,
        extra_roots,
        client_identity,
    })
}
