//! The Actions client: GitHub REST authentication, the admin connection to the Actions
//! service, and the HTTP core (timeouts, retries, error mapping) shared with sessions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::Deserialize;
use url::Url;

use crate::auth::{Auth, Credentials, expires_within};
use crate::config_url::GitHubConfigUrl;
use crate::error::{ApiError, Error, is_retryable_status, redact_url, truncate};
use crate::net::{ProxyConfig, tls_config};
use crate::retry::ClientMetrics;
use crate::secret::SecretString;
use ::retry::RetryPolicy;
use ::retry::describe::error_chain;
use ::retry::parse_retry_after;

/// Query parameter the Actions service wants on every call.
pub(crate) const API_VERSION: &str = "6.0-preview";
/// Refresh tokens when less than this remains (the Go listener's margin).
pub(crate) const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Largest response body read; a broken or hostile server cannot make us buffer more.
/// Queue messages hold at most 50 job messages, a few hundred KiB.
pub const MAX_RESPONSE_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Used when the admin token's `exp` cannot be read: refresh early rather than never.
pub(crate) const UNKNOWN_EXPIRY_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The default `User-Agent`.
pub fn default_user_agent() -> String {
    format!(
        "gha-listener-rs/{} (actions-runner-controller listener)",
        env!("CARGO_PKG_VERSION")
    )
}

/// How the client talks to GitHub.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub user_agent: String,
    /// Extra PEM roots (`server_root_ca`), trusted on top of the system's.
    pub root_ca_pem: Option<String>,
    pub retry: RetryPolicy,
    /// Timeout of every request but the long poll (connect to last body byte).
    pub request_timeout: Duration,
    /// Timeout of the message long poll; above the service's ~50 s hold.
    pub long_poll_timeout: Duration,
    /// How long a 409 on session creation is waited out before giving up.
    pub session_conflict_timeout: Duration,
    /// Tests only: use this REST base instead of the one derived from the config URL. Hidden
    /// rather than removed: a github.com config URL's REST base (`api.github.com`) cannot be
    /// pointed at a local fake any other way (its HTTPS would need a CONNECT-capable fake).
    #[doc(hidden)]
    pub rest_base_override: Option<String>,
    /// Proxy settings; `None` reads `https_proxy`/`http_proxy`/`no_proxy` from the process env.
    pub proxy: Option<ProxyConfig>,
    /// `GITHUB_ACTIONS_FORCE_GHES`; `None` reads the process env.
    pub force_ghes: Option<bool>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            user_agent: default_user_agent(),
            root_ca_pem: None,
            retry: ::retry::policies::GITHUB_REQUEST_RETRIES,
            request_timeout: Duration::from_secs(60),
            long_poll_timeout: Duration::from_secs(70),
            session_conflict_timeout: Duration::from_secs(180),
            rest_base_override: None,
            proxy: None,
            force_ghes: None,
        }
    }
}

/// The Actions service base URL and admin token obtained through `runner-registration`.
pub(crate) struct AdminConnection {
    pub(crate) service_url: Url,
    pub(crate) token: SecretString,
    pub(crate) expires_at: SystemTime,
}

pub(crate) struct CachedToken {
    pub(crate) token: SecretString,
    pub(crate) expires_at: SystemTime,
}

/// Client of GitHub REST and the Actions scale-set service. Cheap to clone; all methods `&self`.
#[derive(Clone)]
pub struct ActionsClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    pub(crate) config: GitHubConfigUrl,
    pub(crate) rest_base: String,
    /// Replaced as a whole by [`ActionsClient::replace_credentials`]; readers take a clone
    /// of the `Arc` and never hold the lock across an await.
    auth: std::sync::RwLock<Arc<Auth>>,
    pub(crate) options: ClientOptions,
    /// One refresh at a time: callers wait on the lock and reuse the fresh connection.
    admin: tokio::sync::Mutex<Option<Arc<AdminConnection>>>,
    pub(crate) installation: tokio::sync::Mutex<Option<CachedToken>>,
    pub(crate) metrics: ClientMetrics,
}

impl Inner {
    /// The credentials in use. A poisoned lock still holds a whole `Arc` (the write is a
    /// single assignment), so poisoning is ignored.
    pub(crate) fn auth(&self) -> Arc<Auth> {
        Arc::clone(
            &self
                .auth
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl std::fmt::Debug for ActionsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionsClient")
            .field("config_url", &self.inner.config.as_str())
            .field("rest_base", &self.inner.rest_base)
            .field("auth", &self.inner.auth())
            .finish()
    }
}

/// One HTTP request as the retry loop replays it.
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    /// Full `Authorization` header value.
    pub(crate) authorization: Option<SecretString>,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
    /// Also retry 401/403 (the Go listener does so for `runner-registration` only).
    pub(crate) retry_auth_failures: bool,
}

/// A response with its body read and any UTF-8 BOM removed.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Response {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, req: &Request) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::InvalidResponse {
            method: req.method.to_string(),
            url: redact_url(&req.url),
            reason: format!("body is not the expected JSON: {e}"),
        })
    }

    pub(crate) fn api_error(&self, req: &Request) -> ApiError {
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(|v| truncate(v, 128))
        };
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct ErrorBody {
            #[serde(rename = "typeName")]
            type_name: Option<String>,
            message: Option<String>,
        }
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let (type_name, message) = match serde_json::from_str::<ErrorBody>(text) {
            Ok(b) => (b.type_name, b.message),
            Err(_) if text.is_empty() => (None, None),
            Err(_) => (None, Some(text.to_owned())),
        };
        ApiError {
            method: req.method.to_string(),
            url: redact_url(&req.url),
            status: self.status,
            activity_id: header("ActivityId"),
            github_request_id: header("X-GitHub-Request-Id"),
            type_name: type_name.map(|t| truncate(&t, 256)),
            message: message.map(|m| truncate(&m, 512)),
        }
    }
}

impl ActionsClient {
    /// Parse the config URL and build the HTTP client. Makes no request.
    pub fn new(
        config_url: &str,
        credentials: Credentials,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        let force_ghes = options
            .force_ghes
            .unwrap_or_else(crate::config_url::force_ghes_from_env);
        let config = GitHubConfigUrl::parse_with(config_url, force_ghes)?;
        let auth = Auth::new(credentials)?;
        let proxy = match &options.proxy {
            Some(p) => p.clone(),
            None => ProxyConfig::from_env()?,
        };
        let tls = tls_config(options.root_ca_pem.as_deref())?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.request_timeout.min(Duration::from_secs(30)))
            .pool_idle_timeout(Duration::from_secs(90))
            // Retries are decided in one place (`retry`), not in the HTTP client. reqwest's
            // own default retries only HTTP/2 refusals (this client speaks HTTP/1.1) but
            // clones every request's headers for them.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .no_proxy();
        if !proxy.is_empty() {
            tracing::info!(proxy = ?proxy, "using proxy settings from the environment");
            builder = builder.proxy(reqwest::Proxy::custom(move |url| proxy.proxy_for(url)));
        }
        let http = builder.build().map_err(|e| Error::InvalidConfig {
            reason: format!("cannot build the HTTP client: {}", error_chain(&e)),
        })?;
        let rest_base = options
            .rest_base_override
            .clone()
            .unwrap_or_else(|| config.rest_base_url())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                rest_base,
                auth: std::sync::RwLock::new(Arc::new(auth)),
                options,
                admin: tokio::sync::Mutex::new(None),
                installation: tokio::sync::Mutex::new(None),
                metrics: ClientMetrics::default(),
            }),
        })
    }

    pub fn config_url(&self) -> &GitHubConfigUrl {
        &self.inner.config
    }

    /// Use `credentials` from now on (a rotated token or App key). The cached installation
    /// token and admin connection are dropped, so the next call authenticates afresh;
    /// sessions opened by this client follow. Fails, changing nothing, when the
    /// credentials are unusable as given (empty token, unparseable key).
    pub async fn replace_credentials(&self, credentials: Credentials) -> Result<(), Error> {
        let auth = Arc::new(Auth::new(credentials)?);
        *self
            .inner
            .auth
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = auth;
        *self.inner.installation.lock().await = None;
        *self.inner.admin.lock().await = None;
        Ok(())
    }

    /// The GitHub REST base in use (no trailing slash).
    pub fn rest_base_url(&self) -> &str {
        &self.inner.rest_base
    }

    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Authenticate now (registration token → admin connection) and return the Actions
    /// service URL. Other calls do this lazily; the listener may call it to fail fast.
    pub async fn connect(&self) -> Result<String, Error> {
        Ok(self.admin_connection(None).await?.service_url.to_string())
    }

    // ---- HTTP core ----------------------------------------------------------------

    /// Send `req`, retrying transport errors, timeouts, 408, 429 and 5xx (except 501), and
    /// 401/403 when asked. Returns the last response whatever its status.
    pub(crate) async fn execute(&self, req: &Request) -> Result<Response, Error> {
        let policy = &self.inner.options.retry;
        let backoff = policy.backoff;
        let mut attempt: u32 = 0;
        loop {
            self.inner.metrics.inc_requests();
            let outcome = self.send_once(req).await;
            let retry_after = match &outcome {
                Ok(resp) => {
                    let retryable = is_retryable_status(resp.status)
                        || (req.retry_auth_failures && matches!(resp.status, 401 | 403));
                    if !retryable || attempt >= policy.max_retries {
                        return outcome;
                    }
                    resp.headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()))
                }
                Err(Error::Transport { tls: true, .. } | Error::InvalidResponse { .. }) => {
                    return outcome;
                }
                Err(_) if attempt >= policy.max_retries => return outcome,
                Err(_) => None,
            };
            let delay = backoff.delay(attempt, retry_after);
            match &outcome {
                Ok(resp) => tracing::warn!(
                    method = %req.method, url = %redact_url(&req.url), status = resp.status,
                    attempt = attempt + 1, delay_ms = delay.as_millis() as u64, "retrying request"
                ),
                Err(e) => tracing::warn!(
                    method = %req.method, url = %redact_url(&req.url), error = %e,
                    attempt = attempt + 1, delay_ms = delay.as_millis() as u64, "retrying request"
                ),
            }
            self.inner.metrics.inc_retries();
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    pub(crate) async fn send_once(&self, req: &Request) -> Result<Response, Error> {
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .timeout(req.timeout);
        if let Some(auth) = &req.authorization {
            let mut value = http::HeaderValue::from_str(auth.expose_secret()).map_err(|_| {
                Error::InvalidResponse {
                    method: req.method.to_string(),
                    url: redact_url(&req.url),
                    reason: "a token holds characters not allowed in an HTTP header".into(),
                }
            })?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let transport = |e: reqwest::Error| {
            // The URL is already in the message, without its query.
            let e = e.without_url();
            Error::Transport {
                method: req.method.to_string(),
                url: redact_url(&req.url),
                timed_out: e.is_timeout(),
                tls: is_tls_error(&e),
                reason: error_chain(&e),
            }
        };
        let mut resp = builder.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let too_large = || Error::InvalidResponse {
            method: req.method.to_string(),
            url: redact_url(&req.url),
            reason: format!(
                "HTTP {status}: response body exceeds the limit of {MAX_RESPONSE_BODY_BYTES} bytes"
            ),
        };
        let announced = resp.content_length();
        if announced.is_some_and(|len| len > MAX_RESPONSE_BODY_BYTES as u64) {
            return Err(too_large());
        }
        // Taken, not cloned: reading the body through `chunk` does not need them.
        let headers = std::mem::take(resp.headers_mut());
        // Read incrementally so the limit holds for chunked bodies too; sized once when the
        // length is announced (a 50-job message is ~50 KB: no regrowth).
        let mut buffer = Vec::with_capacity(announced.map_or(0, |len| len as usize));
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if buffer.len() + chunk.len() > MAX_RESPONSE_BODY_BYTES {
                return Err(too_large());
            }
            buffer.extend_from_slice(&chunk);
        }
        let body = Bytes::from(buffer);
        let body = match body.strip_prefix(b"\xef\xbb\xbf") {
            Some(rest) => body.slice(body.len() - rest.len()..),
            None => body,
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// The current admin connection, refreshed when less than 60 s remain, or when `stale`
    /// (a connection the service just rejected) is still the current one. Concurrent callers
    /// wait for a single refresh and share its result.
    pub(crate) async fn admin_connection(
        &self,
        stale: Option<&Arc<AdminConnection>>,
    ) -> Result<Arc<AdminConnection>, Error> {
        let mut current = self.inner.admin.lock().await;
        if let Some(conn) = current.as_ref() {
            let rejected = stale.is_some_and(|s| Arc::ptr_eq(s, conn));
            if !rejected
                && !expires_within(conn.expires_at, TOKEN_REFRESH_MARGIN, SystemTime::now())
            {
                return Ok(conn.clone());
            }
        }
        let fresh = Arc::new(self.fetch_admin_connection().await?);
        tracing::info!(service_url = %redact_url(&fresh.service_url), "Actions service admin token refreshed");
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    // ---- Actions service ----------------------------------------------------------------

    /// `{service}/{path}` with the service URL's own query kept and `api-version` added.
    pub(crate) fn service_url(base: &Url, path: &str) -> Url {
        let mut url = base.clone();
        let joined = format!(
            "{}/{}",
            base.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        if !url.query_pairs().any(|(k, _)| k == "api-version") {
            url.query_pairs_mut()
                .append_pair("api-version", API_VERSION);
        }
        url
    }

    /// A call with the admin token; a 401 forces one admin-token refresh and one retry.
    pub(crate) async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(Request, Response), Error> {
        let mut conn = self.admin_connection(None).await?;
        let mut refreshed = false;
        loop {
            let req = Request {
                method: method.clone(),
                url: Self::service_url(&conn.service_url, path),
                authorization: Some(SecretString::new(format!(
                    "Bearer {}",
                    conn.token.expose_secret()
                ))),
                headers: vec![("Content-Type", "application/json".to_owned())],
                body: body.clone(),
                timeout: self.inner.options.request_timeout,
                retry_auth_failures: false,
            };
            let resp = self.execute(&req).await?;
            if resp.status == 401 && !refreshed {
                tracing::info!(url = %redact_url(&req.url), "admin token rejected, refreshing it");
                conn = self.admin_connection(Some(&conn)).await?;
                refreshed = true;
                continue;
            }
            return Ok((req, resp));
        }
    }
}

/// A failed Actions service call.
pub(crate) fn service_error(api: ApiError) -> Error {
    match api.status {
        401 => Error::TokenExpired(Box::new(api)),
        404 => Error::NotFound(Box::new(api)),
        409 => Error::SessionConflict {
            api: Box::new(api),
            waited_secs: 0,
        },
        _ => Error::Status(Box::new(api)),
    }
}

pub(crate) fn invalid(req: &Request, reason: &str) -> Error {
    Error::InvalidResponse {
        method: req.method.to_string(),
        url: redact_url(&req.url),
        reason: reason.to_owned(),
    }
}

/// A TLS failure (untrusted certificate, handshake): retrying cannot help.
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.is::<rustls::Error>() {
            return true;
        }
        // io::Error hides its payload from `source()` (it skips a level); step into it.
        current = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_url_joins_and_keeps_query() {
        let base = Url::parse("https://pipelines.example/abc/").unwrap();
        let u = ActionsClient::service_url(&base, "/_apis/runtime/runnerscalesets/1/sessions");
        assert_eq!(
            u.as_str(),
            "https://pipelines.example/abc/_apis/runtime/runnerscalesets/1/sessions?api-version=6.0-preview"
        );
        let base = Url::parse("https://p.example/t?x=1&api-version=7.0").unwrap();
        let u = ActionsClient::service_url(&base, "_apis/a");
        assert_eq!(
            u.as_str(),
            "https://p.example/t/_apis/a?x=1&api-version=7.0"
        );
    }

    /// A server that answers every request with 200 and a body of `declared` bytes
    /// (`None`: chunked, endless). Counts connections.
    async fn huge_body_server(
        declared: Option<u64>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let head = match declared {
                        Some(len) => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n"),
                        None => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
                    };
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let mb = vec![b'x'; 1 << 20];
                    loop {
                        let frame = match declared {
                            Some(_) => mb.clone(),
                            None => [
                                format!("{:x}\r\n", mb.len()).into_bytes(),
                                mb.clone(),
                                b"\r\n".to_vec(),
                            ]
                            .concat(),
                        };
                        if socket.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/huge"), connections)
    }

    #[tokio::test]
    async fn oversized_response_bodies_are_refused_not_buffered_or_retried() {
        let client = ActionsClient::new(
            "https://github.com/my-org",
            Credentials::Token(SecretString::new("ghp_test".to_owned())),
            ClientOptions {
                proxy: Some(ProxyConfig::default()),
                force_ghes: Some(false),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        for declared in [None, Some(1u64 << 30)] {
            let (url, connections) = huge_body_server(declared).await;
            let req = Request {
                method: Method::GET,
                url: Url::parse(&url).unwrap(),
                authorization: None,
                headers: Vec::new(),
                body: None,
                timeout: Duration::from_secs(30),
                retry_auth_failures: false,
            };
            let err = match client.execute(&req).await {
                Ok(resp) => panic!("{declared:?}: read a body of {} bytes", resp.body.len()),
                Err(e) => e,
            };
            let text = err.to_string();
            assert!(
                matches!(err, Error::InvalidResponse { .. }) && text.contains("16777216 bytes"),
                "{declared:?}: {text}"
            );
            assert_eq!(
                connections.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "retried"
            );
        }
    }

    #[test]
    fn options_defaults() {
        let o = ClientOptions::default();
        assert!(o.user_agent.starts_with("gha-listener-rs/"));
        assert_eq!(o.retry.max_retries, 4);
        assert_eq!(o.retry.backoff, ::retry::policies::GITHUB_REQUEST);
        assert_eq!(
            o.retry.backoff.delay(0, Some(Duration::from_secs(7200))),
            Duration::from_secs(300),
            "Retry-After honoured up to 300 s"
        );
        assert!(o.long_poll_timeout > Duration::from_secs(50));
        assert_eq!(o.session_conflict_timeout, Duration::from_secs(180));
    }
}
