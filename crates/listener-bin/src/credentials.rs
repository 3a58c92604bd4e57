//! Where the GitHub credentials come from, and reading them again.
//!
//! The listener reads its credentials once at start ([`CredentialsSource::load`]) and again
//! whenever GitHub rejects the ones in use: ARC's controller rewrites the config secret and
//! the kubelet updates the mounted file in place, so a rotated token heals without a restart.
//! Each way of holding credentials is one variant here; the loop never knows which it has.

use std::path::{Path, PathBuf};

use github_client::Credentials;

use crate::config::{Config, ConfigCredentials, ConfigError};

/// Where [`CredentialsSource::load`] reads the credentials from.
#[derive(Clone)]
pub enum CredentialsSource {
    /// Inline in ARC's `config.json` at `path`, read again on every load.
    ConfigFile { path: PathBuf },
    /// The same credentials for the process's life (a config given without its file).
    Fixed(Credentials),
}

/// Why the credentials could not be read. Never carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl CredentialsSource {
    /// Where a validated config's credentials come from: its file when it has one (so a
    /// rotated secret is picked up), else the credentials it holds now. Fails, naming the
    /// key, when the config's credentials cannot work as written.
    pub fn for_config(config: &Config, path: Option<&Path>) -> Result<Self, ConfigError> {
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
        }
    }
}

/// The inline credentials of a validated config.
pub fn from_config(config: &Config) -> Result<Credentials, ConfigError> {
    Ok(match config.credentials()? {
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
    })
}
