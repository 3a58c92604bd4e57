//! Routing by hand, so that an unknown path, a wrong method or a wrong scale-set id gets
//! the same JSON error the real service would give.

use http::Method;

use crate::actions::{Endpoint, Inner, RegistrationScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// GitHub REST: `{message, documentation_url}` errors.
    Rest,
    /// Actions service and queue: `{typeName, message}` errors with `ActivityId`.
    Actions,
}

pub(super) enum Route {
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
    GetScaleSet {
        scale_set: String,
    },
    GetMessage {
        session_id: String,
    },
    DeleteMessage {
        session_id: String,
        message_id: String,
    },
    WorkflowRun {
        owner: String,
        repo: String,
        run_id: String,
    },
    NotFound(Style),
}

impl Route {
    pub(super) fn endpoint(&self) -> Option<Endpoint> {
        Some(match self {
            Route::AppToken { .. } => Endpoint::AppToken,
            Route::RegistrationToken(_) => Endpoint::RegistrationToken,
            Route::RunnerRegistration => Endpoint::RunnerRegistration,
            Route::CreateSession { .. } => Endpoint::CreateSession,
            Route::RefreshSession { .. } => Endpoint::RefreshSession,
            Route::DeleteSession { .. } => Endpoint::DeleteSession,
            Route::AcquireJobs { .. } => Endpoint::AcquireJobs,
            Route::GetScaleSet { .. } => Endpoint::GetScaleSet,
            Route::GetMessage { .. } => Endpoint::GetMessage,
            Route::DeleteMessage { .. } => Endpoint::DeleteMessage,
            Route::WorkflowRun { .. } => Endpoint::WorkflowRun,
            Route::NotFound(_) => return None,
        })
    }

    pub(super) fn style(&self) -> Style {
        match self {
            Route::AppToken { .. }
            | Route::RegistrationToken(_)
            | Route::RunnerRegistration
            | Route::WorkflowRun { .. } => Style::Rest,
            Route::NotFound(style) => *style,
            _ => Style::Actions,
        }
    }
}

pub(super) fn route(inner: &Inner, method: &Method, path: &str) -> Route {
    if let Some(rest) = path.strip_prefix(inner.service_prefix.as_str()) {
        let segments: Vec<&str> = rest.split('/').collect();
        return match (method, segments.as_slice()) {
            (&Method::GET, ["_apis", "runtime", "runnerscalesets", id]) => Route::GetScaleSet {
                scale_set: (*id).to_owned(),
            },
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
    if let (&Method::GET, ["repos", owner, repo, "actions", "runs", run_id]) = (method, rest) {
        return Route::WorkflowRun {
            owner: (*owner).to_owned(),
            repo: (*repo).to_owned(),
            run_id: (*run_id).to_owned(),
        };
    }
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
