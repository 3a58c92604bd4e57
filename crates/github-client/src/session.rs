//! A message session on a scale set: long poll, ack, acquire, refresh, close.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use http::Method;
use serde::Deserialize;
use url::Url;

use crate::client::{ActionsClient, Request, Response, invalid, service_error};
use crate::error::{Error, redact_url};
use crate::messages::{RunnerScaleSetMessage, RunnerScaleSetStatistic, parse_queue_message};
use crate::secret::SecretString;

/// Header carrying the listener's max runners on the long poll.
pub const HEADER_SCALE_SET_MAX_CAPACITY: &str = "X-ScaleSetMaxCapacity";

/// The session as the service returns it. Not `Debug`: it holds the queue token.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSession {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    message_queue_url: Option<String>,
    #[serde(default)]
    message_queue_access_token: SecretString,
    #[serde(default)]
    statistics: Option<RunnerScaleSetStatistic>,
}

/// Where and how to reach the queue; replaced as a whole on session refresh.
struct QueueState {
    url: Url,
    token: SecretString,
}

/// An open message session. All methods take `&self` and may run concurrently; `get_message`
/// is cancel-safe (drop its future to stop the long poll).
pub struct MessageSession {
    client: ActionsClient,
    scale_set_id: i64,
    session_id: String,
    owner_name: String,
    initial_statistics: Option<RunnerScaleSetStatistic>,
    queue: RwLock<Arc<QueueState>>,
    /// One session refresh at a time; others wait and reuse the new token.
    refresh_lock: tokio::sync::Mutex<()>,
    /// `true` once the session is deleted.
    closed: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for MessageSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSession")
            .field("scale_set_id", &self.scale_set_id)
            .field("session_id", &self.session_id)
            .field("owner_name", &self.owner_name)
            .finish_non_exhaustive()
    }
}

fn sessions_path(scale_set_id: i64) -> String {
    format!("/_apis/runtime/runnerscalesets/{scale_set_id}/sessions")
}

fn parse_session(
    req: &Request,
    resp: &Response,
) -> Result<(String, QueueState, Option<RunnerScaleSetStatistic>), Error> {
    let wire: WireSession = resp.json(req)?;
    let session_id = wire
        .session_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(req, "session has no sessionId"))?;
    let raw_url = wire
        .message_queue_url
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(req, "session has no messageQueueUrl"))?;
    let url = Url::parse(&raw_url)
        .map_err(|e| invalid(req, &format!("messageQueueUrl is invalid: {e}")))?;
    if wire.message_queue_access_token.is_empty() {
        return Err(invalid(req, "session has no messageQueueAccessToken"));
    }
    Ok((
        session_id,
        QueueState {
            url,
            token: wire.message_queue_access_token,
        },
        wire.statistics,
    ))
}

impl ActionsClient {
    /// Create a message session owned by `owner_name` (the pod's hostname). A 409 (a previous
    /// session still alive) is retried with backoff for `session_conflict_timeout`.
    pub async fn open_session(
        &self,
        scale_set_id: i64,
        owner_name: &str,
    ) -> Result<MessageSession, Error> {
        let body = serde_json::json!({ "ownerName": owner_name })
            .to_string()
            .into_bytes();
        let started = Instant::now();
        let deadline = started + self.inner.options.session_conflict_timeout;
        let mut attempt: u32 = 0;
        loop {
            let (req, resp) = self
                .admin_call(
                    Method::POST,
                    &sessions_path(scale_set_id),
                    Some(body.clone()),
                )
                .await?;
            if resp.is_success() {
                let (session_id, queue, statistics) = parse_session(&req, &resp)?;
                tracing::info!(scale_set_id, session_id = %session_id, owner = %owner_name, "message session created");
                return Ok(MessageSession {
                    client: self.clone(),
                    scale_set_id,
                    session_id,
                    owner_name: owner_name.to_owned(),
                    initial_statistics: statistics,
                    queue: RwLock::new(Arc::new(queue)),
                    refresh_lock: tokio::sync::Mutex::new(()),
                    closed: tokio::sync::Mutex::new(false),
                });
            }
            let api = resp.api_error(&req);
            if resp.status != 409 {
                return Err(service_error(api));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::SessionConflict {
                    api: Box::new(api),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            self.inner.metrics.inc_session_conflicts();
            let delay = self
                .inner
                .options
                .retry
                .backoff
                .delay(attempt, None)
                .max(::retry::policies::SESSION_CONFLICT_MIN_WAIT)
                .min(deadline - now);
            tracing::warn!(
                scale_set_id, error = %api, delay_ms = delay.as_millis() as u64,
                "another session of the scale set is still active; waiting for it to lapse"
            );
            tokio::time::sleep(delay).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

impl MessageSession {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn scale_set_id(&self) -> i64 {
        self.scale_set_id
    }

    pub fn owner_name(&self) -> &str {
        &self.owner_name
    }

    /// Statistics of the session as created (the listener's first desired count).
    pub fn initial_statistics(&self) -> Option<RunnerScaleSetStatistic> {
        self.initial_statistics
    }

    fn queue(&self) -> Arc<QueueState> {
        // A poisoned lock still holds a whole Arc: the state cannot be half-written.
        self.queue.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn ensure_open(&self) -> Result<(), Error> {
        if *self.closed.lock().await {
            return Err(Error::SessionClosed);
        }
        Ok(())
    }

    /// Refresh the session (new queue token) unless someone already replaced `used`.
    async fn refresh(&self, used: &Arc<QueueState>) -> Result<(), Error> {
        let _guard = self.refresh_lock.lock().await;
        if !Arc::ptr_eq(&self.queue(), used) {
            return Ok(());
        }
        let path = format!("{}/{}", sessions_path(self.scale_set_id), self.session_id);
        let (req, resp) = self.client.admin_call(Method::PATCH, &path, None).await?;
        if !resp.is_success() {
            return Err(service_error(resp.api_error(&req)));
        }
        let (_, queue, _) = parse_session(&req, &resp)?;
        *self.queue.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(queue);
        self.client.inner.metrics.inc_session_refreshes();
        tracing::info!(session_id = %self.session_id, "message session refreshed (new queue token)");
        Ok(())
    }

    /// Send a queue-token request; on 401 refresh the session and send it once more.
    async fn queue_call(
        &self,
        build: impl Fn(&QueueState) -> Request,
    ) -> Result<(Request, Response), Error> {
        let state = self.queue();
        let req = build(&state);
        let resp = self.client.execute(&req).await?;
        if resp.status != 401 {
            return Ok((req, resp));
        }
        tracing::info!(url = %redact_url(&req.url), "message queue token rejected, refreshing the session");
        self.refresh(&state).await?;
        let req = build(&self.queue());
        let resp = self.client.execute(&req).await?;
        Ok((req, resp))
    }

    fn bearer(token: &SecretString) -> Option<SecretString> {
        Some(SecretString::new(format!(
            "Bearer {}",
            token.expose_secret()
        )))
    }

    /// Long-poll the queue. `Ok(None)` when the service had no message (202).
    /// A body that cannot be parsed is [`Error::MalformedMessage`] with its message id.
    pub async fn get_message(
        &self,
        last_message_id: i64,
        max_capacity: i32,
    ) -> Result<Option<RunnerScaleSetMessage>, Error> {
        self.ensure_open().await?;
        let timeout = self.client.inner.options.long_poll_timeout;
        let (req, resp) = self
            .queue_call(|q| Request {
                method: Method::GET,
                url: with_last_message_id(&q.url, last_message_id),
                authorization: Self::bearer(&q.token),
                headers: vec![
                    (
                        "Accept",
                        "application/json; api-version=6.0-preview".to_owned(),
                    ),
                    (HEADER_SCALE_SET_MAX_CAPACITY, max_capacity.to_string()),
                ],
                body: None,
                timeout,
                retry_auth_failures: false,
            })
            .await?;
        match resp.status {
            202 => Ok(None),
            200 => match parse_queue_message(&resp.body) {
                Ok(message) => Ok(Some(message)),
                Err(source) => {
                    let message_id = serde_json::from_slice::<serde_json::Value>(&resp.body)
                        .ok()
                        .and_then(|v| v.get("messageId").and_then(|id| id.as_i64()));
                    tracing::warn!(message_id = ?message_id, error = %source, "queue message cannot be parsed");
                    Err(Error::MalformedMessage { message_id, source })
                }
            },
            _ => Err(service_error(resp.api_error(&req))),
        }
    }

    /// Delete (ack) a message. 404 is [`Error::NotFound`].
    pub async fn delete_message(&self, message_id: i64) -> Result<(), Error> {
        self.ensure_open().await?;
        let timeout = self.client.inner.options.request_timeout;
        let (req, resp) = self
            .queue_call(|q| {
                let mut url = q.url.clone();
                let path = format!("{}/{message_id}", q.url.path().trim_end_matches('/'));
                url.set_path(&path);
                Request {
                    method: Method::DELETE,
                    url,
                    authorization: Self::bearer(&q.token),
                    headers: vec![("Content-Type", "application/json".to_owned())],
                    body: None,
                    timeout,
                    retry_auth_failures: false,
                }
            })
            .await?;
        if resp.is_success() {
            Ok(())
        } else {
            Err(service_error(resp.api_error(&req)))
        }
    }

    /// Acquire jobs by runner request id; returns the ids the service granted.
    pub async fn acquire_jobs(&self, request_ids: &[i64]) -> Result<Vec<i64>, Error> {
        self.ensure_open().await?;
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let admin = self.client.admin_connection(None).await?;
        let url = ActionsClient::service_url(
            &admin.service_url,
            &format!(
                "/_apis/runtime/runnerscalesets/{}/acquirejobs",
                self.scale_set_id
            ),
        );
        let body = serde_json::to_vec(request_ids).map_err(|e| Error::InvalidConfig {
            reason: format!("cannot encode request ids: {e}"),
        })?;
        let timeout = self.client.inner.options.request_timeout;
        let (req, resp) = self
            .queue_call(|q| Request {
                method: Method::POST,
                url: url.clone(),
                authorization: Self::bearer(&q.token),
                headers: vec![("Content-Type", "application/json".to_owned())],
                body: Some(body.clone()),
                timeout,
                retry_auth_failures: false,
            })
            .await?;
        if !resp.is_success() {
            return Err(service_error(resp.api_error(&req)));
        }
        #[derive(Deserialize)]
        struct Acquired {
            #[serde(default)]
            value: Option<Vec<i64>>,
        }
        let acquired: Acquired = resp.json(&req)?;
        Ok(acquired.value.unwrap_or_default())
    }

    /// Delete the session. Idempotent: later calls (and a 404) succeed without a request.
    pub async fn close(&self) -> Result<(), Error> {
        let mut closed = self.closed.lock().await;
        if *closed {
            return Ok(());
        }
        let path = format!("{}/{}", sessions_path(self.scale_set_id), self.session_id);
        let (req, resp) = self.client.admin_call(Method::DELETE, &path, None).await?;
        if resp.is_success() || resp.status == 404 {
            *closed = true;
            tracing::info!(session_id = %self.session_id, "message session deleted");
            return Ok(());
        }
        Err(service_error(resp.api_error(&req)))
    }
}

/// The queue URL with `lastMessageId` set when positive; the rest of its query is kept as is.
pub(crate) fn with_last_message_id(queue_url: &Url, last_message_id: i64) -> Url {
    let mut url = queue_url.clone();
    if last_message_id <= 0 {
        return url;
    }
    if url.query_pairs().any(|(k, _)| k == "lastMessageId") {
        let kept: Vec<(String, String)> = queue_url
            .query_pairs()
            .filter(|(k, _)| k != "lastMessageId")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        url.query_pairs_mut().extend_pairs(kept);
    }
    url.query_pairs_mut()
        .append_pair("lastMessageId", &last_message_id.to_string());
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_message_id_only_when_positive_and_query_kept() {
        let q =
            Url::parse("https://broker.example/q/messages?sessionId=abc&api-version=6.0-preview")
                .unwrap();
        assert_eq!(with_last_message_id(&q, 0).as_str(), q.as_str());
        assert_eq!(with_last_message_id(&q, -1).as_str(), q.as_str());
        assert_eq!(
            with_last_message_id(&q, 42).as_str(),
            "https://broker.example/q/messages?sessionId=abc&api-version=6.0-preview&lastMessageId=42"
        );
        let again = with_last_message_id(&with_last_message_id(&q, 42), 43);
        assert_eq!(
            again.as_str(),
            "https://broker.example/q/messages?sessionId=abc&api-version=6.0-preview&lastMessageId=43"
        );
        let bare = Url::parse("http://h/m").unwrap();
        assert_eq!(
            with_last_message_id(&bare, 5).as_str(),
            "http://h/m?lastMessageId=5"
        );
    }
}
