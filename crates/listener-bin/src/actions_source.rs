//! The Actions message session as the loop's [`MessageSource`].
//!
//! Hands client errors to the loop (classified by [`SourceError`]) and replaces the session
//! when the service has dropped it, so a listener outlives a lost session instead of
//! crash-looping.

use github_client::{
    ActionsClient, MessageSession, RunnerScaleSetMessage, RunnerScaleSetStatistic,
};
use retry::{Classify as _, FailureKind};
use std::sync::Arc;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::source::{MessageSource, SourceError};

pub struct ActionsSource {
    client: ActionsClient,
    scale_set_id: i64,
    owner_name: String,
    session: RwLock<Arc<MessageSession>>,
    initial_statistics: Option<RunnerScaleSetStatistic>,
}

impl ActionsSource {
    /// Open the session, retrying transient failures until `shutdown`. `Ok(None)` when
    /// shutdown came first.
    pub async fn open(
        client: ActionsClient,
        scale_set_id: i64,
        owner_name: String,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, SourceError> {
        let Some(session) = open_session(&client, scale_set_id, &owner_name, shutdown).await?
        else {
            return Ok(None);
        };
        let initial_statistics = session.initial_statistics();
        Ok(Some(Self {
            client,
            scale_set_id,
            owner_name,
            session: RwLock::new(Arc::new(session)),
            initial_statistics,
        }))
    }

    async fn current(&self) -> Arc<MessageSession> {
        Arc::clone(&*self.session.read().await)
    }

    pub fn client(&self) -> &ActionsClient {
        &self.client
    }

    /// The service no longer knows our session: open a new one in its place.
    async fn replace_session(&self, lost: &Arc<MessageSession>) -> SourceError {
        let mut slot = self.session.write().await;
        if !Arc::ptr_eq(&slot, lost) {
            return SourceError::SessionReplaced;
        }
        tracing::warn!(session_id = %lost.session_id(), "the service dropped the message session; creating a new one");
        match self
            .client
            .open_session(self.scale_set_id, &self.owner_name)
            .await
        {
            Ok(session) => {
                tracing::info!(session_id = %session.session_id(), "new message session created");
                *slot = Arc::new(session);
                SourceError::SessionReplaced
            }
            Err(e) => SourceError::Client(e),
        }
    }
}

async fn open_session(
    client: &ActionsClient,
    scale_set_id: i64,
    owner_name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<MessageSession>, SourceError> {
    let backoff = retry::policies::LISTENER_LOOP;
    let mut attempt: u32 = 0;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = client.open_session(scale_set_id, owner_name) => r,
        };
        let error = match result {
            Ok(session) => {
                tracing::info!(session_id = %session.session_id(), owner = %owner_name, "message session created");
                return Ok(Some(session));
            }
            Err(e) => e,
        };
        match error.kind() {
            FailureKind::Conflict => {
                return Err(SourceError::Open {
                    source: error,
                    hint:
                        "another listener for this scale set is still running, or the previous one \
                           did not delete its session (it expires after a few minutes)"
                            .to_owned(),
                });
            }
            FailureKind::NotFound => {
                return Err(SourceError::Open {
                    source: error,
                    hint: format!("check runner_scale_set_id {scale_set_id} and configure_url"),
                });
            }
            _ => {}
        }
        let error = SourceError::Client(error);
        match error.kind() {
            FailureKind::Transient { .. } => {
                let wait = backoff.delay(attempt, None);
                tracing::warn!(error = %error, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "creating the message session failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
                attempt = attempt.saturating_add(1);
            }
            _ => return Err(error),
        }
    }
}

impl MessageSource for ActionsSource {
    fn initial_statistics(&self) -> Option<RunnerScaleSetStatistic> {
        self.initial_statistics
    }

    async fn get_message(
        &self,
        last_message_id: i64,
        max_capacity: i32,
    ) -> Result<Option<RunnerScaleSetMessage>, SourceError> {
        let session = self.current().await;
        match session.get_message(last_message_id, max_capacity).await {
            Ok(m) => Ok(m),
            Err(e) if e.kind() == FailureKind::NotFound => {
                Err(self.replace_session(&session).await)
            }
            Err(e) => Err(SourceError::Client(e)),
        }
    }

    async fn delete_message(&self, message_id: i64) -> Result<(), SourceError> {
        let session = self.current().await;
        session
            .delete_message(message_id)
            .await
            .map_err(SourceError::Client)
    }

    async fn acquire_jobs(&self, request_ids: &[i64]) -> Result<Vec<i64>, SourceError> {
        let session = self.current().await;
        session
            .acquire_jobs(request_ids)
            .await
            .map_err(SourceError::Client)
    }

    async fn close(&self) -> Result<(), SourceError> {
        let session = self.current().await;
        session.close().await.map_err(SourceError::Client)
    }
}
