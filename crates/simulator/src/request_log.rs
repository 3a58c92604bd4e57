//! The request log both fakes keep: one record type and one bounded log.

use std::time::SystemTime;

use http::{HeaderMap, header};
use serde_json::Value;

/// The authorization scheme a request carried (never the credential itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    None,
    Bearer,
    /// GitHub's `token <PAT>` scheme.
    Token,
    RemoteAuth,
    Basic,
    Other,
}

impl AuthKind {
    /// The scheme of the `Authorization` header.
    pub fn of(headers: &HeaderMap) -> AuthKind {
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
}

/// One request a fake received. `E` names the fake's endpoints (the Kubernetes API fake has
/// none: `()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord<E = ()> {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// The status answered; 0 when the connection was dropped (fault) or the client left.
    pub status: u16,
    pub auth: AuthKind,
    pub endpoint: Option<E>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The request body. The Actions fake leaves it empty: benchmarks log many requests and
    /// no assertion needs those bodies.
    pub body: String,
    pub at: SystemTime,
}

impl<E> RequestRecord<E> {
    /// A record of a request with these headers, status 0 and no body yet.
    pub(crate) fn new(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> Self {
        let header = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        RequestRecord {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            status: 0,
            auth: AuthKind::of(headers),
            endpoint: None,
            user_agent: header(header::USER_AGENT),
            content_type: header(header::CONTENT_TYPE),
            body: String::new(),
            at: SystemTime::now(),
        }
    }

    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Records in completion order, at most `limit` of them (later ones are dropped, so a long
/// benchmark cannot grow the log without bound).
#[derive(Debug)]
pub(crate) struct RequestLog<E> {
    records: Vec<RequestRecord<E>>,
    pub(crate) limit: usize,
}

impl<E> Default for RequestLog<E> {
    /// Unbounded.
    fn default() -> Self {
        Self::with_limit(usize::MAX)
    }
}

impl<E> RequestLog<E> {
    pub(crate) fn with_limit(limit: usize) -> Self {
        Self {
            records: Vec::new(),
            limit,
        }
    }

    pub(crate) fn push(&mut self, record: RequestRecord<E>) {
        if self.records.len() < self.limit {
            self.records.push(record);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
    }
}

impl<E: Clone> RequestLog<E> {
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord<E>> {
        self.records.clone()
    }
}
