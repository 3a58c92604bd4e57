//! [`KeyVaultClient`]: an Entra ID token by the client-credentials grant with a client
//! assertion, cached until shortly before it expires, then `GET {vault}/secrets/{name}`.
//! Every request is retried through [`retry::Backoff`] on what may heal (connection,
//! timeout, 408, 429, 5xx but 501).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use github_client::SecretString;
use retry::Backoff;
use retry::describe::truncate;
use url::Url;

use crate::assertion::AssertionSource;
use crate::error::Error;
use crate::settings::{AzureEnvironment, KeyVaultConfig, KeyVaultOptions};

/// Entra ID's public-cloud authority; `AZURE_AUTHORITY_HOST` names another (sovereign clouds).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The Key Vault REST API version asked for.
pub const API_VERSION: &str = "7.4";
/// The resource tokens are asked for until a vault's 401 challenge names another.
pub const DEFAULT_RESOURCE: &str = "https://vault.azure.net";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Error texts from the services are cut to this many bytes.
const MAX_ERROR_TEXT: usize = 512;

struct CachedToken {
    resource: String,
    token: SecretString,
    refresh_at: Instant,
}

/// Reads secrets from one vault as one identity. Cheap to share behind an `Arc`.
pub struct KeyVaultClient {
    http: reqwest::Client,
    vault: Url,
    token_endpoint: String,
    client_id: String,
    assertion: AssertionSource,
    /// The resource of the last challenge (or [`DEFAULT_RESOURCE`]) and its token.
    resource: std::sync::Mutex<String>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    backoff: Backoff,
    max_retries: u32,
}

impl std::fmt::Debug for KeyVaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultClient")
            .field("vault", &self.vault.as_str())
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("assertion", &self.assertion)
            .finish_non_exhaustive()
    }
}

/// One HTTP answer, read whole.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Vec<u8>,
}

impl KeyVaultClient {
    /// Check the config (the certificate itself is read for each token, so a renewed one
    /// is picked up) and build the HTTP client.
    pub fn new(
        config: &KeyVaultConfig,
        env: &AzureEnvironment,
        options: KeyVaultOptions,
    ) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        let pick = |configured: &str, from_env: &Option<String>| {
            let configured = configured.trim();
            if configured.is_empty() {
                from_env.clone().unwrap_or_default()
            } else {
                configured.to_owned()
            }
        };
        let tenant_id = pick(&config.tenant_id, &env.tenant_id);
        let client_id = pick(&config.client_id, &env.client_id);
        if tenant_id.is_empty() {
            return Err(invalid(
                "azure_key_vault.tenant_id is missing (and AZURE_TENANT_ID is not set)".into(),
            ));
        }
        if !tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(invalid(format!(
                "azure_key_vault.tenant_id {tenant_id:?} is not a tenant id or domain"
            )));
        }
        if client_id.is_empty() {
            return Err(invalid(
                "azure_key_vault.client_id is missing (and AZURE_CLIENT_ID is not set)".into(),
            ));
        }
        let vault = https_url("azure_key_vault.url", &config.url)?;
        let authority = https_url(
            "AZURE_AUTHORITY_HOST",
            env.authority_host
                .as_deref()
                .unwrap_or(DEFAULT_AUTHORITY_HOST),
        )?;
        let token_endpoint = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            authority.as_str().trim_end_matches('/')
        );
        let assertion = if !config.certificate_path.trim().is_empty() {
            AssertionSource::Certificate {
                path: PathBuf::from(config.certificate_path.trim()),
            }
        } else if let Some(path) = &env.federated_token_file {
            AssertionSource::FederatedTokenFile { path: path.clone() }
        } else {
            return Err(Error::NoCredential);
        };
        let tls = github_client::tls_config(options.extra_roots_pem.as_deref())
            .map_err(|e| invalid(e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(30)))
            .timeout(options.request_timeout)
            .no_proxy();
        if !config.proxy.is_empty() {
            let proxy = config.proxy.clone();
            tracing::info!(proxy = ?proxy, "using azure_key_vault.proxy");
            builder = builder.proxy(reqwest::Proxy::custom(move |url| proxy.proxy_for(url)));
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            vault,
            token_endpoint,
            client_id,
            assertion,
            resource: std::sync::Mutex::new(DEFAULT_RESOURCE.to_owned()),
            token: tokio::sync::Mutex::new(None),
            backoff: options.backoff,
            max_retries: options.max_retries,
        })
    }

    /// The vault's URL, for messages.
    pub fn vault_url(&self) -> &str {
        self.vault.as_str().trim_end_matches('/')
    }

    /// The latest version of secret `name`.
    pub async fn get_secret(&self, name: &str) -> Result<SecretString, Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "secret name {name:?} is not a Key Vault secret name (letters, digits, '-')"
                ),
            });
        }
        let mut url = self.vault.clone();
        url.set_path(&format!("/secrets/{name}"));
        url.set_query(Some(&format!("api-version={API_VERSION}")));
        let endpoint = format!("Key Vault {}", self.vault_url());
        // One retry after a 401: the token was revoked early, or the challenge names another
        // resource than the one we asked a token for.
        for attempt in 0..2 {
            let resource = self.current_resource();
            let token = self.token(&resource).await?;
            let answer = self
                .execute(&endpoint, || {
                    Ok(self
                        .http
                        .get(url.clone())
                        .bearer_auth(token.expose_secret()))
                })
                .await?;
            match answer.status {
                200 => return parse_secret(&endpoint, &answer.body),
                401 if attempt == 0 => {
                    self.forget_token().await;
                    if let Some(challenged) =
                        answer.challenge.as_deref().and_then(challenge_resource)
                        && challenged != resource
                    {
                        tracing::info!(resource = %challenged, "Key Vault asks for a token of another resource");
                        self.set_resource(challenged);
                    }
                }
                401 | 403 => {
                    return Err(Error::AccessDenied {
                        vault: self.vault_url().to_owned(),
                        name: name.to_owned(),
                        status: answer.status,
                        code: vault_error(&answer.body).0,
                    });
                }
                404 => {
                    return Err(Error::SecretNotFound {
                        name: name.to_owned(),
                        vault: self.vault_url().to_owned(),
                    });
                }
                status => {
                    let (code, message) = vault_error(&answer.body);
                    return Err(Error::Http {
                        endpoint,
                        status,
                        message: format!("{code}: {message}"),
                        retry_after: None,
                    });
                }
            }
        }
        Err(Error::AccessDenied {
            vault: self.vault_url().to_owned(),
            name: name.to_owned(),
            status: 401,
            code: "Unauthorized".into(),
        })
    }

    fn current_resource(&self) -> String {
        self.resource
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| DEFAULT_RESOURCE.to_owned())
    }

    fn set_resource(&self, resource: String) {
        if let Ok(mut r) = self.resource.lock() {
            *r = resource;
        }
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// A token for `resource`, from the cache while it has time left.
    async fn token(&self, resource: &str) -> Result<SecretString, Error> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref()
            && c.resource == resource
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let endpoint = format!("Entra ID {}", self.token_endpoint);
        let answer = self
            .execute(&endpoint, || {
                // A fresh assertion per attempt: Entra ID refuses a replayed `jti`, and the
                // federated token file may have been rotated meanwhile.
                let assertion = self.assertion.assertion(
                    &self.client_id,
                    &self.token_endpoint,
                    SystemTime::now(),
                )?;
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", self.client_id.as_str()),
                    ("scope", scope.as_str()),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", assertion.expose_secret()),
                ];
                Ok(self.http.post(&self.token_endpoint).form(&form))
            })
            .await?;
        if answer.status != 200 {
            return Err(self.token_error(answer.status, &answer.body));
        }
        let (token, expires_in) = parse_token(&endpoint, &answer.body)?;
        *cached = Some(CachedToken {
            resource: resource.to_owned(),
            token: token.clone(),
            refresh_at: Instant::now() + reuse_for(expires_in),
        });
        tracing::debug!(
            expires_in_secs = expires_in.as_secs(),
            "got an Entra ID token for Key Vault"
        );
        Ok(token)
    }

    fn token_error(&self, status: u16, body: &[u8]) -> Error {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct EntraError {
            error: String,
            error_description: String,
            error_codes: Vec<u64>,
        }
        let parsed: EntraError = serde_json::from_slice(body).unwrap_or_default();
        // Entra's description starts with the code and ends with trace ids on later lines.
        let description = truncate(
            parsed.error_description.lines().next().unwrap_or_default(),
            MAX_ERROR_TEXT,
        );
        let code = parsed
            .error_codes
            .first()
            .map(|c| format!("AADSTS{c}"))
            .or_else(|| {
                description
                    .split(':')
                    .next()
                    .filter(|c| c.starts_with("AADSTS"))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                if parsed.error.is_empty() {
                    format!("HTTP {status}")
                } else {
                    parsed.error.clone()
                }
            });
        let tenant_id = self
            .token_endpoint
            .rsplit('/')
            .nth(3)
            .unwrap_or_default()
            .to_owned();
        match code.as_str() {
            "AADSTS90002" | "AADSTS900023" => Error::TenantNotFound { tenant_id, code },
            "AADSTS700016" => Error::ClientNotFound {
                client_id: self.client_id.clone(),
                tenant_id,
                code,
            },
            _ if parsed.error == "invalid_client" || status == 401 => {
                Error::AssertionRejected { code, description }
            }
            _ if status == 429 || status >= 500 => Error::Http {
                endpoint: format!("Entra ID {}", self.token_endpoint),
                status,
                message: format!("{code}: {description}"),
                retry_after: None,
            },
            _ => Error::TokenRequest {
                status,
                code,
                description,
            },
        }
    }

    /// Send what `make` builds, again after what may heal, within the retry budget. The
    /// last answer is returned whatever its status; only a transport failure is an error.
    async fn execute(
        &self,
        endpoint: &str,
        make: impl Fn() -> Result<reqwest::RequestBuilder, Error>,
    ) -> Result<Answer, Error> {
        let mut attempt = 0;
        loop {
            let outcome = match make()?.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let header = |name| response.headers().get(name)?.to_str().ok();
                    let retry_after = header(reqwest::header::RETRY_AFTER)
                        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                    let challenge = header(reqwest::header::WWW_AUTHENTICATE).map(str::to_owned);
                    match response.bytes().await {
                        Ok(body) => Ok((
                            Answer {
                                status,
                                challenge,
                                body: body.to_vec(),
                            },
                            retry_after,
                        )),
                        Err(e) => Err(transport(endpoint, &e)),
                    }
                }
                Err(e) => Err(transport(endpoint, &e)),
            };
            let (retryable, retry_after) = match &outcome {
                Ok((answer, retry_after)) => (retryable_status(answer.status), *retry_after),
                Err(e) => (matches!(e, Error::Transport { tls: false, .. }), None),
            };
            if !retryable || attempt >= self.max_retries {
                return outcome.map(|(answer, _)| answer);
            }
            let wait = self.backoff.delay(attempt, retry_after);
            tracing::warn!(
                endpoint,
                attempt = attempt + 1,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Azure request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// How long a token that expires in `expires_in` is reused: until 5 minutes before it
/// expires, or half its life when it is short, so a slow request never carries a dead one.
fn reuse_for(expires_in: Duration) -> Duration {
    let margin = Duration::from_secs(300).min(expires_in / 2);
    expires_in.saturating_sub(margin)
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..=599).contains(&status) && status != 501
}

fn transport(endpoint: &str, e: &reqwest::Error) -> Error {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut tls = false;
    while let Some(s) = source {
        let text = s.to_string();
        tls |= s.downcast_ref::<rustls::Error>().is_some() || text.contains("certificate");
        reason.push_str(": ");
        reason.push_str(&text);
        source = s.source();
    }
    Error::Transport {
        endpoint: endpoint.to_owned(),
        reason: truncate(&reason, MAX_ERROR_TEXT),
        tls,
    }
}

fn https_url(key: &str, value: &str) -> Result<Url, Error> {
    let url = Url::parse(value.trim()).map_err(|e| Error::InvalidConfig {
        reason: format!("{key} {value:?} is not a URL: {e}"),
    })?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(Error::InvalidConfig {
            reason: format!("{key} {value:?} must be an https URL with a host"),
        });
    }
    Ok(url)
}

fn parse_token(endpoint: &str, body: &[u8]) -> Result<(SecretString, Duration), Error> {
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        access_token: String,
        /// Seconds; some authorities send it as a string.
        expires_in: serde_json::Value,
    }
    let bad = |reason: &str| Error::InvalidResponse {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    // serde's error could quote the token: not shown.
    let answer: TokenAnswer =
        serde_json::from_slice(body).map_err(|_| bad("not a token answer"))?;
    let expires_in = answer
        .expires_in
        .as_u64()
        .or_else(|| answer.expires_in.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| bad("expires_in is not a number of seconds"))?;
    if answer.access_token.is_empty() {
        return Err(bad("the access token is empty"));
    }
    Ok((
        SecretString::new(answer.access_token),
        Duration::from_secs(expires_in),
    ))
}

fn parse_secret(endpoint: &str, body: &[u8]) -> Result<SecretString, Error> {
    #[derive(serde::Deserialize)]
    struct SecretBundle {
        value: Option<String>,
    }
    // serde's error could quote the secret: not shown.
    let bundle: SecretBundle =
        serde_json::from_slice(body).map_err(|_| Error::InvalidResponse {
            endpoint: endpoint.to_owned(),
            reason: "not a secret bundle".into(),
        })?;
    bundle
        .value
        .map(SecretString::new)
        .ok_or_else(|| Error::InvalidResponse {
            endpoint: endpoint.to_owned(),
            reason: "the secret bundle has no value".into(),
        })
}

/// Key Vault's `{"error": {"code", "message"}}`.
fn vault_error(body: &[u8]) -> (String, String) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| {
        value["error"][k]
            .as_str()
            .map(|s| truncate(s, MAX_ERROR_TEXT))
            .unwrap_or_default()
    };
    (field("code"), field("message"))
}

/// The `resource` parameter of `WWW-Authenticate: Bearer authorization="...", resource="..."`
/// (newer vaults send `scope` instead, already ending in `/.default`).
pub(crate) fn challenge_resource(header: &str) -> Option<String> {
    let params = header.trim().strip_prefix("Bearer")?;
    let mut scope = None;
    for part in params.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "resource" if !value.is_empty() => return Some(value.to_owned()),
            "scope" if !value.is_empty() => {
                scope = Some(value.trim_end_matches("/.default").to_owned())
            }
            _ => {}
        }
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;
    use github_client::ProxyConfig;

    #[test]
    fn tokens_are_reused_until_shortly_before_they_expire() {
        let secs = Duration::from_secs;
        assert_eq!(reuse_for(secs(3599)), secs(3299));
        assert_eq!(reuse_for(secs(600)), secs(300));
        assert_eq!(reuse_for(secs(60)), secs(30));
        assert_eq!(reuse_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn reads_the_challenge() {
        assert_eq!(
            challenge_resource(
                r#"Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net""#
            )
            .as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            challenge_resource(
                r#"Bearer authorization="https://login.x/t", scope="https://vault.azure.cn/.default""#
            )
            .as_deref(),
            Some("https://vault.azure.cn")
        );
        assert_eq!(challenge_resource("Basic realm=x"), None);
    }

    #[test]
    fn config_errors_name_the_key() {
        let env = AzureEnvironment::default();
        let base = KeyVaultConfig {
            tenant_id: "t".into(),
            client_id: "c".into(),
            url: "https://v.vault.azure.net".into(),
            certificate_path: "/c.pem".into(),
            proxy: ProxyConfig::default(),
        };
        let err = |c: &KeyVaultConfig, env: &AzureEnvironment| {
            KeyVaultClient::new(c, env, KeyVaultOptions::default())
                .unwrap_err()
                .to_string()
        };
        let mut c = base.clone();
        c.url = "http://v".into();
        assert!(err(&c, &env).contains("azure_key_vault.url"));
        let mut c = base.clone();
        c.tenant_id = String::new();
        assert!(err(&c, &env).contains("tenant_id"));
        let mut c = base.clone();
        c.certificate_path = String::new();
        assert!(err(&c, &env).contains("AZURE_FEDERATED_TOKEN_FILE"));
        let wi = AzureEnvironment::from_lookup(|k| match k {
            "AZURE_FEDERATED_TOKEN_FILE" => Some("/t".into()),
            "AZURE_CLIENT_ID" => Some("c".into()),
            "AZURE_TENANT_ID" => Some("t".into()),
            _ => None,
        });
        let mut c = base.clone();
        c.certificate_path = String::new();
        c.client_id = String::new();
        c.tenant_id = String::new();
        assert!(KeyVaultClient::new(&c, &wi, KeyVaultOptions::default()).is_ok());
    }
}
