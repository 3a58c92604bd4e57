//! HTTP serving: connections (plain or TLS), routing, faults, and the handlers.
//!
//! Routes are matched by hand so that an unknown path, a wrong method or a wrong scale-set
//! id gets the same JSON error the real service would give, and so that a fault can drop a
//! connection (the service returns an error, which makes hyper close it without answering).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::state::{CreateSession, random_uuid};
use super::{AuthKind, Endpoint, FakeAuth, Inner, RegistrationScope, RequestRecord};

/// Request bodies larger than this are refused (acquiring 10,000 ids is ~100 KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;
const API_VERSION: &str = "6.0-preview";
const DOCS_URL: &str = "https://docs.github.com/rest";

type Body = Full<Bytes>;

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: connection dropped")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "fake Actions service: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner = Arc::clone(&inner);
        let acceptor = acceptor.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(inner, stream, conn_shutdown).await,
                Some(acceptor) => {
                    let tls = tokio::select! {
                        _ = conn_shutdown.wait_for(|s| *s) => return,
                        tls = acceptor.accept(stream) => tls,
                    };
                    match tls {
                        Ok(tls) => serve_connection(inner, tls, conn_shutdown).await,
                        Err(error) => {
                            tracing::debug!(%error, "fake Actions service: TLS handshake failed")
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(inner: Arc<Inner>, stream: S, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let inner = Arc::clone(&inner);
        async move { handle(inner, request).await }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// Logs the request when dropped, so that requests whose client went away (or whose
/// connection a fault dropped) are logged too, with status 0.
struct RecordOnDrop {
    inner: Arc<Inner>,
    record: Option<RequestRecord>,
}

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            self.inner.state().record(record);
        }
    }
}

impl RecordOnDrop {
    fn set(&mut self, status: u16, endpoint: Option<Endpoint>) {
        if let Some(record) = self.record.as_mut() {
            record.status = status;
            record.endpoint = endpoint;
        }
    }
}

fn auth_kind(headers: &HeaderMap) -> AuthKind {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return AuthKind::None;
    };
    let scheme = value
        .to_str()
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match scheme.as_str() {
        "bearer" => AuthKind::Bearer,
        "token" => AuthKind::Token,
        "remoteauth" => AuthKind::RemoteAuth,
        "basic" => AuthKind::Basic,
        _ => AuthKind::Other,
    }
}

/// The credential after the scheme, when the scheme is one of `schemes`.
fn credential<'h>(headers: &'h HeaderMap, schemes: &[&str]) -> Option<&'h str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

async fn handle(
    inner: Arc<Inner>,
    request: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let mut log = RecordOnDrop {
        inner: Arc::clone(&inner),
        record: Some(RequestRecord {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            status: 0,
            auth: auth_kind(&headers),
            endpoint: None,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: SystemTime::now(),
        }),
    };

    let latency = inner.state().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let route = route(&inner, &method, &path);
    let endpoint = route.endpoint();
    let style = route.style();
    if let Some(endpoint) = endpoint {
        let fault = inner.state().take_fault(endpoint);
        if let Some(fault) = fault {
            tracing::debug!(?endpoint, ?fault, "fake Actions service: fault fired");
            if let Some(delay) = fault.delay {
                tokio::time::sleep(delay).await;
            }
            if fault.drop_connection {
                inner.state().stats.connections_dropped += 1;
                log.set(0, Some(endpoint));
                return Err(DropConnection);
            }
            if fault.status.is_some() || fault.retry_after.is_some() {
                let status = StatusCode::from_u16(fault.status.unwrap_or(429))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = match style {
                    Style::Rest => rest_error(status, "fault injected"),
                    Style::Actions => {
                        actions_error(status, "FaultInjectedException", "fault injected")
                    }
                };
                if let Some(seconds) = fault.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                log.set(response.status().as_u16(), Some(endpoint));
                return Ok(response);
            }
        }
    }

    let body = match read_body(request).await {
        Ok(body) => body,
        Err(message) => {
            let response = match style {
                Style::Rest => rest_error(StatusCode::BAD_REQUEST, &message),
                Style::Actions => {
                    actions_error(StatusCode::BAD_REQUEST, "ArgumentException", &message)
                }
            };
            log.set(response.status().as_u16(), endpoint);
            return Ok(response);
        }
    };
    let call = Call {
        inner: &inner,
        headers: &headers,
        query: query.as_deref().unwrap_or_default(),
        body,
    };
    let response = match route {
        Route::AppToken { installation_id } => call.app_token(&installation_id),
        Route::RegistrationToken(scope) => call.registration_token(scope),
        Route::RunnerRegistration => call.runner_registration(),
        Route::CreateSession { scale_set } => call.create_session(&scale_set),
        Route::RefreshSession {
            scale_set,
            session_id,
        } => call.refresh_session(&scale_set, &session_id),
        Route::DeleteSession {
            scale_set,
            session_id,
        } => call.delete_session(&scale_set, &session_id),
        Route::AcquireJobs { scale_set } => call.acquire_jobs(&scale_set),
        Route::GetMessage { session_id } => call.get_message(&session_id).await,
        Route::DeleteMessage {
            session_id,
            message_id,
        } => call.delete_message(&session_id, &message_id),
        Route::NotFound(Style::Rest) => rest_error(StatusCode::NOT_FOUND, "Not Found"),
        Route::NotFound(Style::Actions) => actions_error(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            &format!("No route for {method} {path}"),
        ),
    };
    log.set(response.status().as_u16(), endpoint);
    Ok(response)
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, String> {
    Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("could not read the request body: {e}"))
}

// ---- routing --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// GitHub REST: `{message, documentation_url}` errors.
    Rest,
    /// Actions service and queue: `{typeName, message}` errors with `ActivityId`.
    Actions,
}

enum Route {
    AppToken {
        installation_id: String,
    },
    RegistrationToken(RegistrationScope),
    RunnerRegistration,
    CreateSession {
        scale_set: String,
    },
    RefreshSession {
        scale_set: String,
        session_id: String,
    },
    DeleteSession {
        scale_set: String,
        session_id: String,
    },
    AcquireJobs {
        scale_set: String,
    },
    GetMessage {
        session_id: String,
    },
    DeleteMessage {
        session_id: String,
        message_id: String,
    },
    NotFound(Style),
}

impl Route {
    fn endpoint(&self) -> Option<Endpoint> {
        Some(match self {
            Route::AppToken { .. } => Endpoint::AppToken,
            Route::RegistrationToken(_) => Endpoint::RegistrationToken,
            Route::RunnerRegistration => Endpoint::RunnerRegistration,
            Route::CreateSession { .. } => Endpoint::CreateSession,
            Route::RefreshSession { .. } => Endpoint::RefreshSession,
            Route::DeleteSession { .. } => Endpoint::DeleteSession,
            Route::AcquireJobs { .. } => Endpoint::AcquireJobs,
            Route::GetMessage { .. } => Endpoint::GetMessage,
            Route::DeleteMessage { .. } => Endpoint::DeleteMessage,
            Route::NotFound(_) => return None,
        })
    }

    fn style(&self) -> Style {
        match self {
            Route::AppToken { .. } | Route::RegistrationToken(_) | Route::RunnerRegistration => {
                Style::Rest
            }
            Route::NotFound(style) => *style,
            _ => Style::Actions,
        }
    }
}

fn route(inner: &Inner, method: &Method, path: &str) -> Route {
    if let Some(rest) = path.strip_prefix(inner.service_prefix.as_str()) {
        let segments: Vec<&str> = rest.split('/').collect();
        return match (method, segments.as_slice()) {
            (&Method::POST, ["_apis", "runtime", "runnerscalesets", id, "sessions"]) => {
                Route::CreateSession {
                    scale_set: (*id).to_owned(),
                }
            }
            (&Method::PATCH, ["_apis", "runtime", "runnerscalesets", id, "sessions", sid]) => {
                Route::RefreshSession {
                    scale_set: (*id).to_owned(),
                    session_id: (*sid).to_owned(),
                }
            }
            (&Method::DELETE, ["_apis", "runtime", "runnerscalesets", id, "sessions", sid]) => {
                Route::DeleteSession {
                    scale_set: (*id).to_owned(),
                    session_id: (*sid).to_owned(),
                }
            }
            (&Method::POST, ["_apis", "runtime", "runnerscalesets", id, "acquirejobs"]) => {
                Route::AcquireJobs {
                    scale_set: (*id).to_owned(),
                }
            }
            _ => Route::NotFound(Style::Actions),
        };
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["queue", sid, "messages", tail @ ..] = segments.as_slice() {
        return match (method, tail) {
            (&Method::GET, []) => Route::GetMessage {
                session_id: (*sid).to_owned(),
            },
            (&Method::DELETE, [mid]) => Route::DeleteMessage {
                session_id: (*sid).to_owned(),
                message_id: (*mid).to_owned(),
            },
            _ => Route::NotFound(Style::Actions),
        };
    }
    // GHES style under /api/v3, hosted style at the root.
    let rest = match segments.as_slice() {
        ["api", "v3", rest @ ..] => rest,
        rest => rest,
    };
    if method != Method::POST {
        return Route::NotFound(Style::Rest);
    }
    match rest {
        ["app", "installations", id, "access_tokens"] => Route::AppToken {
            installation_id: (*id).to_owned(),
        },
        ["orgs", org, "actions", "runners", "registration-token"] if !org.is_empty() => {
            Route::RegistrationToken(RegistrationScope::Org((*org).to_owned()))
        }
        [
            "repos",
            owner,
            repo,
            "actions",
            "runners",
            "registration-token",
        ] if !owner.is_empty() && !repo.is_empty() => {
            Route::RegistrationToken(RegistrationScope::Repo {
                owner: (*owner).to_owned(),
                repo: (*repo).to_owned(),
            })
        }
        [
            "enterprises",
            ent,
            "actions",
            "runners",
            "registration-token",
        ] if !ent.is_empty() => {
            Route::RegistrationToken(RegistrationScope::Enterprise((*ent).to_owned()))
        }
        ["actions", "runner-registration"] => Route::RunnerRegistration,
        _ => Route::NotFound(Style::Rest),
    }
}

// ---- responses ------------------------------------------------------------------------------

fn response(status: StatusCode, body: Option<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-github-request-id", id);
    }
    response
}

fn request_id() -> String {
    let hex = random_uuid().replace('-', "").to_uppercase();
    format!("{}:{}:{}", &hex[0..4], &hex[4..10], &hex[10..18])
}

fn rest_json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    response(status, Some(value.to_string()))
}

fn rest_error(status: StatusCode, message: &str) -> Response<Body> {
    rest_json(
        status,
        &json!({
            "message": message,
            "documentation_url": DOCS_URL,
            "status": status.as_u16().to_string(),
        }),
    )
}

fn with_activity_id(mut response: Response<Body>) -> Response<Body> {
    if let Ok(id) = HeaderValue::from_str(&random_uuid()) {
        response.headers_mut().insert("activityid", id);
    }
    response
}

fn actions_json(status: StatusCode, body: String) -> Response<Body> {
    with_activity_id(response(status, Some(body)))
}

fn actions_empty(status: StatusCode) -> Response<Body> {
    with_activity_id(response(status, None))
}

fn actions_error(status: StatusCode, type_name: &str, message: &str) -> Response<Body> {
    let body = json!({
        "$id": "1",
        "innerException": null,
        "message": message,
        "typeName": format!("GitHub.DistributedTask.WebApi.{type_name}, GitHub.DistributedTask.WebApi"),
        "typeKey": type_name,
        "errorCode": 0,
        "eventId": 3000,
    });
    actions_json(status, body.to_string())
}

fn unauthorized(message: &str) -> Response<Body> {
    actions_error(
        StatusCode::UNAUTHORIZED,
        "VssUnauthorizedException",
        message,
    )
}

// ---- handlers -------------------------------------------------------------------------------

struct Call<'a> {
    inner: &'a Inner,
    headers: &'a HeaderMap,
    query: &'a str,
    body: Bytes,
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Deserialize)]
struct RunnerRegistrationBody {
    url: String,
    runner_event: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSessionBody {
    owner_name: String,
}

impl Call<'_> {
    // -- GitHub REST --

    fn app_token(&self, installation_id: &str) -> Response<Body> {
        let FakeAuth::App {
            app_id,
            installation_id: expected_installation,
            public_key_pem,
        } = &self.inner.config.auth
        else {
            return rest_error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        };
        let Some(jwt) = credential(self.headers, &["bearer"]) else {
            return rest_error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        };
        if let Err(message) = verify_app_jwt(jwt, app_id, public_key_pem) {
            return rest_error(StatusCode::UNAUTHORIZED, &message);
        }
        if installation_id != expected_installation.to_string() {
            return rest_error(StatusCode::NOT_FOUND, "Not Found");
        }
        let (token, expires_at) = self.inner.state().issue_installation_token();
        rest_json(
            StatusCode::CREATED,
            &json!({
                "token": token,
                "expires_at": expires_at,
                "permissions": {"organization_self_hosted_runners": "write", "administration": "write"},
                "repository_selection": "all",
            }),
        )
    }

    fn registration_token(&self, scope: RegistrationScope) -> Response<Body> {
        let Some(presented) = credential(self.headers, &["bearer", "token"]) else {
            return rest_error(StatusCode::UNAUTHORIZED, "Requires authentication");
        };
        let valid = match &self.inner.config.auth {
            FakeAuth::Pat { token } => presented == token,
            FakeAuth::App { .. } => self.inner.state().installation_token_valid(presented),
        };
        if !valid {
            return rest_error(StatusCode::UNAUTHORIZED, "Bad credentials");
        }
        let (token, expires_at) = self.inner.state().issue_registration_token(scope);
        rest_json(
            StatusCode::CREATED,
            &json!({"token": token, "expires_at": expires_at}),
        )
    }

    fn runner_registration(&self) -> Response<Body> {
        let Some(token) = credential(self.headers, &["remoteauth"]) else {
            return rest_error(StatusCode::UNAUTHORIZED, "Requires authentication");
        };
        let Some(scope) = self.inner.state().registration_token_scope(token) else {
            return rest_error(StatusCode::UNAUTHORIZED, "Bad credentials");
        };
        let body: RunnerRegistrationBody = match serde_json::from_slice(&self.body) {
            Ok(body) => body,
            Err(e) => {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Problems parsing JSON: {e}"),
                );
            }
        };
        if body.runner_event != "register" {
            return rest_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "runner_event must be \"register\"",
            );
        }
        match scope_of_url(&body.url) {
            Some(url_scope) if same_scope(&url_scope, &scope) => {}
            Some(_) => return rest_error(StatusCode::NOT_FOUND, "Not Found"),
            None => {
                return rest_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "url is not an organization, repository or enterprise URL",
                );
            }
        }
        let admin_token = match self.inner.state().issue_admin_token(&body.url) {
            Ok(token) => token,
            Err(e) => {
                return rest_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("could not sign the admin token: {e}"),
                );
            }
        };
        rest_json(
            StatusCode::OK,
            &json!({
                "url": format!("{}{}", self.inner.base_url, self.inner.service_prefix),
                "token": admin_token,
                "token_schema": "OAuthAccessToken",
            }),
        )
    }

    // -- Actions service --

    /// The common checks of Actions service calls: api-version, then the bearer token
    /// (admin token, or queue token when `queue_token`), then the scale set id.
    fn check_actions(&self, scale_set: &str, queue_token: bool) -> Option<Response<Body>> {
        if let Some(bad) = self.check_api_version() {
            return Some(bad);
        }
        let Some(token) = credential(self.headers, &["bearer"]) else {
            return Some(unauthorized("Authorization: Bearer token required"));
        };
        let valid = {
            let state = self.inner.state();
            if queue_token {
                state
                    .queue_token_session(token)
                    .is_some_and(|s| state.live_session_id() == Some(s))
            } else {
                state.admin_token_valid(token)
            }
        };
        if !valid {
            return Some(unauthorized(if queue_token {
                "The message queue access token is expired or unknown"
            } else {
                "The access token is expired or unknown"
            }));
        }
        if scale_set.parse::<i64>().ok() != Some(self.inner.state().scale_set_id()) {
            return Some(actions_error(
                StatusCode::NOT_FOUND,
                "RunnerScaleSetNotFoundException",
                &format!("Runner scale set {scale_set} not found."),
            ));
        }
        None
    }

    fn check_api_version(&self) -> Option<Response<Body>> {
        match query_param(self.query, "api-version") {
            Some(v) if v == API_VERSION => None,
            Some(v) => Some(actions_error(
                StatusCode::BAD_REQUEST,
                "VssVersionOutOfRangeException",
                &format!("The requested REST API version of {v} is out of range for this server."),
            )),
            None => Some(actions_error(
                StatusCode::BAD_REQUEST,
                "VssVersionNotSpecifiedException",
                "The api-version query parameter is required.",
            )),
        }
    }

    fn create_session(&self, scale_set: &str) -> Response<Body> {
        if let Some(bad) = self.check_actions(scale_set, false) {
            return bad;
        }
        let body: CreateSessionBody = match serde_json::from_slice(&self.body) {
            Ok(body) => body,
            Err(e) => {
                return actions_error(
                    StatusCode::BAD_REQUEST,
                    "ArgumentException",
                    &format!("The session body is invalid: {e}"),
                );
            }
        };
        if body.owner_name.is_empty() {
            return actions_error(
                StatusCode::BAD_REQUEST,
                "ArgumentNullException",
                "Value cannot be null. Parameter name: ownerName",
            );
        }
        let created = self
            .inner
            .state()
            .create_session(&body.owner_name, &self.inner.base_url);
        match created {
            CreateSession::Created(session) => actions_json(StatusCode::OK, session.to_string()),
            CreateSession::Conflict(message) => actions_error(
                StatusCode::CONFLICT,
                "TaskAgentSessionConflictException",
                &message,
            ),
        }
    }

    fn refresh_session(&self, scale_set: &str, session_id: &str) -> Response<Body> {
        if let Some(bad) = self.check_actions(scale_set, false) {
            return bad;
        }
        let refreshed = self
            .inner
            .state()
            .refresh_session(session_id, &self.inner.base_url);
        match refreshed {
            Some(session) => actions_json(StatusCode::OK, session.to_string()),
            None => session_not_found(session_id),
        }
    }

    fn delete_session(&self, scale_set: &str, session_id: &str) -> Response<Body> {
        if let Some(bad) = self.check_actions(scale_set, false) {
            return bad;
        }
        if self.inner.state().delete_session(session_id) {
            actions_empty(StatusCode::NO_CONTENT)
        } else {
            session_not_found(session_id)
        }
    }

    fn acquire_jobs(&self, scale_set: &str) -> Response<Body> {
        if let Some(bad) = self.check_actions(scale_set, true) {
            return bad;
        }
        let ids: Vec<i64> = match serde_json::from_slice(&self.body) {
            Ok(ids) => ids,
            Err(e) => {
                return actions_error(
                    StatusCode::BAD_REQUEST,
                    "ArgumentException",
                    &format!("The body must be a JSON array of runner request ids: {e}"),
                );
            }
        };
        let acquired = self.inner.state().acquire(&ids);
        self.inner.queue_changed.notify_waiters();
        actions_json(
            StatusCode::OK,
            json!({"count": acquired.len(), "value": acquired}).to_string(),
        )
    }

    // -- message queue --

    /// Checks of queue calls: the query kept from `messageQueueUrl`, then the queue token.
    fn check_queue(&self, session_id: &str) -> Option<Response<Body>> {
        if query_param(self.query, "sessionId").as_deref() != Some(session_id) {
            return Some(actions_error(
                StatusCode::BAD_REQUEST,
                "ArgumentException",
                "The sessionId query parameter is missing or does not match the queue.",
            ));
        }
        let Some(token) = credential(self.headers, &["bearer"]) else {
            return Some(unauthorized("Authorization: Bearer token required"));
        };
        if self.inner.state().queue_token_session(token) != Some(session_id) {
            return Some(unauthorized(
                "The message queue access token is expired or unknown",
            ));
        }
        None
    }

    async fn get_message(&self, session_id: &str) -> Response<Body> {
        if let Some(bad) = self.check_queue(session_id) {
            return bad;
        }
        let capacity = self
            .headers
            .get("x-scalesetmaxcapacity")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v >= 0);
        let Some(capacity) = capacity else {
            return actions_error(
                StatusCode::BAD_REQUEST,
                "ArgumentException",
                "The X-ScaleSetMaxCapacity header is missing or not a non-negative integer.",
            );
        };
        let last_message_id = match query_param(self.query, "lastMessageId") {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(id) => Some(id),
                Err(_) => {
                    return actions_error(
                        StatusCode::BAD_REQUEST,
                        "ArgumentException",
                        &format!("lastMessageId {v:?} is not an integer."),
                    );
                }
            },
        };
        {
            let mut state = self.inner.state();
            state.stats.last_max_capacity = Some(capacity);
            if last_message_id.is_some() {
                state.stats.last_message_id_seen = last_message_id;
            }
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.long_poll_hold;
        loop {
            // Register for wake-ups before looking, so a message queued in between is not missed.
            let notified = self.inner.queue_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(message) = self.inner.state().deliver() {
                return actions_json(StatusCode::OK, message);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.inner.state().stats.empty_polls += 1;
                    return actions_empty(StatusCode::ACCEPTED);
                }
            }
        }
    }

    fn delete_message(&self, session_id: &str, message_id: &str) -> Response<Body> {
        if let Some(bad) = self.check_queue(session_id) {
            return bad;
        }
        let Ok(id) = message_id.parse::<i64>() else {
            return actions_error(
                StatusCode::BAD_REQUEST,
                "ArgumentException",
                &format!("Message id {message_id:?} is not an integer."),
            );
        };
        let acked = self.inner.state().ack(id);
        if acked {
            self.inner.queue_changed.notify_waiters();
            actions_empty(StatusCode::NO_CONTENT)
        } else {
            actions_error(
                StatusCode::NOT_FOUND,
                "TaskAgentMessageNotFoundException",
                &format!("Message {id} was not found."),
            )
        }
    }
}

fn session_not_found(session_id: &str) -> Response<Body> {
    actions_error(
        StatusCode::NOT_FOUND,
        "TaskAgentSessionExpiredException",
        &format!("The session {session_id} has expired or does not exist."),
    )
}

/// The scope a configure URL names: `/ORG`, `/ORG/REPO` or `/enterprises/ENT`.
fn scope_of_url(url: &str) -> Option<RegistrationScope> {
    let parsed = url::Url::parse(url).ok()?;
    let segments: Vec<&str> = parsed.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["enterprises", ent] => Some(RegistrationScope::Enterprise((*ent).to_owned())),
        [org] => Some(RegistrationScope::Org((*org).to_owned())),
        [owner, repo] => Some(RegistrationScope::Repo {
            owner: (*owner).to_owned(),
            repo: (*repo).to_owned(),
        }),
        _ => None,
    }
}

/// GitHub names are case-insensitive.
fn same_scope(a: &RegistrationScope, b: &RegistrationScope) -> bool {
    use RegistrationScope::*;
    match (a, b) {
        (Org(a), Org(b)) | (Enterprise(a), Enterprise(b)) => a.eq_ignore_ascii_case(b),
        (
            Repo {
                owner: ao,
                repo: ar,
            },
            Repo {
                owner: bo,
                repo: br,
            },
        ) => ao.eq_ignore_ascii_case(bo) && ar.eq_ignore_ascii_case(br),
        _ => false,
    }
}

/// Verify a GitHub App JWT as GitHub does: RS256 signed by the App's key, `iss` the App id
/// (string or number), `exp` in the future and at most 10 minutes after `iat`, `iat` not
/// in the future (60 s of clock drift allowed).
fn verify_app_jwt(jwt: &str, app_id: &str, public_key_pem: &str) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
        .map_err(|_| "The fake's App public key is not a valid RSA PEM".to_owned())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<serde_json::Value>(jwt, &key, &validation)
        .map_err(|_| "A JSON web token could not be decoded".to_owned())?
        .claims;
    let iss = match claims.get("iss") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err("'Issuer' claim ('iss') must be an Integer".to_owned()),
    };
    if iss != app_id {
        return Err(format!(
            "Integration not found for 'iss' claim {iss:?}; expected the App id"
        ));
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(serde_json::Value::as_i64),
        claims.get("exp").and_then(serde_json::Value::as_i64),
    ) else {
        return Err(
            "'Issued at' claim ('iat') and 'Expiration time' claim ('exp') must be numeric"
                .to_owned(),
        );
    };
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
    if iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                .to_owned(),
        );
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".to_owned());
    }
    if exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".to_owned());
    }
    Ok(())
}
