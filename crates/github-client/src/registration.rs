//! GitHub REST: the credentials chain that ends in the admin connection to the Actions
//! service (installation token for an App, registration token, runner registration).

use std::time::{Duration, SystemTime};

use http::Method;
use serde::Deserialize;
use url::Url;

use crate::auth::{Auth, app_jwt, expires_within, jwt_expiry};
use crate::client::{
    ActionsClient, AdminConnection, CachedToken, Request, TOKEN_REFRESH_MARGIN,
    UNKNOWN_EXPIRY_LIFETIME, invalid,
};
use crate::error::{ApiError, Error, redact_url};
use crate::secret::SecretString;

#[derive(Deserialize)]
struct TokenResponse {
    token: SecretString,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct AdminConnectionResponse {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    token: SecretString,
}

impl ActionsClient {
    pub(crate) fn rest_url(&self, path: &str) -> Result<Url, Error> {
        let raw = format!("{}{}", self.inner.rest_base, path);
        Url::parse(&raw).map_err(|e| Error::InvalidConfig {
            reason: format!("REST URL {raw:?} is invalid: {e}"),
        })
    }

    pub(crate) fn rest_request(
        &self,
        path: &str,
        authorization: SecretString,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<Request, Error> {
        Ok(Request {
            method: Method::POST,
            url: self.rest_url(path)?,
            authorization: Some(authorization),
            headers: vec![
                ("Content-Type", content_type.to_owned()),
                ("Accept", "application/vnd.github+json".to_owned()),
            ],
            body,
            timeout: self.inner.options.request_timeout,
            retry_auth_failures: false,
        })
    }

    // ---- GitHub REST ----------------------------------------------------------------

    /// POST to a GitHub REST token endpoint with `bearer` and read the token it issues;
    /// `what` names it in the log and in errors.
    async fn post_for_token(
        &self,
        path: &str,
        bearer: &SecretString,
        content_type: &str,
        what: &str,
    ) -> Result<TokenResponse, Error> {
        let req = self.rest_request(
            path,
            SecretString::new(format!("Bearer {}", bearer.expose_secret())),
            None,
            content_type,
        )?;
        tracing::info!(url = %redact_url(&req.url), token = what, "fetching a GitHub token");
        let resp = self.execute(&req).await?;
        if !resp.is_success() {
            return Err(rest_error(resp.api_error(&req)));
        }
        let token: TokenResponse = resp.json(&req)?;
        if token.token.is_empty() {
            return Err(invalid(&req, &format!("{what} response has no token")));
        }
        Ok(token)
    }

    /// An installation token for the App, cached until less than 60 s remain.
    pub(crate) async fn installation_token(&self) -> Result<SecretString, Error> {
        let auth = self.inner.auth();
        let Auth::App {
            app_id,
            installation_id,
            key,
        } = &*auth
        else {
            return Err(Error::InvalidConfig {
                reason: "installation tokens need GitHub App credentials".into(),
            });
        };
        let mut cached = self.inner.installation.lock().await;
        if let Some(c) = cached.as_ref()
            && !expires_within(c.expires_at, TOKEN_REFRESH_MARGIN, SystemTime::now())
        {
            return Ok(c.token.clone());
        }
        let jwt = app_jwt(app_id, key, SystemTime::now())?;
        let token = self
            .post_for_token(
                &format!("/app/installations/{installation_id}/access_tokens"),
                &jwt,
                "application/vnd.github+json",
                "installation token",
            )
            .await?;
        let expires_at = token
            .expires_at
            .as_deref()
            .and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(SystemTime::from)
            // GitHub's installation tokens last 1 h; be conservative when the time is missing.
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(30 * 60));
        *cached = Some(CachedToken {
            token: token.token.clone(),
            expires_at,
        });
        Ok(token.token)
    }

    pub(crate) async fn registration_token(&self) -> Result<SecretString, Error> {
        let auth = self.inner.auth();
        let bearer = match &*auth {
            Auth::Token(pat) => pat.clone(),
            Auth::App { .. } => self.installation_token().await?,
        };
        let token = self
            .post_for_token(
                &self.inner.config.registration_token_path(),
                &bearer,
                "application/vnd.github.v3+json",
                "runner registration token",
            )
            .await;
        if let (Err(e), Auth::App { .. }) = (&token, &*auth)
            && matches!(e, Error::CredentialsRejected(_))
        {
            // The installation token may have been revoked: fetch a new one next time.
            *self.inner.installation.lock().await = None;
        }
        Ok(token?.token)
    }

    pub(crate) async fn fetch_admin_connection(&self) -> Result<AdminConnection, Error> {
        let registration = self.registration_token().await?;
        let body = serde_json::json!({
            "url": self.inner.config.as_str(),
            "runner_event": "register",
        });
        let mut req = self.rest_request(
            "/actions/runner-registration",
            SecretString::new(format!("RemoteAuth {}", registration.expose_secret())),
            Some(body.to_string().into_bytes()),
            "application/json",
        )?;
        req.retry_auth_failures = true;
        tracing::info!(url = %redact_url(&req.url), "fetching the Actions service URL and admin token");
        let resp = self.execute(&req).await?;
        if !resp.is_success() {
            return Err(rest_error(resp.api_error(&req)));
        }
        let conn: AdminConnectionResponse = resp.json(&req)?;
        let url = conn.url.unwrap_or_default();
        if url.is_empty() {
            return Err(invalid(&req, "runner-registration response has no url"));
        }
        if conn.token.is_empty() {
            return Err(invalid(&req, "runner-registration response has no token"));
        }
        let service_url = Url::parse(&url)
            .map_err(|e| invalid(&req, &format!("Actions service url is invalid: {e}")))?;
        let expires_at = jwt_expiry(conn.token.expose_secret()).unwrap_or_else(|| {
            tracing::warn!(
                "the admin token's exp claim cannot be read; refreshing it in 10 minutes"
            );
            SystemTime::now() + UNKNOWN_EXPIRY_LIFETIME
        });
        self.inner.metrics.inc_admin_token_refreshes();
        Ok(AdminConnection {
            service_url,
            token: conn.token,
            expires_at,
        })
    }
}

/// A failed GitHub REST call: 401/403 mean the credentials are rejected.
fn rest_error(api: ApiError) -> Error {
    match api.status {
        401 | 403 => Error::CredentialsRejected(Box::new(api)),
        404 => Error::NotFound(Box::new(api)),
        _ => Error::Status(Box::new(api)),
    }
}
