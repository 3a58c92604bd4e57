//! Where messages come from: the listener's view of the Actions message session.

use std::future::Future;

use github_client::{RunnerScaleSetMessage, RunnerScaleSetStatistic};
use retry::{Classify, FailureKind};

/// A message-source failure, carrying the client's error; the loop decides by its
/// [`retry::Classify::kind`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A call of the Actions client failed (after the client's own retries).
    #[error(transparent)]
    Client(#[from] github_client::Error),
    /// The service had dropped the session and it was replaced (here or concurrently):
    /// poll again.
    #[error("message session re-created")]
    SessionReplaced,
    /// Creating a session failed in a way `hint` explains (a conflict, the scale set not
    /// found).
    #[error("{source}; {hint}")]
    Open {
        source: github_client::Error,
        hint: String,
    },
    /// A call came before the first session was open.
    #[error("no message session is open")]
    NoSession,
    /// Reading the credentials again failed; the ones in use are kept.
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
}

impl Classify for SourceError {
    /// From a poll, only poison, rejected credentials and bad configuration keep their own
    /// kind; anything else (404, 409, other 4xx, TLS) counts as transient, because the
    /// service answers those transiently during incidents.
    fn kind(&self) -> FailureKind {
        match self {
            SourceError::Client(e) => match e.kind() {
                k @ (FailureKind::Poison { .. }
                | FailureKind::CredentialsRejected
                | FailureKind::InvalidInput
                | FailureKind::Transient { .. }) => k,
                _ => FailureKind::Transient { retry_after: None },
            },
            SourceError::SessionReplaced | SourceError::NoSession => {
                FailureKind::Transient { retry_after: None }
            }
            SourceError::Open { source, .. } => source.kind(),
            SourceError::Credentials(_) => FailureKind::InvalidInput,
        }
    }
}

/// A message session on the scale set's queue.
pub trait MessageSource: Send + Sync {
    /// Make sure a session is open (opening one if none is) and return the statistics it
    /// was created with. Called by the loop at start and again until it succeeds.
    fn start(
        &self,
    ) -> impl Future<Output = Result<Option<RunnerScaleSetStatistic>, SourceError>> + Send;

    /// Read the credentials again (GitHub rejected the ones in use). A source whose
    /// credentials cannot change has nothing to do.
    fn reload_credentials(&self) -> impl Future<Output = Result<(), SourceError>> + Send {
        async { Ok(()) }
    }

    /// Long-poll for the next message; `Ok(None)` when the service had none. Must be
    /// cancel-safe: dropping the future is how shutdown interrupts the poll.
    fn get_message(
        &self,
        last_message_id: i64,
        max_capacity: i32,
    ) -> impl Future<Output = Result<Option<RunnerScaleSetMessage>, SourceError>> + Send;

    /// Acknowledge (delete) a message.
    fn delete_message(
        &self,
        message_id: i64,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Acquire available jobs; returns the ids acquired.
    fn acquire_jobs(
        &self,
        request_ids: &[i64],
    ) -> impl Future<Output = Result<Vec<i64>, SourceError>> + Send;

    /// Delete the session so the next listener can start at once.
    fn close(&self) -> impl Future<Output = Result<(), SourceError>> + Send;
}
