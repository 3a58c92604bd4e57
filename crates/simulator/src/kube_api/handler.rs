//! Request handling: faults and latency, the request log, and the patch pipeline
//! (authentication, RBAC, media type, lookup, conflict, merge, schema checks, controller).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::rbac::{allowed, forbidden, kind_of, parse_path, qualified, verb};
use super::store::{ObjectKey, reconcile_runners};
use super::{EPHEMERAL_RUNNER_SETS, EPHEMERAL_RUNNERS, GROUP, MERGE_PATCH, Shared, merge_patch};
use crate::faults::{DropConnection, Outcome};
use crate::request_log::RequestRecord;

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let _in_flight = InFlight::enter(&shared);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut record = RequestRecord::new(&parts.method, &parts.uri, &parts.headers);
    record.body = String::from_utf8_lossy(&body).into_owned();
    let path = record.path.clone();
    let query = record.query.clone().unwrap_or_default();

    let (latency, fault) = {
        let mut state = shared.lock();
        let fault = state.faults.take(|f| f.matches(&parts.method, &path));
        (state.faults.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let fault = fault.unwrap_or_default();
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    let response = match fault.outcome {
        Outcome::DropConnection => {
            tracing::debug!(method = %parts.method, path = %path, "fake kube API: dropping connection (injected)");
            record.at = std::time::SystemTime::now();
            shared.lock().requests.push(record);
            return Err(DropConnection);
        }
        Outcome::Status { code, .. } => injected_status(code),
        Outcome::TruncatedBody => Some(
            Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(
                    crate::faults::TRUNCATED_BODY.as_bytes(),
                )))
                .unwrap_or_default(),
        ),
        Outcome::Proceed => None,
    };
    let response = match response {
        Some(response) => response,
        None => process(
            &shared,
            &parts.method,
            &path,
            &query,
            parts.headers.get(http::header::AUTHORIZATION),
            record.content_type.as_deref(),
            &body,
        ),
    };
    tracing::debug!(
        method = %parts.method,
        path = %path,
        status = response.status().as_u16(),
        "fake kube API request"
    );
    record.status = response.status().as_u16();
    record.at = std::time::SystemTime::now();
    shared.lock().requests.push(record);
    Ok(response)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status_object(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

pub(super) fn status_response(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response<Full<Bytes>> {
    let status_code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status_code, &status_object(code, reason, message, details))
}

fn injected_status(code: u16) -> Option<Response<Full<Bytes>>> {
    if (200..300).contains(&code) {
        return None;
    }
    let (reason, message) = match code {
        400 => ("BadRequest", "bad request"),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "forbidden"),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        ),
        410 => ("Expired", "too old resource version"),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500 => (
            "InternalError",
            "an error on the server (\"\") has prevented the request from succeeding",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => ("Unknown", "injected fault"),
    };
    let details = (code == 429).then(|| json!({"retryAfterSeconds": 1}));
    let mut response = status_response(code, reason, message, details);
    if code == 429 {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    Some(response)
}

/// Type checks of the CRD schema for the fields the listener writes.
fn validate(resource: &str, name: &str, object: &Value) -> Option<Response<Full<Bytes>>> {
    let (integers, strings): (&[&str], &[&str]) = match resource {
        EPHEMERAL_RUNNER_SETS => (&["spec.replicas", "spec.patchID"], &[]),
        EPHEMERAL_RUNNERS => (
            &[
                "status.jobRequestId",
                "status.workflowRunId",
                "status.runnerId",
            ],
            &[
                "status.jobId",
                "status.jobRepositoryName",
                "status.jobWorkflowRef",
                "status.jobDisplayName",
            ],
        ),
        _ => (&[], &[]),
    };
    let lookup = |field: &str| {
        field
            .split('.')
            .try_fold(object, |value, key| value.get(key))
    };
    let type_name = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let checks = integers
        .iter()
        .map(|f| (*f, "integer"))
        .chain(strings.iter().map(|f| (*f, "string")));
    for (field, expected) in checks {
        let Some(value) = lookup(field) else {
            continue;
        };
        let actual = type_name(value);
        if actual != expected {
            let cause = format!("{field} in body must be of type {expected}: \"{actual}\"");
            let message = format!(
                "{}.{GROUP} \"{name}\" is invalid: {field}: Invalid value: \"{actual}\": {cause}",
                kind_of(resource)
            );
            let details = json!({
                "name": name,
                "group": GROUP,
                "kind": kind_of(resource),
                "causes": [{"reason": "FieldValueTypeInvalid", "message": format!("Invalid value: \"{actual}\": {cause}"), "field": field}],
            });
            return Some(status_response(422, "Invalid", &message, Some(details)));
        }
    }
    None
}

/// `dryRun=All` as the API server reads it: the only value allowed; anything else is 400.
fn dry_run(query: &str) -> Result<bool, String> {
    let values: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "dryRun")
        .map(|(_, v)| v.into_owned())
        .collect();
    match values.as_slice() {
        [] => Ok(false),
        values if values.iter().all(|v| v == "All") => Ok(true),
        values => {
            let bad = values
                .iter()
                .find(|v| *v != "All")
                .cloned()
                .unwrap_or_default();
            Err(format!(
                "Invalid value: \"{bad}\": supported values: \"All\""
            ))
        }
    }
}

/// `into`'s status stanza made `from`'s: copied, or removed when `from` has none.
fn copy_status(into: &mut Value, from: &Value) {
    match from.get("status") {
        Some(status) => into["status"] = status.clone(),
        None => {
            if let Some(map) = into.as_object_mut() {
                map.remove("status");
            }
        }
    }
}

fn process(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    authorization: Option<&HeaderValue>,
    content_type: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    // Authentication.
    let bearer = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.token.as_str()) {
        return status_response(401, "Unauthorized", "Unauthorized", None);
    }

    // Authorization against the listener Role.
    let Some(rp) = parse_path(path) else {
        let verb = verb(method, true, query);
        let message = format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            shared.user()
        );
        return status_response(403, "Forbidden", &message, Some(json!({})));
    };
    let verb = verb(method, rp.name.is_some(), query);
    let mut state = shared.lock();
    if !allowed(&state, shared, verb, &rp) {
        return forbidden(shared, verb, &rp);
    }
    let (Some(namespace), Some(name)) = (rp.namespace, rp.name) else {
        return forbidden(shared, verb, &rp);
    };
    let dry_run = match dry_run(query) {
        Ok(dry_run) => dry_run,
        Err(message) => return status_response(400, "BadRequest", &message, None),
    };

    // Only merge patches: custom resources have no strategic merge patch, and this fake
    // implements neither JSON patch nor server-side apply.
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim);
    if media_type != Some(MERGE_PATCH) {
        return status_response(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            None,
        );
    }

    let key = ObjectKey {
        group: rp.group.to_owned(),
        version: rp.version.to_owned(),
        resource: rp.resource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let Some(old) = state.objects.get(&key).cloned() else {
        let message = format!("{} \"{name}\" not found", qualified(rp.resource, rp.group));
        let details = json!({"name": name, "group": rp.group, "kind": rp.resource});
        return status_response(404, "NotFound", &message, Some(details));
    };

    let patch: Value = match serde_json::from_slice(body) {
        Ok(patch @ Value::Object(_)) => patch,
        Ok(_) => {
            return status_response(
                400,
                "BadRequest",
                "error decoding patch: a merge patch must be a JSON object",
                None,
            );
        }
        Err(e) => {
            return status_response(
                400,
                "BadRequest",
                &format!("error decoding patch: {e}"),
                None,
            );
        }
    };

    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(rp.resource, rp.group)
        );
        let details = json!({"name": name, "group": rp.group, "kind": rp.resource});
        return status_response(409, "Conflict", &message, Some(details));
    }

    let mut patched = old.clone();
    merge_patch(&mut patched, &patch);
    let mut new = if rp.subresource == Some("status") {
        // The status subresource ignores everything but the status stanza.
        let mut new = old.clone();
        copy_status(&mut new, &patched);
        new
    } else {
        // The main resource ignores status changes (status subresource enabled).
        copy_status(&mut patched, &old);
        patched
    };
    // Identity fields cannot change through a patch.
    for field in ["apiVersion", "kind"] {
        new[field] = old[field].clone();
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
    ] {
        new["metadata"][field] = old["metadata"][field].clone();
    }

    if let Some(invalid) = validate(rp.resource, name, &new) {
        return invalid;
    }

    if dry_run {
        // Authorized, validated, answered as if applied; nothing stored, no controller run.
        return json_response(StatusCode::OK, &new);
    }
    if new != old {
        new["metadata"]["resourceVersion"] = json!(state.next_resource_version());
        if new.get("spec") != old.get("spec") {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        state.objects.insert(key.clone(), new.clone());
        if state.runner_controller && rp.resource == EPHEMERAL_RUNNER_SETS {
            reconcile_runners(&mut state, namespace, name);
            if let Some(updated) = state.objects.get(&key) {
                new = updated.clone();
            }
        }
    }
    json_response(StatusCode::OK, &new)
}
