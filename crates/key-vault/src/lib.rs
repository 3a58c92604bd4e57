//! GitHub credentials from Azure Key Vault, as ARC's listener reads them (`vault_type:
//! azure_key_vault`), plus workload identity.
//!
//! Entra ID gives a token by the client-credentials grant with a client assertion: a JWT
//! signed with a certificate's key (ARC's way), or the federated token the AKS
//! workload-identity webhook projects. The token is cached until shortly before it expires;
//! the secret is read fresh on every [`KeyVaultClient::get_secret`], so a rotated secret is
//! picked up. reqwest + jsonwebtoken rather than `azure_identity`, whose certificate
//! credential needs OpenSSL; TLS, trust (`SSL_CERT_FILE`) and proxy matching come from
//! `github-client`.
//!
//! Layout:
//! - `client`: [`KeyVaultClient`]: token cache, the secret read, the challenge, retries.
//! - `settings`: its config ([`KeyVaultConfig`]), environment ([`AzureEnvironment`]) and
//!   options.
//! - `assertion`: the certificate (PEM, key match, `x5t`) and the signed assertion, or the
//!   federated token file.
//! - `error`: [`Error`], classified by [`retry::Classify`].
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod assertion;
mod client;
mod error;
mod settings;

pub use assertion::{ASSERTION_LIFETIME, AssertionSource, LoadedCertificate, load_certificate};
pub use client::{API_VERSION, DEFAULT_AUTHORITY_HOST, DEFAULT_RESOURCE, KeyVaultClient};
pub use error::Error;
pub use settings::{AzureEnvironment, KeyVaultConfig, KeyVaultOptions};
