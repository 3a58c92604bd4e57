//! Routing and the answers of the fake Entra ID and Key Vault, shaped as the real services
//! send them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{Inner, IssuedToken};
use crate::faults::DropConnection;

const MAX_BODY: usize = 64 * 1024;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra ID refuses assertions valid for longer than this.
const MAX_ASSERTION_LIFETIME: u64 = 10 * 60;

type Answer = Response<Full<Bytes>>;

pub(super) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) {
    crate::accept::serve(
        "fake Entra ID / Key Vault",
        listener,
        Some(acceptor),
        shutdown,
        move |request| handle(Arc::clone(&inner), request),
    )
    .await;
}

async fn handle(inner: Arc<Inner>, request: Request<Incoming>) -> Result<Answer, DropConnection> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(json(StatusCode::PAYLOAD_TOO_LARGE, &serde_json::json!({}))),
    };
    if let Some(status) = take_failure(&inner) {
        return Ok(json(status, &serde_json::json!({})));
    }
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match (&parts.method, segments.as_slice()) {
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => token(&inner, tenant, &body),
        (&Method::GET, ["secrets", name]) | (&Method::GET, ["secrets", name, ""]) => {
            let bearer = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            let api_version = parts.uri.query().is_some_and(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .any(|(k, v)| k == "api-version" && !v.is_empty())
            });
            secret(&inner, name, bearer.as_deref(), api_version)
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"code": "NotFound", "message": "no such route"}}),
        ),
    })
}

fn take_failure(inner: &Inner) -> Option<StatusCode> {
    let mut state = inner.state();
    let (times, status) = state.failing?;
    state.failing = (times > 1).then_some((times - 1, status));
    StatusCode::from_u16(status).ok()
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[derive(Serialize)]
struct EntraError {
    error: &'static str,
    error_description: String,
    error_codes: Vec<u64>,
    timestamp: String,
    trace_id: String,
    correlation_id: String,
}

/// Entra's error shape: the code leads the description, trace ids follow on later lines.
fn entra_error(status: StatusCode, error: &'static str, code: u64, message: &str) -> Answer {
    let trace = format!("{:032x}", rand::rng().random::<u128>());
    json(
        status,
        &EntraError {
            error,
            error_description: format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: 2026-01-01 00:00:00Z"
            ),
            error_codes: vec![code],
            timestamp: "2026-01-01 00:00:00Z".into(),
            trace_id: trace.clone(),
            correlation_id: trace,
        },
    )
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    jti: Option<String>,
    nbf: u64,
    exp: u64,
}

fn token(inner: &Inner, tenant: &str, body: &[u8]) -> Answer {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut state = inner.state();
    state.counts.token_requests += 1;
    if !field("client_assertion").is_empty() {
        state.assertions.push(field("client_assertion").to_owned());
    }
    let Some(clients) = state.tenants.get(tenant) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    };
    if field("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let client_id = field("client_id");
    let Some(client) = clients.get(client_id) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    if field("client_assertion_type") != ASSERTION_TYPE {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "The request body must contain the following parameter: 'client_assertion_type'.",
        );
    }
    let Some(resource) = field("scope").strip_suffix("/.default").map(str::to_owned) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    };
    let assertion = field("client_assertion");
    if !client.federated_tokens.iter().any(|t| t == assertion) {
        let audience = format!("{}/{tenant}/oauth2/v2.0/token", inner.base_url);
        if let Err((code, message)) = verify_assertion(client, client_id, &audience, assertion) {
            return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", code, message);
        }
    }
    let token = format!("fake-entra-{:032x}", rand::rng().random::<u128>());
    let ttl = inner.config.token_ttl;
    state.tokens.insert(
        token.clone(),
        IssuedToken {
            resource,
            expires_at: SystemTime::now() + ttl,
        },
    );
    state.counts.tokens_issued += 1;
    state.issued.push(token.clone());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "ext_expires_in": ttl.as_secs(),
            "access_token": token,
        }),
    )
}

fn verify_assertion(
    client: &super::Client,
    client_id: &str,
    audience: &str,
    assertion: &str,
) -> Result<(), (u64, &'static str)> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| (50027, "JWT token is invalid or malformed."))?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err((
            5002738,
            "Invalid JWT token. The signing algorithm is not supported.",
        ));
    }
    let x5t = header.x5t.unwrap_or_default();
    let Some(cert) = client.certificates.iter().find(|c| c.x5t == x5t) else {
        return Err((
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[client_id]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 60;
    let key = jsonwebtoken::DecodingKey::from_rsa_der(&cert.public_key_der);
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => (
                700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found.]",
            ),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
            | jsonwebtoken::errors::ErrorKind::ImmatureSignature => (
                700024,
                "Client assertion is not within its valid time range.",
            ),
            jsonwebtoken::errors::ErrorKind::InvalidAudience => (
                700212,
                "No matching federated identity record found for presented assertion audience.",
            ),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => (
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            ),
            _ => (50027, "JWT token is invalid or malformed."),
        })?
        .claims;
    if claims.sub != client_id || claims.iss != claims.sub {
        return Err((
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    if claims.exp.saturating_sub(claims.nbf) > MAX_ASSERTION_LIFETIME {
        return Err((
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    if claims.jti.as_deref().is_none_or(str::is_empty) {
        return Err((50027, "JWT token is invalid or malformed."));
    }
    Ok(())
}

fn secret(inner: &Inner, name: &str, bearer: Option<&str>, api_version: bool) -> Answer {
    let mut state = inner.state();
    state.counts.secret_requests += 1;
    if !api_version {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": {"code": "BadParameter", "message": "The request URI contains an invalid query: api-version is required"}}),
        );
    }
    let now = SystemTime::now();
    let valid = bearer
        .and_then(|t| state.tokens.get(t))
        .is_some_and(|t| t.resource == inner.config.vault_resource && t.expires_at > now);
    if !valid {
        let mut response = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}}),
        );
        // The authorization URI names a tenant; the client only reads the resource.
        let challenge = format!(
            "Bearer authorization=\"{}/common\", resource=\"{}\"",
            inner.base_url, inner.config.vault_resource
        );
        if let Ok(value) = header::HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        return response;
    }
    let Some((value, version)) = state.secrets.get(name).cloned() else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"code": "SecretNotFound", "message": format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")}}),
        );
    };
    state.counts.secrets_served += 1;
    let created = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "value": value,
            "id": format!("{}/secrets/{name}/{version:032x}", inner.base_url),
            "attributes": {"enabled": true, "created": created, "updated": created, "recoveryLevel": "Recoverable+Purgeable"},
            "tags": {}
        }),
    )
}
