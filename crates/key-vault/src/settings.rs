//! What a [`crate::KeyVaultClient`] is built from: ARC's `azure_key_vault` object, the
//! environment the AKS workload-identity webhook sets, and client options.

use std::path::PathBuf;
use std::time::Duration;

use github_client::ProxyConfig;
use retry::Backoff;

/// ARC's `azure_key_vault` config object.
#[derive(Debug, Clone, Default)]
pub struct KeyVaultConfig {
    pub tenant_id: String,
    pub client_id: String,
    /// The vault, `https://NAME.vault.azure.net`.
    pub url: String,
    /// PEM with the certificate and its key; empty for workload identity.
    pub certificate_path: String,
    pub proxy: ProxyConfig,
}

/// What the AKS workload-identity webhook (and the Azure SDKs) read from the environment.
#[derive(Debug, Clone, Default)]
pub struct AzureEnvironment {
    pub federated_token_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub authority_host: Option<String>,
}

impl AzureEnvironment {
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_AUTHORITY_HOST`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        Self {
            federated_token_file: get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            client_id: get("AZURE_CLIENT_ID"),
            tenant_id: get("AZURE_TENANT_ID"),
            authority_host: get("AZURE_AUTHORITY_HOST"),
        }
    }
}

/// Client settings beyond the config.
#[derive(Debug, Clone)]
pub struct KeyVaultOptions {
    /// PEM roots trusted on top of the system's (`SSL_CERT_FILE` is honoured there).
    pub extra_roots_pem: Option<String>,
    pub backoff: Backoff,
    pub max_retries: u32,
    pub request_timeout: Duration,
}

impl Default for KeyVaultOptions {
    fn default() -> Self {
        Self {
            extra_roots_pem: None,
            backoff: retry::policies::KEY_VAULT_REQUEST,
            max_retries: retry::policies::KEY_VAULT_REQUEST_MAX_RETRIES,
            request_timeout: Duration::from_secs(30),
        }
    }
}
