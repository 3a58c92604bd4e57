//! Where messages come from: the listener's view of the Actions message session.

use std::future::Future;

use github_client::{RunnerScaleSetMessage, RunnerScaleSetStatistic};

/// How a message-source failure is to be treated by the loop.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    /// A message that cannot be parsed: acknowledge and skip it.
    #[error("message {message_id} is malformed: {reason}")]
    Poison { message_id: i64, reason: String },
    /// Retrying cannot help (credentials rejected, scale set gone): exit.
    #[error("{0}")]
    Fatal(String),
    /// Retries below were exhausted, but a later attempt may succeed.
    #[error("{0}")]
    Transient(String),
}

/// A message session on the scale set's queue.
pub trait MessageSource: Send + Sync {
    /// The statistics the session was created with.
    fn initial_statistics(&self) -> Option<RunnerScaleSetStatistic>;

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
