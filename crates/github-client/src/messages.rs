//! Typed scale-set messages as the Actions service sends them.
//!
//! A queue message's `body` is a JSON *string* that holds an array of job messages, each
//! dispatched on its own `messageType`. Unknown job types are skipped (the service adds
//! types over time); a body that is not an array of objects is a [`MessageParseError`].
//!
//! A body is read by a fast path (`fast`: the whole array in one scan, every field of every
//! job type in one struct) and, for whatever it turns down, by the reference decoder
//! ([`decode_item`]: three scans per item), which also words every error. The fast path
//! never succeeds where the reference would read an input differently, so the result is
//! the reference's for every input, at the fast path's cost for what the service sends:
//! 3450 -> 2000 ns of CPU per job (median of 5 runs each, 50-job message, release build on
//! a loaded 2-CPU VM: `cargo bench -p github-client --bench parse_queue_message`);
//! 47.2k -> 26.2k instructions per job (callgrind), of which the body went 33.7k -> 13.0k.
//! Half of what remains is serde_json unescaping the envelope's `body` string, which stops
//! at each of its escapes (two per string in the body's JSON).

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The queue message type that carries job messages.
pub const JOB_MESSAGES_TYPE: &str = "RunnerScaleSetJobMessages";

/// Statistics the service attaches to sessions and messages. Scaling follows
/// `total_assigned_jobs` only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunnerScaleSetStatistic {
    pub total_available_jobs: i64,
    pub total_acquired_jobs: i64,
    pub total_assigned_jobs: i64,
    pub total_running_jobs: i64,
    pub total_registered_runners: i64,
    pub total_busy_runners: i64,
    pub total_idle_runners: i64,
}

/// Fields every job message carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobCommon {
    pub runner_request_id: i64,
    pub repository_name: String,
    pub owner_name: String,
    #[serde(deserialize_with = "string_or_number")]
    pub job_id: String,
    pub job_workflow_ref: String,
    pub job_display_name: String,
    pub workflow_run_id: i64,
    pub event_name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub request_labels: Vec<String>,
    #[serde(deserialize_with = "optional_time")]
    pub queue_time: Option<OffsetDateTime>,
    #[serde(deserialize_with = "optional_time")]
    pub scale_set_assign_time: Option<OffsetDateTime>,
    #[serde(deserialize_with = "optional_time")]
    pub runner_assign_time: Option<OffsetDateTime>,
    #[serde(deserialize_with = "optional_time")]
    pub finish_time: Option<OffsetDateTime>,
}

// For the reference decoder ([`decode_item`]) the job types decode only their own fields:
// `common` is `#[serde(skip)]` and is decoded from the same item text (see `decode_job`).
// The common fields are declared once, in [`JobCommon`], without `#[serde(flatten)]`,
// whose buffering of every field cost the listener 130 -> 98 µs of CPU per job
// (docs/benchmarks.md). The fast path reads all of them in one struct (`fast::AnyJob`).

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobAvailable {
    #[serde(skip)]
    pub common: JobCommon,
    pub acquire_job_url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobAssigned {
    pub common: JobCommon,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobStarted {
    #[serde(skip)]
    pub common: JobCommon,
    pub runner_id: i64,
    pub runner_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobCompleted {
    #[serde(skip)]
    pub common: JobCommon,
    pub result: String,
    pub runner_id: i64,
    pub runner_name: String,
}

/// One job message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMessage {
    Available(JobAvailable),
    Assigned(JobAssigned),
    Started(JobStarted),
    Completed(JobCompleted),
}

impl JobMessage {
    pub fn common(&self) -> &JobCommon {
        match self {
            JobMessage::Available(m) => &m.common,
            JobMessage::Assigned(m) => &m.common,
            JobMessage::Started(m) => &m.common,
            JobMessage::Completed(m) => &m.common,
        }
    }
}

/// A message taken from the scale set's queue, with its body parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerScaleSetMessage {
    pub message_id: i64,
    pub message_type: String,
    pub statistics: Option<RunnerScaleSetStatistic>,
    /// Job messages in the order the service sent them.
    pub jobs: Vec<JobMessage>,
    /// Job messages of a type this listener does not handle, skipped.
    pub skipped_jobs: usize,
}

impl RunnerScaleSetMessage {
    /// The runner request ids of the message's available jobs, in order: what an acquire asks for.
    pub fn available_job_ids(&self) -> Vec<i64> {
        self.jobs
            .iter()
            .filter_map(|job| match job {
                JobMessage::Available(available) => Some(available.common.runner_request_id),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageParseError {
    #[error("message {message_id}: body is not a JSON array of job messages: {reason}")]
    Body { message_id: i64, reason: String },
    #[error("message {message_id}: job message {index} ({message_type}) is malformed: {reason}")]
    Job {
        message_id: i64,
        index: usize,
        message_type: String,
        reason: String,
    },
    #[error("queue message is not valid JSON: {reason}")]
    Envelope { reason: String },
}

/// The queue message as it arrives, before its body is parsed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawQueueMessage {
    pub message_id: i64,
    pub message_type: String,
    #[serde(deserialize_with = "null_as_default")]
    pub body: String,
    pub statistics: Option<RunnerScaleSetStatistic>,
}

/// Strip a UTF-8 byte-order mark, which the service may prefix to bodies.
pub fn strip_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

/// Parse a whole queue message (the HTTP response body of a 200 from the queue).
pub fn parse_queue_message(raw: &[u8]) -> Result<RunnerScaleSetMessage, MessageParseError> {
    parse_message(envelope(raw)?)
}

/// The queue message as it arrives, its body still a string.
fn envelope(raw: &[u8]) -> Result<RawQueueMessage, MessageParseError> {
    let text = std::str::from_utf8(raw).map_err(|e| MessageParseError::Envelope {
        reason: e.to_string(),
    })?;
    serde_json::from_str(strip_bom(text)).map_err(|e| MessageParseError::Envelope {
        reason: e.to_string(),
    })
}

/// Parse the body of a queue message into typed job messages.
pub fn parse_message(raw: RawQueueMessage) -> Result<RunnerScaleSetMessage, MessageParseError> {
    parse_message_with(raw, true, parse_item)
}

/// How one item of a body is read: [`parse_item`] (fast path, then [`decode_item`]), or
/// [`decode_item`] alone (the reference the tests compare with).
type ItemParser = fn(i64, usize, &str) -> Result<Option<JobMessage>, MessageParseError>;

/// [`parse_message`], with the whole-body fast path on or off and `item` reading the items
/// of a body the fast path did not take.
fn parse_message_with(
    raw: RawQueueMessage,
    whole_body_fast_path: bool,
    item: ItemParser,
) -> Result<RunnerScaleSetMessage, MessageParseError> {
    let mut message = RunnerScaleSetMessage {
        message_id: raw.message_id,
        message_type: raw.message_type,
        statistics: raw.statistics,
        jobs: Vec::new(),
        skipped_jobs: 0,
    };
    if message.message_type != JOB_MESSAGES_TYPE {
        // The Go listener ignores the body of other message types; so do we.
        return Ok(message);
    }
    let body = strip_bom(&raw.body).trim();
    if body.is_empty() {
        return Ok(message);
    }
    if whole_body_fast_path && let Some((jobs, skipped_jobs)) = fast::decode_body(body) {
        message.jobs = jobs;
        message.skipped_jobs = skipped_jobs;
        return Ok(message);
    }
    // Each item is kept as its raw text and parsed straight into its type: no intermediate
    // `serde_json::Value` tree and no `#[serde(flatten)]` buffering.
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(body).map_err(|e| MessageParseError::Body {
            message_id: message.message_id,
            reason: e.to_string(),
        })?;
    message.jobs.reserve_exact(items.len());
    for (index, raw_item) in items.into_iter().enumerate() {
        match item(message.message_id, index, raw_item.get())? {
            Some(job) => message.jobs.push(job),
            None => message.skipped_jobs += 1,
        }
    }
    Ok(message)
}

/// One job message of a body: `Some` job, or `None` for a type this listener skips.
///
/// The fast path ([`fast::decode_item`]) reads the item once; whatever it does not accept
/// goes to [`decode_item`], the reference decoder, which also words every error. The fast
/// path only ever succeeds where [`decode_item`] would give the same job (checked by the
/// `fast_path_agrees_with_the_reference_decoder` property test), so the result is
/// [`decode_item`]'s for every input.
fn parse_item(
    message_id: i64,
    index: usize,
    item: &str,
) -> Result<Option<JobMessage>, MessageParseError> {
    match fast::decode_item(item) {
        Some(job) => Ok(job),
        None => decode_item(message_id, index, item),
    }
}

/// The reference decoder of one job message, the parser's only path before the fast path
/// existed: read the `messageType` ([`ItemType`]), then the job type's own fields, then
/// its [`JobCommon`] (`decode_job`), each a scan of the item's text. Kept rather than
/// taught the fast path's edge cases, because it defines the behaviour (last
/// `messageType` wins, other job types' fields ignored whatever their type, error texts)
/// and the fast path is checked against it. It runs only for what the fast path turns
/// down: items that are not objects, duplicate keys, a wrong JSON type anywhere (even in
/// a field of another job type), a fractional `jobId`, and every error. Its cost was the
/// body's 33.7k instructions per job (the fast path's: 13.0k, module docs).
fn decode_item(
    message_id: i64,
    index: usize,
    item: &str,
) -> Result<Option<JobMessage>, MessageParseError> {
    // Never fails: `item` is valid JSON (checked by the caller) and every shape is accepted.
    let message_type = serde_json::from_str::<ItemType>(item)
        .map(|t| t.0)
        .unwrap_or_default();
    let job = match message_type.as_str() {
        "JobAvailable" => {
            decode_job(item, |j: &mut JobAvailable| &mut j.common).map(JobMessage::Available)
        }
        "JobAssigned" => serde_json::from_str::<JobCommon>(item)
            .map(|common| JobMessage::Assigned(JobAssigned { common })),
        "JobStarted" => {
            decode_job(item, |j: &mut JobStarted| &mut j.common).map(JobMessage::Started)
        }
        "JobCompleted" => {
            decode_job(item, |j: &mut JobCompleted| &mut j.common).map(JobMessage::Completed)
        }
        _ => return Ok(None),
    };
    job.map(Some).map_err(|e| MessageParseError::Job {
        message_id,
        index,
        message_type,
        reason: e.to_string(),
    })
}

/// A job type's own fields and then its [`JobCommon`], each decoded straight from the
/// item's text (fields the other half owns are skipped without allocating).
fn decode_job<T: serde::de::DeserializeOwned>(
    item: &str,
    common: impl FnOnce(&mut T) -> &mut JobCommon,
) -> Result<T, serde_json::Error> {
    let mut job: T = serde_json::from_str(item)?;
    *common(&mut job) = serde_json::from_str(item)?;
    Ok(job)
}

/// The `messageType` of one job message: the last such key of an object when it is a
/// string, "" otherwise (missing, not a string, or the item is not an object), so that
/// such items are skipped as unknown types.
///
/// Hand-written rather than read through a `serde_json::Value` per item, which allocates
/// a tree of every item (docs/benchmarks.md, figure 2, has what that cost the listener).
/// Only the reference decoder uses it now, for the items the fast path turns down.
struct ItemType(String);

impl<'de> Deserialize<'de> for ItemType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ItemType;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ItemType, A::Error> {
                let mut found = String::new();
                while let Some(IsMessageType(is_type)) = map.next_key()? {
                    if is_type {
                        found = match map.next_value::<MaybeString>()? {
                            MaybeString(Some(s)) => s,
                            MaybeString(None) => String::new(),
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ItemType(found))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ItemType, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ItemType(String::new()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ItemType, E> {
                Ok(ItemType(String::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ItemType, E> {
                Ok(ItemType(String::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ItemType, E> {
                Ok(ItemType(String::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ItemType, E> {
                Ok(ItemType(String::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<ItemType, E> {
                Ok(ItemType(String::new()))
            }
            fn visit_unit<E>(self) -> Result<ItemType, E> {
                Ok(ItemType(String::new()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Whether an object key is `messageType`, read without allocating.
struct IsMessageType(bool);

impl<'de> Deserialize<'de> for IsMessageType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IsMessageType;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<IsMessageType, E> {
                Ok(IsMessageType(key == "messageType"))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A string, or `None` for any other JSON value.
struct MaybeString(Option<String>);

impl<'de> Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => MaybeString(Some(s)),
            _ => MaybeString(None),
        })
    }
}

/// An RFC 3339 time, or none for null, "" and Go's zero time (`0001-01-01…`). Read through a
/// visitor so the string is parsed where it lies: deserializing a `Cow<str>` allocates a
/// `String` every time (12 of ~260 allocations per job, measured 2026-12-04).
fn optional_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    d.deserialize_option(OptionalTime)
}

struct OptionalTime;

impl<'de> serde::de::Visitor<'de> for OptionalTime {
    type Value = Option<OffsetDateTime>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 time or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if s.is_empty() || s.starts_with("0001-01-01") {
            return Ok(None);
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Some)
            .map_err(|e| E::custom(format!("invalid RFC 3339 time {s:?}: {e}")))
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Job ids are strings on the wire; accept a bare number as well.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(serde::de::Error::custom(format!(
            "jobId must be a string, got {other}"
        ))),
    }
}

mod fast;
#[cfg(test)]
mod tests;
