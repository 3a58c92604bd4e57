//! The message queue: the long-polling `GET` and the acknowledging `DELETE`.

use http::{Response, StatusCode};

use super::responses::{actions_empty, actions_error, actions_json, unauthorized};
use super::{Body, Call, credential, query_param};

impl Call<'_> {
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

    pub(super) async fn get_message(&self, session_id: &str) -> Response<Body> {
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

    pub(super) fn delete_message(&self, session_id: &str, message_id: &str) -> Response<Body> {
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
