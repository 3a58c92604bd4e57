//! The Actions message session as the loop's [`MessageSource`].
//!
//! Classifies client errors for the loop (poison, fatal, transient) and replaces the session
//! when the service has dropped it, so a listener outlives a lost session instead of
//! crash-looping.

use std::sync::Arc;
use std::time::Duration;

use github_client::{
    ActionsClient, Error, MessageSession, RunnerScaleSetMessage, RunnerScaleSetStatistic,
};
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

/// What the loop should do with a client error.
pub fn classify(error: &Error) -> SourceError {
    if let Some(message_id) = error.malformed_message_id() {
        return SourceError::Poison {
            message_id,
            reason: error.to_string(),
        };
    }
    if error.is_credentials_rejected()
        || matches!(error, Error::InvalidConfig { .. } | Error::ConfigUrl(_))
    {
        return SourceError::Fatal(error.to_string());
    }
    // Anything else may pass: the service answers 5xx/4xx transiently during incidents.
    SourceError::Transient(error.to_string())
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

    pub async fn session_id(&self) -> String {
        self.current().await.session_id().to_owned()
    }

    pub fn client(&self) -> &ActionsClient {
        &self.client
    }

    /// The service no longer knows our session: open a new one in its place.
    async fn replace_session(&self, lost: &Arc<MessageSession>) -> SourceError {
        let mut slot = self.session.write().await;
        if !Arc::ptr_eq(&slot, lost) {
            return SourceError::Transient("session was replaced concurrently".into());
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
                SourceError::Transient("message session re-created".into())
            }
            Err(e) => classify(&e),
        }
    }
}

async fn open_session(
    client: &ActionsClient,
    scale_set_id: i64,
    owner_name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<MessageSession>, SourceError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = client.open_session(scale_set_id, owner_name) => r,
        };
        match attempt {
            Ok(session) => {
                tracing::info!(session_id = %session.session_id(), owner = %owner_name, "message session created");
                return Ok(Some(session));
            }
            Err(e) if e.is_session_conflict() => {
                return Err(SourceError::Fatal(format!(
                    "{e}; another listener for this scale set is still running, or the previous one \
                     did not delete its session (it expires after a few minutes)"
                )));
            }
            Err(e) if e.is_not_found() => {
                return Err(SourceError::Fatal(format!(
                    "{e}; check runner_scale_set_id {scale_set_id} and configure_url"
                )));
            }
            Err(e) => match classify(&e) {
                SourceError::Transient(reason) => {
                    tracing::warn!(error = %reason, retry_in_s = backoff.as_secs(), "creating the message session failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                other => return Err(other),
            },
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
            Err(e) if e.is_not_found() || matches!(e, Error::SessionClosed) => {
                Err(self.replace_session(&session).await)
            }
            Err(e) => Err(classify(&e)),
        }
    }

    async fn delete_message(&self, message_id: i64) -> Result<(), SourceError> {
        let session = self.current().await;
        session
            .delete_message(message_id)
            .await
            .map_err(|e| classify(&e))
    }

    async fn acquire_jobs(&self, request_ids: &[i64]) -> Result<Vec<i64>, SourceError> {
        let session = self.current().await;
        session
            .acquire_jobs(request_ids)
            .await
            .map_err(|e| classify(&e))
    }

    async fn close(&self) -> Result<(), SourceError> {
        let session = self.current().await;
        session.close().await.map_err(|e| classify(&e))
    }
}
