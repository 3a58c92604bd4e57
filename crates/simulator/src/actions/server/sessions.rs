//! The Actions service: scale-set sessions and `acquirejobs`, behind the api-version,
//! bearer-token and scale-set checks.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::responses::{
    actions_empty, actions_error, actions_json, session_not_found, unauthorized,
};
use super::{API_VERSION, Body, Call, credential, query_param};
use crate::actions::state::CreateSession;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSessionBody {
    owner_name: String,
}

impl Call<'_> {
    /// The common checks of Actions service calls: api-version, then the bearer token
    /// (admin token, or queue token when `queue_token`), then the scale set id.
    pub(super) fn check_actions(
        &self,
        scale_set: &str,
        queue_token: bool,
    ) -> Option<Response<Body>> {
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
        let known = {
            let state = self.inner.state();
            state.scale_set_registered
                && scale_set.parse::<i64>().ok() == Some(state.scale_set_id())
        };
        if !known {
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

    pub(super) fn create_session(&self, scale_set: &str) -> Response<Body> {
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

    pub(super) fn refresh_session(&self, scale_set: &str, session_id: &str) -> Response<Body> {
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

    pub(super) fn delete_session(&self, scale_set: &str, session_id: &str) -> Response<Body> {
        if let Some(bad) = self.check_actions(scale_set, false) {
            return bad;
        }
        if self.inner.state().delete_session(session_id) {
            actions_empty(StatusCode::NO_CONTENT)
        } else {
            session_not_found(session_id)
        }
    }

    pub(super) fn acquire_jobs(&self, scale_set: &str) -> Response<Body> {
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
}
