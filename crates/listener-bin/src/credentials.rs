//! Where the GitHub credentials come from, and reading them again.
//!
//! The listener reads its credentials once at start ([`CredentialsSource::load`]) and again
//! whenever GitHub rejects the ones in use: ARC's controller rewrites the config secret and
//! the kubelet updates the mounted file in place, and a secret rotated in Azure Key Vault is
//! read fresh, so a rotated token heals without a restart. Each way of holding credentials is
//! one variant here; the loop never knows which it has.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use github_client::Credentials;
use key_vault::{AzureEnvironment, KeyVaultClient, KeyVaultOptions};
use retry::{Classify, FailureKind};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigCredentials, ConfigError, parse_app_config};
use crate::listener::sleep_or_shutdown;
use crate::recovery::{BlockedCall, Degradation, DegradedReason};

/// Where [`CredentialsSource::load`] reads the credentials from.
#[derive(Clone)]
pub enum CredentialsSource {
    /// Inline in ARC's `config.json` at `path`, read again on every load.
    ConfigFile { path: PathBuf },
    /// The same credentials for the process's life (a config given without its file).
    Fixed(Credentials),
    /// ARC's AppConfig JSON in an Azure Key Vault secret (`vault_type: azure_key_vault`),
    /// read again on every load; the Entra ID token is cached in the client.
    KeyVault(Arc<KeyVaultSecret>),
}

/// One secret of one vault, and the client that reads it.
#[derive(Debug)]
pub struct KeyVaultSecret {
    pub client: KeyVaultClient,
    pub name: String,
}

/// Why the credentials could not be read. Never carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the GitHub credentials from Azure Key Vault: {0}")]
    KeyVault(#[from] key_vault::Error),
    /// The vault secret is not ARC's AppConfig JSON, or its credentials are incomplete.
    #[error("Key Vault secret {name:?} {problem}")]
    VaultSecret { name: String, problem: String },
}

impl Classify for CredentialsError {
    fn kind(&self) -> FailureKind {
        match self {
            Self::KeyVault(e) => e.kind(),
            Self::Config(_) | Self::VaultSecret { .. } => FailureKind::InvalidInput,
        }
    }
}

impl CredentialsSource {
    /// Where a validated config's credentials come from: the vault when `vault_type` is set,
    /// else its file when it has one (so a rotated secret is picked up), else the credentials
    /// it holds now. Fails, naming the key, when the config's credentials cannot work as
    /// written.
    pub fn for_config(config: &Config, path: Option<&Path>) -> Result<Self, ConfigError> {
        if !config.vault_type.is_empty() {
            let (name, vault) = config.key_vault()?;
            let client = KeyVaultClient::new(
                &vault,
                &AzureEnvironment::from_env(),
                KeyVaultOptions::default(),
            )
            .map_err(|e| ConfigError::Invalid {
                key: "azure_key_vault".into(),
                problem: e.to_string(),
            })?;
            return Ok(Self::KeyVault(Arc::new(KeyVaultSecret { client, name })));
        }
        let credentials = from_config(config)?;
        Ok(match path {
            Some(path) => Self::ConfigFile {
                path: path.to_path_buf(),
            },
            None => Self::Fixed(credentials),
        })
    }

    /// The credentials as they are now.
    pub async fn load(&self) -> Result<Credentials, CredentialsError> {
        match self {
            // A config file is a few hundred bytes on a local volume: a blocking read is
            // cheaper than a hop to the blocking pool.
            Self::ConfigFile { path } => Ok(from_config(&Config::load(path)?)?),
            Self::Fixed(credentials) => Ok(credentials.clone()),
            Self::KeyVault(secret) => {
                let value = secret.client.get_secret(&secret.name).await?;
                let parsed = parse_app_config(value.expose_secret().as_bytes()).map_err(|e| {
                    CredentialsError::VaultSecret {
                        name: secret.name.clone(),
                        problem: match e {
                            ConfigError::Invalid { key, problem } => {
                                format!("key `{key}`: {problem}")
                            }
                            ConfigError::Json { reason, .. } | ConfigError::Read { reason, .. } => {
                                format!("is not ARC's app config JSON: {reason}")
                            }
                        },
                    }
                })?;
                tracing::info!(
                    vault = secret.client.vault_url(),
                    secret = %secret.name,
                    "read the GitHub credentials from Azure Key Vault"
                );
                Ok(github_credentials(parsed))
            }
        }
    }

    /// The credentials at start, waiting out in place what can clear: the vault unreachable
    /// or answering 5xx after the client's retries, its secret missing, access to it
    /// denied, the client assertion rejected. Meanwhile the listener is degraded
    /// `credentials_unavailable` (not ready, the gauge at 1, one log line per change of
    /// state) and reads the credentials again after each wait. Only what cannot work as
    /// written ([`FailureKind::InvalidInput`]: a config or secret with a bad key, an
    /// unreadable certificate) is returned as an error. `Ok(None)`: shutdown came first.
    pub async fn load_waiting_out(
        &self,
        degradation: &Degradation,
        shutdown: &CancellationToken,
    ) -> Result<Option<Credentials>, CredentialsError> {
        loop {
            let error = match self.load().await {
                Ok(credentials) => {
                    degradation.succeeded(BlockedCall::Session);
                    return Ok(Some(credentials));
                }
                Err(error) if error.kind() == FailureKind::InvalidInput => return Err(error),
                Err(error) => error,
            };
            let wait =
                degradation.wait_before_retry(DegradedReason::CredentialsUnavailable, &error);
            if sleep_or_shutdown(wait, shutdown).await {
                return Ok(None);
            }
        }
    }
}

/// The inline credentials of a validated config.
pub fn from_config(config: &Config) -> Result<Credentials, ConfigError> {
    Ok(github_credentials(config.credentials()?))
}

fn github_credentials(credentials: ConfigCredentials) -> Credentials {
    match credentials {
        ConfigCredentials::Token(token) => Credentials::Token(token),
        ConfigCredentials::App {
            app_id,
            installation_id,
            private_key,
        } => Credentials::App {
            app_id,
            installation_id,
            private_key,
        },
    }
}
