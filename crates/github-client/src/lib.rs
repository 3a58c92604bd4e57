//! Client for GitHub authentication and the Actions scale-set service.
//!
//! The listener needs: credentials → registration token → Actions service URL and admin
//! token → a message session on the scale set → long-polled messages, acks and job
//! acquisition. [`messages`] holds the typed wire messages shared with the recorders.
#![forbid(unsafe_code)]

pub mod messages;

pub use messages::{
    JobAssigned, JobAvailable, JobCommon, JobCompleted, JobMessage, JobStarted, MessageParseError,
    RunnerScaleSetMessage, RunnerScaleSetStatistic,
};
