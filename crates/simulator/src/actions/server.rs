//! HTTP serving: the shared accept loop, request logging, fault application and dispatch.
//!
//! Submodules: `routes` (matching by hand), `responses` (REST and Actions error shapes),
//! and the handlers per endpoint group: `rest` (App tokens, registration tokens, runner
//! registration), `sessions` (sessions and `acquirejobs`), `runs` (workflow runs' attempts),
//! `scale_sets` (reading the scale set), `queue` (the message queue).
//! A fault can drop a connection: the service returns an error, which makes hyper close
//! it without answering.

mod queue;
mod responses;
mod rest;
mod routes;
pub(crate) mod runs;
mod scale_sets;
mod sessions;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{Endpoint, Inner, RequestRecord};
use crate::faults::{DropConnection, Outcome};
use responses::{actions_error, rest_error};
use routes::{Route, Style, route};

/// Request bodies larger than this are refused (acquiring 10,000 ids is ~100 KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;
const API_VERSION: &str = "6.0-preview";
const DOCS_URL: &str = "https://docs.github.com/rest";

type Body = Full<Bytes>;

pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    crate::accept::serve(
        "fake Actions service",
        listener,
        acceptor,
        shutdown,
        move |request| handle(Arc::clone(&inner), request),
    )
    .await;
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
        record: Some(RequestRecord::new(&method, request.uri(), &headers)),
    };

    let latency = inner.state().faults.latency;
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
            match fault.outcome {
                Outcome::Proceed => {}
                Outcome::DropConnection => {
                    inner.state().stats.connections_dropped += 1;
                    log.set(0, Some(endpoint));
                    return Err(DropConnection);
                }
                Outcome::TruncatedBody => {
                    let mut response = Response::new(Body::from(crate::faults::TRUNCATED_BODY));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    log.set(200, Some(endpoint));
                    return Ok(response);
                }
                Outcome::Status { code, retry_after } => {
                    let status =
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let mut response = match style {
                        Style::Rest => rest_error(status, "fault injected"),
                        Style::Actions => {
                            actions_error(status, "FaultInjectedException", "fault injected")
                        }
                    };
                    if let Some(seconds) = retry_after {
                        response
                            .headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                    }
                    log.set(response.status().as_u16(), Some(endpoint));
                    return Ok(response);
                }
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
        Route::GetScaleSet { scale_set } => call.get_scale_set(&scale_set),
        Route::GetMessage { session_id } => call.get_message(&session_id).await,
        Route::DeleteMessage {
            session_id,
            message_id,
        } => call.delete_message(&session_id, &message_id),
        Route::WorkflowRun {
            owner,
            repo,
            run_id,
        } => call.workflow_run(&owner, &repo, &run_id),
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

// ---- handlers -------------------------------------------------------------------------------

pub(super) struct Call<'a> {
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
