//! The parser's fast path: a queue message's body in one scan, where the reference path
//! takes four (the body split into items; per item its `messageType`, its type's own
//! fields, its [`JobCommon`]).
//!
//! Each function here returns `None` for any input it might read differently from the
//! reference path, which then reads it (and words every error): the fast path never
//! succeeds with a result the reference path would not give. The property tests in
//! `messages/tests.rs` check that on generated items and messages.

use std::borrow::Cow;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

use super::{
    JobAssigned, JobAvailable, JobCommon, JobCompleted, JobMessage, JobStarted, null_as_default,
    optional_time,
};

/// A body's jobs and count of skipped items, read in one scan: `None` unless it is an
/// array whose every item [`decode_item`] reads (then the caller reads the body item by
/// item, each through [`decode_item`] or the reference). Saves the separate scan that
/// splits the body into items: 19.1k -> 13.0k instructions per job for the body.
pub(super) fn decode_body(body: &str) -> Option<(Vec<JobMessage>, usize)> {
    struct Items(Vec<JobMessage>, usize);
    impl<'de> Deserialize<'de> for Items {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_seq(ItemsVisitor)
        }
    }
    struct ItemsVisitor;
    impl<'de> Visitor<'de> for ItemsVisitor {
        type Value = Items;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of job messages")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
            let mut items = Items(Vec::new(), 0);
            while let Some(any) = seq.next_element_seed(ObjectOnly)? {
                match any.into_job() {
                    Some(job) => items.0.push(job),
                    None => items.1 += 1,
                }
            }
            Ok(items)
        }
    }
    let Items(jobs, skipped) = serde_json::from_str(body).ok()?;
    Some((jobs, skipped))
}

/// One job message in a single scan: `Some` of what [`super::decode_item`] gives when
/// this is sure to be the same, `None` to leave the item to it.
///
/// Sure means: the item is an object ([`ObjectOnly`]), no key appears twice (serde's
/// derive turns down a duplicate field, which covers a second `messageType`, where the
/// reference takes the last), and every field the item has of any job type has the JSON
/// type that field's deserializer wants. Every field is read by the same deserializer as
/// in [`JobCommon`] and the job types, except `jobId` (see [`job_id`]), so a job type's
/// fields are accepted here exactly when the reference accepts them.
pub(super) fn decode_item(item: &str) -> Option<Option<JobMessage>> {
    let mut de = serde_json::Deserializer::from_str(item);
    let any = ObjectOnly.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(any.into_job())
}

/// [`AnyJob`] from a JSON object only: serde's derive would also read an array, by
/// position, which the reference skips as an item without a `messageType`.
struct ObjectOnly;

impl<'de> DeserializeSeed<'de> for ObjectOnly {
    type Value = AnyJob<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnyJob<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = AnyJob<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a job message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnyJob<'de>, A::Error> {
        AnyJob::deserialize(MapAccessDeserializer::new(map))
    }
}

/// Every field of every job type. The `messageType` and the fields only some job types
/// keep are borrowed from the text where they have no escapes, so a field a job type
/// drops costs no allocation.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AnyJob<'a> {
    #[serde(borrow)]
    message_type: Cow<'a, str>,
    runner_request_id: i64,
    repository_name: String,
    owner_name: String,
    #[serde(deserialize_with = "job_id")]
    job_id: String,
    job_workflow_ref: String,
    job_display_name: String,
    workflow_run_id: i64,
    event_name: String,
    #[serde(deserialize_with = "null_as_default")]
    request_labels: Vec<String>,
    #[serde(deserialize_with = "optional_time")]
    queue_time: Option<OffsetDateTime>,
    #[serde(deserialize_with = "optional_time")]
    scale_set_assign_time: Option<OffsetDateTime>,
    #[serde(deserialize_with = "optional_time")]
    runner_assign_time: Option<OffsetDateTime>,
    #[serde(deserialize_with = "optional_time")]
    finish_time: Option<OffsetDateTime>,
    #[serde(borrow)]
    acquire_job_url: Cow<'a, str>,
    runner_id: i64,
    #[serde(borrow)]
    runner_name: Cow<'a, str>,
    #[serde(borrow)]
    result: Cow<'a, str>,
}

impl AnyJob<'_> {
    /// The job its `messageType` names, `None` for a type this listener skips.
    fn into_job(self) -> Option<JobMessage> {
        let common = JobCommon {
            runner_request_id: self.runner_request_id,
            repository_name: self.repository_name,
            owner_name: self.owner_name,
            job_id: self.job_id,
            job_workflow_ref: self.job_workflow_ref,
            job_display_name: self.job_display_name,
            workflow_run_id: self.workflow_run_id,
            event_name: self.event_name,
            request_labels: self.request_labels,
            queue_time: self.queue_time,
            scale_set_assign_time: self.scale_set_assign_time,
            runner_assign_time: self.runner_assign_time,
            finish_time: self.finish_time,
        };
        Some(match &*self.message_type {
            "JobAvailable" => JobMessage::Available(JobAvailable {
                common,
                acquire_job_url: self.acquire_job_url.into_owned(),
            }),
            "JobAssigned" => JobMessage::Assigned(JobAssigned { common }),
            "JobStarted" => JobMessage::Started(JobStarted {
                common,
                runner_id: self.runner_id,
                runner_name: self.runner_name.into_owned(),
            }),
            "JobCompleted" => JobMessage::Completed(JobCompleted {
                common,
                result: self.result.into_owned(),
                runner_id: self.runner_id,
                runner_name: self.runner_name.into_owned(),
            }),
            _ => return None,
        })
    }
}

/// `jobId` for [`AnyJob`]: what `string_or_number` gives for null, a string or an
/// integer (an integer's `Display` is `serde_json::Number`'s), without building a
/// `serde_json::Value`. Anything else is an error, which leaves the item to the
/// reference: a fractional number (`Number` writes those its own way: `-0` is "-0.0"),
/// and the types `string_or_number` turns down.
fn job_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct JobId;
    impl Visitor<'_> for JobId {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string, an integer or null")
        }
        fn visit_unit<E>(self) -> Result<String, E> {
            Ok(String::new())
        }
        fn visit_str<E>(self, s: &str) -> Result<String, E> {
            Ok(s.to_owned())
        }
        fn visit_string<E>(self, s: String) -> Result<String, E> {
            Ok(s)
        }
        fn visit_i64<E>(self, n: i64) -> Result<String, E> {
            Ok(n.to_string())
        }
        fn visit_u64<E>(self, n: u64) -> Result<String, E> {
            Ok(n.to_string())
        }
    }
    d.deserialize_any(JobId)
}
