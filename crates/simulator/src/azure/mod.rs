//! A fake of Entra ID's token endpoint and of Azure Key Vault, on one TLS server.
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant with a client
//!   assertion. A certificate assertion is verified as Entra ID does: its `x5t` names a
//!   registered certificate, its RS256 signature verifies with that certificate's key, `aud`
//!   is this endpoint, `iss` = `sub` = the client id, `nbf`/`exp` hold now and span at most
//!   10 minutes. A federated token (workload identity) must be one accepted for the client.
//!   Errors carry Entra's AADSTS codes in `error_description` and `error_codes`.
//! - `GET /secrets/{name}?api-version=...`: Key Vault. Without a valid token for the vault's
//!   resource it answers 401 with the `WWW-Authenticate` challenge; a missing secret is 404
//!   `SecretNotFound`.
//!
//! Its own serde types; it never imports the client it stands in for. Controls: register a
//! certificate client ([`FakeAzure::register_certificate`]), accept a federated token, set
//! or rotate a secret, count requests.

mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha1::Digest as _;

/// A throwaway RSA key (PKCS#8 PEM) for a registered test client.
pub const CLIENT_KEY_PEM: &str = include_str!("fixtures/client_key.pem");
/// Another throwaway RSA key, which no registered certificate matches.
pub const OTHER_KEY_PEM: &str = include_str!("fixtures/other_key.pem");

/// The resource Key Vault's public cloud challenges for.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

#[derive(Debug, Clone)]
pub struct FakeAzureConfig {
    /// The resource named in the 401 challenge; tokens must be for it.
    pub vault_resource: String,
    /// `expires_in` of the tokens issued.
    pub token_ttl: Duration,
}

impl Default for FakeAzureConfig {
    fn default() -> Self {
        Self {
            vault_resource: VAULT_RESOURCE.to_owned(),
            token_ttl: Duration::from_secs(3599),
        }
    }
}

struct RegisteredCertificate {
    x5t: String,
    /// PKCS#1 `RSAPublicKey` DER, as the JWT verifier takes it.
    public_key_der: Vec<u8>,
}

#[derive(Default)]
struct Client {
    certificates: Vec<RegisteredCertificate>,
    federated_tokens: Vec<String>,
}

struct IssuedToken {
    resource: String,
    expires_at: SystemTime,
}

/// Counters of what the fake answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AzureCounts {
    pub token_requests: u64,
    pub tokens_issued: u64,
    pub secret_requests: u64,
    pub secrets_served: u64,
}

#[derive(Default)]
struct State {
    /// tenant → client id → client.
    tenants: HashMap<String, HashMap<String, Client>>,
    secrets: HashMap<String, (String, u64)>,
    tokens: HashMap<String, IssuedToken>,
    counts: AzureCounts,
    /// Every access token issued and client assertion received, for leak scans.
    issued: Vec<String>,
    assertions: Vec<String>,
    /// The next requests answered with this status instead (count, status).
    failing: Option<(u32, u16)>,
}

impl State {
    /// The application `client_id` of `tenant_id`, registered on first use.
    fn client(&mut self, tenant_id: &str, client_id: &str) -> &mut Client {
        self.tenants
            .entry(tenant_id.to_owned())
            .or_default()
            .entry(client_id.to_owned())
            .or_default()
    }
}

struct Inner {
    config: FakeAzureConfig,
    base_url: String,
    state: Mutex<State>,
    server: crate::accept::ServerTask,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake, on `https://127.0.0.1:PORT`: both the Entra ID authority host and the
/// vault URL.
#[derive(Clone)]
pub struct FakeAzure {
    inner: Arc<Inner>,
    ca_pem: String,
}

impl FakeAzure {
    pub async fn start(config: FakeAzureConfig) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let tls = crate::actions::tls::generate()?;
        let (server, shutdown_rx) = crate::accept::ServerTask::new();
        let inner = Arc::new(Inner {
            config,
            base_url: format!("https://127.0.0.1:{}", addr.port()),
            state: Mutex::new(State::default()),
            server,
        });
        let task = tokio::spawn(server::serve(
            Arc::clone(&inner),
            listener,
            tls.acceptor,
            shutdown_rx,
        ));
        inner.server.set(task);
        tracing::info!(url = %inner.base_url, "fake Entra ID and Key Vault started");
        Ok(Self {
            inner,
            ca_pem: tls.ca_pem,
        })
    }

    /// `https://127.0.0.1:PORT`: the authority host (`AZURE_AUTHORITY_HOST`) and the vault URL.
    pub fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// The CA (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Register an application whose credential is a certificate for `key_pem` (PKCS#8 RSA);
    /// returns that self-signed certificate's PEM, to put beside the key in the client's file.
    pub fn register_certificate(
        &self,
        tenant_id: &str,
        client_id: &str,
        key_pem: &str,
    ) -> anyhow::Result<String> {
        let key = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(key_pem, &rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("fake-entra {client_id}"));
        let cert = params.self_signed(&key)?;
        let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha1::Sha1::digest(cert.der().as_ref()));
        self.inner
            .state()
            .client(tenant_id, client_id)
            .certificates
            .push(RegisteredCertificate {
                x5t,
                public_key_der: key.public_key_raw().to_vec(),
            });
        Ok(cert.pem())
    }

    /// Accept `token` as a federated credential of the application (workload identity).
    pub fn accept_federated_token(&self, tenant_id: &str, client_id: &str, token: &str) {
        self.inner
            .state()
            .client(tenant_id, client_id)
            .federated_tokens
            .push(token.to_owned());
    }

    /// Create the secret, or add a new latest version of it.
    pub fn set_secret(&self, name: &str, value: &str) {
        let mut state = self.inner.state();
        let version = state.secrets.get(name).map_or(1, |(_, v)| v + 1);
        state
            .secrets
            .insert(name.to_owned(), (value.to_owned(), version));
    }

    /// Remove every version of the secret.
    pub fn delete_secret(&self, name: &str) {
        self.inner.state().secrets.remove(name);
    }

    /// Answer the next `times` requests (token or secret) with `status` and an empty JSON
    /// body, as an overloaded service would.
    pub fn fail_next(&self, times: u32, status: u16) {
        self.inner.state().failing = (times > 0).then_some((times, status));
    }

    /// Make every issued token invalid, as a revocation would.
    pub fn revoke_tokens(&self) {
        self.inner.state().tokens.clear();
    }

    /// Every access token issued so far (revoked ones too).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.state().issued.clone()
    }

    /// Every client assertion received so far.
    pub fn received_assertions(&self) -> Vec<String> {
        self.inner.state().assertions.clone()
    }

    pub fn counts(&self) -> AzureCounts {
        self.inner.state().counts
    }

    /// Move a listener's GitHub credentials into this vault, as an operator following the
    /// docs would: register a certificate client, write its PEM (certificate + key) and this
    /// fake's CA under `dir`, store `config`'s inline credentials as the secret `secret_name`,
    /// and point `config` at the vault. Returns the environment the listener needs
    /// (`SSL_CERT_FILE`, `AZURE_AUTHORITY_HOST`).
    pub fn take_over_credentials(
        &self,
        config: &mut serde_json::Value,
        dir: &std::path::Path,
        secret_name: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        const TENANT: &str = "00000000-0000-4000-8000-0000000demo0";
        const CLIENT: &str = "00000000-0000-4000-8000-0000000cl1e0";
        let cert = self.register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)?;
        let certificate_path = dir.join("key-vault-client.pem");
        std::fs::write(&certificate_path, format!("{cert}{CLIENT_KEY_PEM}"))?;
        let ca_path = dir.join("azure-ca.pem");
        std::fs::write(&ca_path, &self.ca_pem)?;
        let mut secret = serde_json::Map::new();
        for key in [
            "github_token",
            "github_app_id",
            "github_app_installation_id",
            "github_app_private_key",
        ] {
            if let Some(value) = config.get(key).filter(|v| !is_blank(v)) {
                secret.insert(key.to_owned(), value.clone());
            }
            config[key] = match key {
                "github_app_installation_id" => serde_json::json!(0),
                _ => serde_json::json!(""),
            };
        }
        self.set_secret(secret_name, &serde_json::Value::Object(secret).to_string());
        config["vault_type"] = serde_json::json!("azure_key_vault");
        config["vault_lookup_key"] = serde_json::json!(secret_name);
        config["azure_key_vault"] = serde_json::json!({
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "url": self.url(),
            "certificate_path": certificate_path,
        });
        Ok(vec![
            ("SSL_CERT_FILE".to_owned(), ca_path.display().to_string()),
            ("AZURE_AUTHORITY_HOST".to_owned(), self.url()),
        ])
    }

    /// Stop serving and close every connection.
    pub async fn shutdown(self) {
        self.inner.server.stop().await;
    }
}

impl std::fmt::Debug for FakeAzure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAzure")
            .field("url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

fn is_blank(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Number(n) => n.as_i64() == Some(0),
        _ => false,
    }
}
