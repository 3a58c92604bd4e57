//! GitHub REST `GET /repos/{owner}/{repo}/actions/runs/{run_id}`: the workflow run, of which
//! clients read `run_attempt`. Every run exists at attempt 1 unless
//! [`FakeActions::set_run_attempt`](crate::actions::FakeActions::set_run_attempt) says
//! otherwise; with [`FakeRateLimit`] set, answers carry GitHub's rate-limit headers and spend
//! the budget. 403/404 and delays come from the fault list (`Endpoint::WorkflowRun`).

use std::collections::HashMap;

use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::responses::{rest_error, rest_json};
use super::{Body, Call, credential};
use crate::actions::FakeAuth;

/// The fake's rate-limit budget for the runs endpoint, as GitHub reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeRateLimit {
    /// `X-RateLimit-Limit`.
    pub limit: u64,
    /// `X-RateLimit-Remaining`, decremented by each answered lookup.
    pub remaining: u64,
    /// `X-RateLimit-Reset`, Unix seconds.
    pub reset: u64,
}

/// The workflow runs the fake knows about.
#[derive(Debug, Default)]
pub(crate) struct WorkflowRuns {
    pub(crate) attempts: HashMap<i64, u32>,
    pub(crate) rate_limit: Option<FakeRateLimit>,
}

/// The part of GitHub's workflow-run object clients read (and a few fields for realism).
#[derive(Serialize)]
struct WorkflowRunBody<'a> {
    id: i64,
    run_attempt: u32,
    name: &'a str,
    html_url: String,
    status: &'a str,
}

impl Call<'_> {
    pub(super) fn workflow_run(&self, owner: &str, repo: &str, run_id: &str) -> Response<Body> {
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
        let Ok(id) = run_id.parse::<i64>() else {
            return rest_error(StatusCode::NOT_FOUND, "Not Found");
        };
        let (attempt, rate_limit) = {
            let mut state = self.inner.state();
            let attempt = state.runs.attempts.get(&id).copied().unwrap_or(1);
            let limit = state.runs.rate_limit.as_mut().map(|l| {
                l.remaining = l.remaining.saturating_sub(1);
                *l
            });
            (attempt, limit)
        };
        let mut response = rest_json(
            StatusCode::OK,
            &serde_json::json!(WorkflowRunBody {
                id,
                run_attempt: attempt,
                name: "CI",
                html_url: format!("{}/{owner}/{repo}/actions/runs/{id}", self.inner.base_url),
                status: "in_progress",
            }),
        );
        if let Some(limit) = rate_limit {
            let headers = response.headers_mut();
            for (name, value) in [
                ("x-ratelimit-limit", limit.limit),
                ("x-ratelimit-remaining", limit.remaining),
                ("x-ratelimit-reset", limit.reset),
            ] {
                headers.insert(name, HeaderValue::from(value));
            }
        }
        response
    }
}
