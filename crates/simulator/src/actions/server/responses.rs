//! Response builders: GitHub REST errors (`{message, documentation_url}`) and Actions
//! service errors (`{typeName, message}` with an `ActivityId` header).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use super::{Body, DOCS_URL};
use crate::actions::state::random_uuid;

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

pub(super) fn rest_json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    response(status, Some(value.to_string()))
}

pub(super) fn rest_error(status: StatusCode, message: &str) -> Response<Body> {
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

pub(super) fn actions_json(status: StatusCode, body: String) -> Response<Body> {
    with_activity_id(response(status, Some(body)))
}

pub(super) fn actions_empty(status: StatusCode) -> Response<Body> {
    with_activity_id(response(status, None))
}

pub(super) fn actions_error(status: StatusCode, type_name: &str, message: &str) -> Response<Body> {
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

pub(super) fn unauthorized(message: &str) -> Response<Body> {
    actions_error(
        StatusCode::UNAUTHORIZED,
        "VssUnauthorizedException",
        message,
    )
}

pub(super) fn session_not_found(session_id: &str) -> Response<Body> {
    actions_error(
        StatusCode::NOT_FOUND,
        "TaskAgentSessionExpiredException",
        &format!("The session {session_id} has expired or does not exist."),
    )
}
