//! A throw-away CA for the OTLP sink: a server certificate for `127.0.0.1`/`localhost` and,
//! for mTLS, a client certificate, both signed by it; the CA is the only root the server
//! trusts for clients.

use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// PEM files a client needs, and the server's TLS configuration.
pub(super) struct SinkTls {
    pub(super) ca_pem: String,
    /// `(certificate, key)` PEM signed by the CA (also made when the server does not ask).
    pub(super) client_pem: (String, String),
    pub(super) config: Arc<ServerConfig>,
}

fn named(common_name: &str, sans: Vec<String>) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(sans)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    Ok(params)
}

pub(super) fn generate(require_client_cert: bool) -> anyhow::Result<SinkTls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = KeyPair::generate()?;
    let ca_params = crate::actions::tls::ca_params("fake-otlp-collector-ca")?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let server_params = named(
        "otel-collector",
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
    )?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = named("ghalistener", Vec::new())?;
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer)?;

    let ca_der = CertificateDer::from(ca_cert.der().to_vec());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let chain = vec![CertificateDer::from(server_cert.der().to_vec()), ca_der];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SinkTls {
        ca_pem: ca_cert.pem(),
        client_pem: (client_cert.pem(), client_key.serialize_pem()),
        config: Arc::new(config),
    })
}
