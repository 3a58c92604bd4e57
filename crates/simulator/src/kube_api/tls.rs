//! A throw-away certificate authority and server certificate for the fake API server, so
//! clients talk TLS to it exactly as they do to a cluster's API server.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated CA (PEM, for kubeconfigs) and the server's TLS configuration.
pub(crate) struct ServerTls {
    pub(crate) ca_pem: String,
    pub(crate) config: Arc<ServerConfig>,
}

pub(crate) fn generate() -> anyhow::Result<ServerTls> {
    let ca_key = KeyPair::generate()?;
    let ca_params = crate::actions::tls::ca_params("fake-kubernetes-ca")?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    let mut server_name = DistinguishedName::new();
    server_name.push(DnType::CommonName, "kube-apiserver");
    server_params.distinguished_name = server_name;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let chain = vec![
        CertificateDer::from(server_cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
