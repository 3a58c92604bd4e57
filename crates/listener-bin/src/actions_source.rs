//! The Actions message session as the loop's [`MessageSource`].
//!
//! Hands client errors to the loop (classified by [`SourceError`]), replaces the session
//! when the service has dropped it, and reads the credentials again when the loop asks
//! (after GitHub rejected them), so a listener outlives a lost session, a rotated secret
//! or a re-registered scale set instead of crash-looping.

use github_client::{
    ActionsClient, MessageSession, RunnerScaleSetMessage, RunnerScaleSetStatistic,
};
use retry::{Classify as _, FailureKind};
use std::sync::Arc;
use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::credentials::CredentialsSource;
use crate::source::{MessageSource, SourceError};

pub struct ActionsSource {
    client: ActionsClient,
    scale_set_id: i64,
    owner_name: String,
    /// Where the credentials are read again from; `None` keeps the client's.
    credentials: Option<CredentialsSource>,
    /// `None` until the first session is open.
    session: RwLock<Option<Arc<MessageSession>>>,
    /// The statistics of a session opened but not yet started by the loop.
    unstarted: Mutex<Option<Option<RunnerScaleSetStatistic>>>,
}

impl ActionsSource {
    /// A source with no session yet: the loop's [`MessageSource::start`] opens it.
    pub fn new(client: ActionsClient, scale_set_id: i64, owner_name: String) -> Self {
        Self {
            client,
            scale_set_id,
            owner_name,
            credentials: None,
            session: RwLock::new(None),
            unstarted: Mutex::new(None),
        }
    }

    /// Read the credentials from `credentials` again whenever the loop asks.
    pub fn with_credentials(mut self, credentials: CredentialsSource) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Open the session now, retrying transient failures until `shutdown` (for callers
    /// without the loop's policy, such as the bench). `Ok(None)` when shutdown came first.
    pub async fn open(
        client: ActionsClient,
        scale_set_id: i64,
        owner_name: String,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, SourceError> {
        let source = Self::new(client, scale_set_id, owner_name);
        let backoff = retry::policies::LISTENER_LOOP;
        let mut attempt: u32 = 0;
        loop {
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                opened = source.create_session() => opened,
            };
            match opened {
                Ok(statistics) => {
                    *source.unstarted.lock().await = Some(statistics);
                    return Ok(Some(source));
                }
                Err(e) if e.kind().is_transient() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff.delay(attempt, None)) => {}
                    }
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn client(&self) -> &ActionsClient {
        &self.client
    }

    /// The session's statistics, for callers that run their own loop (the bench).
    pub async fn initial_statistics(&self) -> Option<RunnerScaleSetStatistic> {
        self.unstarted.lock().await.unwrap_or_default()
    }

    async fn current(&self) -> Result<Arc<MessageSession>, SourceError> {
        self.session
            .read()
            .await
            .as_ref()
            .map(Arc::clone)
            .ok_or(SourceError::NoSession)
    }

    /// One attempt at a new session (the client waits out a 409 within its own timeout);
    /// on success it replaces whatever session was held.
    async fn create_session(&self) -> Result<Option<RunnerScaleSetStatistic>, SourceError> {
        let session = self
            .client
            .open_session(self.scale_set_id, &self.owner_name)
            .await
            .map_err(|e| self.open_error(e))?;
        tracing::info!(session_id = %session.session_id(), owner = %self.owner_name, "message session created");
        let statistics = session.initial_statistics();
        *self.session.write().await = Some(Arc::new(session));
        Ok(statistics)
    }

    fn open_error(&self, source: github_client::Error) -> SourceError {
        let hint = match source.kind() {
            FailureKind::Conflict => {
                "another listener for this scale set is still running, or the previous one \
                 did not delete its session (it expires after a few minutes)"
                    .to_owned()
            }
            FailureKind::NotFound => format!(
                "check runner_scale_set_id {} and configure_url: the scale set may have been \
                 deleted or re-registered",
                self.scale_set_id
            ),
            _ => return SourceError::Client(source),
        };
        SourceError::Open { source, hint }
    }

    /// The service no longer knows our session: open a new one in its place.
    async fn replace_session(&self, lost: &Arc<MessageSession>) -> SourceError {
        {
            let slot = self.session.read().await;
            if !slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, lost)) {
                return SourceError::SessionReplaced;
            }
        }
        tracing::warn!(session_id = %lost.session_id(), "the service dropped the message session; creating a new one");
        match self.create_session().await {
            Ok(_) => SourceError::SessionReplaced,
            Err(e) => e,
        }
    }
}

impl MessageSource for ActionsSource {
    async fn start(&self) -> Result<Option<RunnerScaleSetStatistic>, SourceError> {
        if let Some(statistics) = self.unstarted.lock().await.take() {
            return Ok(statistics);
        }
        self.create_session().await
    }

    async fn reload_credentials(&self) -> Result<(), SourceError> {
        let Some(source) = &self.credentials else {
            return Ok(());
        };
        let credentials = source.load().await.map_err(SourceError::Credentials)?;
        self.client
            .replace_credentials(credentials)
            .await
            .map_err(SourceError::Client)
    }

    async fn get_message(
        &self,
        last_message_id: i64,
        max_capacity: i32,
    ) -> Result<Option<RunnerScaleSetMessage>, SourceError> {
        let session = self.current().await?;
        match session.get_message(last_message_id, max_capacity).await {
            Ok(m) => Ok(m),
            Err(e) if e.kind() == FailureKind::NotFound => {
                Err(self.replace_session(&session).await)
            }
            Err(e) => Err(SourceError::Client(e)),
        }
    }

    async fn delete_message(&self, message_id: i64) -> Result<(), SourceError> {
        let session = self.current().await?;
        session
            .delete_message(message_id)
            .await
            .map_err(SourceError::Client)
    }

    async fn acquire_jobs(&self, request_ids: &[i64]) -> Result<Vec<i64>, SourceError> {
        let session = self.current().await?;
        session
            .acquire_jobs(request_ids)
            .await
            .map_err(SourceError::Client)
    }

    async fn close(&self) -> Result<(), SourceError> {
        let Some(session) = self.session.read().await.as_ref().map(Arc::clone) else {
            return Ok(());
        };
        session.close().await.map_err(SourceError::Client)
    }
}
