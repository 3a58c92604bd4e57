//! Typed client errors. None of them ever holds a secret: URLs lose their query string,
//! service messages are truncated, tokens are never formatted.

use std::fmt;

use retry::FailureKind;

use crate::config_url::ConfigUrlError;
use crate::messages::MessageParseError;

/// An HTTP response that was not the expected success, with what the service told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub method: String,
    /// Scheme, host and path of the request (query removed).
    pub url: String,
    pub status: u16,
    /// `ActivityId` response header (Actions service).
    pub activity_id: Option<String>,
    /// `X-GitHub-Request-Id` response header.
    pub github_request_id: Option<String>,
    /// `typeName` of the service's JSON error body.
    pub type_name: Option<String>,
    /// `message` of the JSON error body, or the start of a non-JSON body.
    pub message: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} returned {}", self.method, self.url, self.status)?;
        if let Some(reason) = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            write!(f, " {reason}")?;
        }
        if let Some(id) = &self.activity_id {
            write!(f, " (activity_id={id})")?;
        }
        if let Some(id) = &self.github_request_id {
            write!(f, " (github_request_id={id})")?;
        }
        match (&self.type_name, &self.message) {
            (Some(t), Some(m)) => write!(f, ": {t}: {m}"),
            (Some(t), None) => write!(f, ": {t}"),
            (None, Some(m)) => write!(f, ": {m}"),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    ConfigUrl(#[from] ConfigUrlError),

    /// Bad client configuration: private key, root CA, proxy, HTTP client construction.
    #[error("invalid client configuration: {reason}")]
    InvalidConfig { reason: String },

    /// GitHub REST refused the PAT or App credentials (401/403): fatal for the listener.
    #[error("GitHub rejected the credentials: {0}")]
    CredentialsRejected(Box<ApiError>),

    /// The Actions service rejected a token (admin or message queue) even after a refresh.
    #[error("token expired or rejected: {0}")]
    TokenExpired(Box<ApiError>),

    /// Creating the session kept returning 409: another session for the scale set is alive.
    #[error(
        "another message session for the scale set is still active (waited {waited_secs} s): {api}"
    )]
    SessionConflict {
        api: Box<ApiError>,
        waited_secs: u64,
    },

    #[error("not found: {0}")]
    NotFound(Box<ApiError>),

    /// Any other unexpected status (after retries when retryable).
    #[error("{0}")]
    Status(Box<ApiError>),

    /// Connection, TLS, timeout or body-read failure (after retries).
    #[error("{method} {url} failed{}: {reason}", if *.timed_out { " (timed out)" } else { "" })]
    Transport {
        method: String,
        url: String,
        reason: String,
        timed_out: bool,
        /// Certificate or handshake failure: not retried, not transient.
        tls: bool,
    },

    /// A success response whose body is not what the protocol says.
    #[error("{method} {url}: unexpected response: {reason}")]
    InvalidResponse {
        method: String,
        url: String,
        reason: String,
    },

    /// A queue message whose body cannot be parsed. `message_id` is known unless the
    /// envelope itself is not JSON; ack it to skip this poison message.
    #[error("queue message {} cannot be parsed: {source}", .message_id.map(|i| i.to_string()).unwrap_or_else(|| "(unknown id)".into()))]
    MalformedMessage {
        message_id: Option<i64>,
        #[source]
        source: MessageParseError,
    },

    /// The session was closed; open a new one.
    #[error("the message session is closed")]
    SessionClosed,
}

impl retry::Classify for Error {
    /// What the failure means once the client's own retries are done.
    fn kind(&self) -> FailureKind {
        match self {
            Error::ConfigUrl(_) | Error::InvalidConfig { .. } => FailureKind::InvalidInput,
            Error::CredentialsRejected(_) => FailureKind::CredentialsRejected,
            // A token the service refused even after a refresh: a later refresh may pass.
            Error::TokenExpired(_) => FailureKind::Transient { retry_after: None },
            Error::SessionConflict { .. } => FailureKind::Conflict,
            Error::NotFound(_) | Error::SessionClosed => FailureKind::NotFound,
            Error::Status(api) if is_retryable_status(api.status) => {
                FailureKind::Transient { retry_after: None }
            }
            Error::Status(api) => FailureKind::Rejected {
                status: Some(api.status),
            },
            Error::Transport { tls: false, .. } => FailureKind::Transient { retry_after: None },
            // Certificate or handshake failure: the same request fails the same way.
            Error::Transport { tls: true, .. } | Error::InvalidResponse { .. } => {
                FailureKind::Rejected { status: None }
            }
            Error::MalformedMessage {
                message_id: Some(message_id),
                ..
            } => FailureKind::Poison {
                message_id: *message_id,
            },
            Error::MalformedMessage {
                message_id: None, ..
            } => FailureKind::Rejected { status: None },
        }
    }
}

impl Error {
    /// The HTTP details, when the error comes from a response.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::CredentialsRejected(a)
            | Error::TokenExpired(a)
            | Error::NotFound(a)
            | Error::Status(a) => Some(a),
            Error::SessionConflict { api, .. } => Some(api),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.api().map(|a| a.status)
    }
}

/// 408, 429 and 5xx except 501 (the Go listener's retryablehttp policy, plus 408).
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (status >= 500 && status != 501 && status < 600)
}

/// Scheme, host, port and path of a URL; drops query, fragment and any userinfo.
pub(crate) fn redact_url(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}{}", url.scheme(), url.path())
}

/// Keep error texts from the service bounded.
pub(crate) use retry::describe::truncate;
