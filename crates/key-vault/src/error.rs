//! [`Error`]: what went wrong reading a secret from Key Vault, worded so the operator knows
//! what to fix, classified for the caller by [`retry::Classify`]. No variant carries a
//! secret's value, a client assertion or a token.

use retry::{Classify, FailureKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work as written (a URL, an empty id, a bad proxy).
    #[error("Azure Key Vault configuration: {reason}")]
    InvalidConfig { reason: String },
    /// Neither a certificate nor a federated token file to authenticate with.
    #[error(
        "no Azure credential: set azure_key_vault.certificate_path (a PEM file holding the \
         certificate and its private key), or run with workload identity \
         (AZURE_FEDERATED_TOKEN_FILE)"
    )]
    NoCredential,
    /// The certificate file is unreadable, is not PEM, or its key does not match.
    #[error("certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    /// The workload-identity token file cannot be read.
    #[error("federated token file {path}: {reason}")]
    FederatedToken { path: String, reason: String },
    /// Entra ID does not know the tenant.
    #[error(
        "Entra ID does not know tenant {tenant_id:?} ({code}): check azure_key_vault.tenant_id"
    )]
    TenantNotFound { tenant_id: String, code: String },
    /// Entra ID does not know the application in that tenant.
    #[error(
        "Entra ID has no application {client_id:?} in tenant {tenant_id:?} ({code}): check \
         azure_key_vault.client_id"
    )]
    ClientNotFound {
        client_id: String,
        tenant_id: String,
        code: String,
    },
    /// Entra ID refused the client assertion (wrong certificate, expired, not registered).
    #[error("Entra ID rejected the client assertion ({code}): {description}")]
    AssertionRejected { code: String, description: String },
    /// Entra ID answered the token request with another error.
    #[error("Entra ID token request failed with HTTP {status} ({code}): {description}")]
    TokenRequest {
        status: u16,
        code: String,
        description: String,
    },
    /// The vault has no secret of that name.
    #[error("secret {name:?} not found in Key Vault {vault}: check vault_lookup_key")]
    SecretNotFound { name: String, vault: String },
    /// The vault refused the token (401) or the identity lacks access (403).
    #[error(
        "Key Vault {vault} refused access to secret {name:?} (HTTP {status}, {code}): grant the \
         identity get permission on secrets"
    )]
    AccessDenied {
        vault: String,
        name: String,
        status: u16,
        code: String,
    },
    /// Another HTTP failure of the vault or of Entra ID.
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Http {
        endpoint: String,
        status: u16,
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// No answer: connection refused, reset, TLS failure, timeout.
    #[error("cannot reach {endpoint}: {reason}")]
    Transport {
        endpoint: String,
        reason: String,
        /// A TLS failure will not heal by itself; a refused connection may.
        tls: bool,
    },
    /// A success answer that is not what the service sends.
    #[error("{endpoint} sent an unexpected answer: {reason}")]
    InvalidResponse { endpoint: String, reason: String },
}

impl Classify for Error {
    fn kind(&self) -> FailureKind {
        match self {
            Error::InvalidConfig { .. }
            | Error::NoCredential
            | Error::Certificate { .. }
            | Error::FederatedToken { .. }
            | Error::TenantNotFound { .. }
            | Error::ClientNotFound { .. } => FailureKind::InvalidInput,
            Error::AssertionRejected { .. } => FailureKind::CredentialsRejected,
            Error::AccessDenied { status: 403, .. } => FailureKind::Forbidden,
            Error::AccessDenied { .. } => FailureKind::CredentialsRejected,
            Error::SecretNotFound { .. } => FailureKind::NotFound,
            Error::TokenRequest { status, .. } => status_kind(*status, None),
            Error::Http {
                status,
                retry_after,
                ..
            } => status_kind(*status, *retry_after),
            Error::Transport { tls: true, .. } => FailureKind::Rejected { status: None },
            Error::Transport { tls: false, .. } => FailureKind::Transient { retry_after: None },
            Error::InvalidResponse { .. } => FailureKind::Rejected { status: None },
        }
    }
}

/// The workspace's reading of an HTTP status: 408, 429 and 5xx but 501 may heal.
pub(crate) fn status_kind(status: u16, retry_after: Option<std::time::Duration>) -> FailureKind {
    match status {
        408 | 429 => FailureKind::Transient { retry_after },
        501 => FailureKind::Rejected { status: Some(501) },
        500..=599 => FailureKind::Transient { retry_after },
        404 => FailureKind::NotFound,
        _ => FailureKind::Rejected {
            status: Some(status),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let http = |status| Error::Http {
            endpoint: "e".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(http(503).kind().is_transient());
        assert!(http(429).kind().is_transient());
        assert!(!http(501).kind().is_transient());
        assert!(!http(400).kind().is_transient());
        assert_eq!(
            Error::SecretNotFound {
                name: "n".into(),
                vault: "v".into()
            }
            .kind(),
            FailureKind::NotFound
        );
        assert_eq!(Error::NoCredential.kind(), FailureKind::InvalidInput);
    }
}
