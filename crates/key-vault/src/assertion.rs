//! The client assertion Entra ID takes in place of a client secret: either a JWT signed with
//! the certificate's key (ARC's way), or the federated token the AKS workload-identity webhook
//! projects into the pod (read again on every request, as the kubelet rotates it).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use github_client::SecretString;
use rand::Rng as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use rsa::{RsaPrivateKey, RsaPublicKey};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha1::Digest as _;
use x509_cert::der::{Decode as _, Encode as _};

use crate::error::Error;

/// How long a signed assertion is valid. Entra ID accepts at most 10 minutes; it is used at
/// once, so a short life limits what a leaked one is worth.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// How the listener proves who it is to Entra ID.
#[derive(Debug, Clone)]
pub enum AssertionSource {
    /// A PEM file holding the certificate (its chain may follow) and its RSA private key.
    Certificate { path: PathBuf },
    /// Workload identity: the file's content is the assertion.
    FederatedTokenFile { path: PathBuf },
}

impl AssertionSource {
    /// The assertion for one token request to `token_endpoint` as `client_id`.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: SystemTime,
    ) -> Result<SecretString, Error> {
        match self {
            Self::Certificate { path } => {
                load_certificate(path)?.sign(client_id, token_endpoint, now)
            }
            Self::FederatedTokenFile { path } => read_federated_token(path),
        }
    }
}

fn read_federated_token(path: &Path) -> Result<SecretString, Error> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::FederatedToken {
        path: display.clone(),
        reason: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::FederatedToken {
            path: display,
            reason: "the file is empty".into(),
        });
    }
    Ok(SecretString::new(token))
}

/// A certificate and its key, checked to belong together.
pub struct LoadedCertificate {
    key: jsonwebtoken::EncodingKey,
    /// base64url SHA-1 of the certificate's DER: Entra ID finds the registered key by it.
    x5t: String,
    /// base64url SHA-256 of the same DER.
    x5t_s256: String,
}

impl std::fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

/// Read `path`: PEM with at least one `CERTIFICATE` and one RSA `PRIVATE KEY` (PKCS#8) or
/// `RSA PRIVATE KEY` (PKCS#1). The certificate used is the first whose public key is the
/// key's, so a chain may come in any order.
pub fn load_certificate(path: &Path) -> Result<LoadedCertificate, Error> {
    let display = path.display().to_string();
    let fail = |reason: String| Error::Certificate {
        path: display.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    // The key's parse errors are not shown: they could quote key material.
    let key = match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(PrivateKeyDer::Pkcs1(der)) => {
            rsa::pkcs1::DecodeRsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
        }
        Ok(PrivateKeyDer::Pkcs8(der)) => RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
            .map_err(|_| rsa::pkcs1::Error::Crypto),
        Ok(_) => {
            return Err(fail(
                "its private key is not RSA: Entra ID certificate assertions are RS256".into(),
            ));
        }
        Err(_) => {
            return Err(fail(
                "holds no PEM private key (PRIVATE KEY or RSA PRIVATE KEY block)".into(),
            ));
        }
    }
    .map_err(|_| fail("its private key is not a valid RSA key".into()))?;
    let public = key.to_public_key();
    let mut certificates = 0;
    let mut leaf = None;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| fail(format!("not valid PEM: {e}")))?;
        certificates += 1;
        if certificate_public_key(&cert).is_some_and(|k| k == public) {
            leaf = Some(cert);
            break;
        }
    }
    let leaf = match (leaf, certificates) {
        (Some(leaf), _) => leaf,
        (None, 0) => return Err(fail("holds no PEM CERTIFICATE block".into())),
        (None, _) => {
            return Err(fail(
                "no certificate in it matches its private key: put the certificate and the key \
                 it was issued for in one file"
                    .into(),
            ));
        }
    };
    let pkcs1 = key
        .to_pkcs1_der()
        .map_err(|_| fail("its private key cannot be encoded for signing".into()))?;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(LoadedCertificate {
        key: jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        x5t: b64(&sha1::Sha1::digest(leaf.as_ref())),
        x5t_s256: b64(&sha2::Sha256::digest(leaf.as_ref())),
    })
}

fn certificate_public_key(der: &[u8]) -> Option<RsaPublicKey> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().ok()?;
    RsaPublicKey::from_public_key_der(&spki).ok()
}

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl LoadedCertificate {
    /// The base64url SHA-1 thumbprint Entra ID matches against the registered certificate.
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// The client assertion: RS256, `x5t` and `x5t#S256` headers, `aud` the token endpoint,
    /// `iss` = `sub` = the client id, a random `jti`, valid from now for
    /// [`ASSERTION_LIFETIME`].
    pub fn sign(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: SystemTime,
    ) -> Result<SecretString, Error> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let jti: [u8; 16] = rand::rng().random();
        let claims = AssertionClaims {
            aud: token_endpoint,
            iss: client_id,
            sub: client_id,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(SecretString::from)
            .map_err(|e| Error::InvalidConfig {
                reason: format!("cannot sign the client assertion: {e}"),
            })
    }
}
