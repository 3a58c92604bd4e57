//! Deterministic trace and span ids, so the listener's spans join the job span that the
//! workflow tool emits for the same job without any coordination.

use std::fmt;
use std::str::FromStr;

use github_client::JobCommon;
use md5::Md5;
use opentelemetry::trace::{SpanId, TraceId};
use sha2::{Digest, Sha256};

use crate::RecorderError;

pub const SPAN_QUEUE: &str = "runner.queue";
pub const SPAN_STARTUP: &str = "runner.startup";
pub const SPAN_EXECUTION: &str = "runner.execution";

/// The attempt used when the run's attempt is unknown (the schemes' "unknown attempt"):
/// job messages do not carry it, and a lookup may fail or be off.
pub const UNKNOWN_ATTEMPT: u32 = 1;

/// How trace, parent and span ids are derived from a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum IdScheme {
    /// MD5 based, the seed's scheme (and otel-explorer's): trace = MD5("{run}-{attempt}"),
    /// parent = big-endian job id (or MD5 of a non-numeric id), span =
    /// MD5("{span name}-{parent hex}")[..8].
    #[default]
    OtelExplorer,
    /// SHA-256 based, the actions/runner contract: trace = SHA-256("{run}-{attempt}")[..16],
    /// parent = SHA-256("job-{run}-{attempt}-{job display name}")[..8], span as above
    /// with SHA-256.
    RunnerContract,
}

impl IdScheme {
    pub const ACCEPTED: [&'static str; 2] = ["otel-explorer", "runner-contract"];

    pub fn as_str(self) -> &'static str {
        match self {
            IdScheme::OtelExplorer => "otel-explorer",
            IdScheme::RunnerContract => "runner-contract",
        }
    }
}

impl fmt::Display for IdScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IdScheme {
    type Err = RecorderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "otel-explorer" => Ok(IdScheme::OtelExplorer),
            "runner-contract" => Ok(IdScheme::RunnerContract),
            other => Err(RecorderError::OtelSetting {
                name: "otel_id_scheme".into(),
                reason: format!(
                    "unknown id scheme {other:?}; accepted: {}",
                    Self::ACCEPTED.join(", ")
                ),
            }),
        }
    }
}

/// The ids of one of a job's spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSpanIds {
    pub trace_id: TraceId,
    /// The job's span (emitted by the workflow tool, not by this listener).
    pub parent_span_id: SpanId,
    pub span_id: SpanId,
}

/// The trace id of attempt `attempt` of run `run_id` under `scheme`. Pure.
pub fn run_trace_id(scheme: IdScheme, run_id: i64, attempt: u32) -> TraceId {
    let trace_key = format!("{run_id}-{attempt}");
    TraceId::from_bytes(match scheme {
        IdScheme::OtelExplorer => first::<16>(&Md5::digest(trace_key.as_bytes())),
        IdScheme::RunnerContract => first::<16>(&Sha256::digest(trace_key.as_bytes())),
    })
}

/// Ids of the span `span_name` of `job`, in attempt `attempt` of its run, under `scheme`.
/// Pure.
pub fn job_span_ids(
    scheme: IdScheme,
    job: &JobCommon,
    attempt: u32,
    span_name: &str,
) -> JobSpanIds {
    let (trace_id, parent_span_id) = job_trace_and_parent(scheme, job, attempt);
    JobSpanIds {
        trace_id,
        parent_span_id,
        span_id: child_span_id(scheme, parent_span_id, span_name),
    }
}

/// The trace id and the job span's id (the parent of this listener's spans) of `job` in
/// attempt `attempt`: the same for the job's three spans, so computed once per job.
pub(super) fn job_trace_and_parent(
    scheme: IdScheme,
    job: &JobCommon,
    attempt: u32,
) -> (TraceId, SpanId) {
    let run = job.workflow_run_id;
    let parent = match scheme {
        IdScheme::OtelExplorer => match numeric_job_id(&job.job_id) {
            Some(id) => id.to_be_bytes(),
            None => first::<8>(&Md5::digest(job.job_id.as_bytes())),
        },
        IdScheme::RunnerContract => {
            let job_key = format!("job-{run}-{attempt}-{}", job.job_display_name);
            first::<8>(&Sha256::digest(job_key.as_bytes()))
        }
    };
    (
        run_trace_id(scheme, run, attempt),
        SpanId::from_bytes(parent),
    )
}

/// The id of the span `span_name` under the job span `parent`.
pub(super) fn child_span_id(scheme: IdScheme, parent: SpanId, span_name: &str) -> SpanId {
    let span_key = format!("{span_name}-{parent}");
    SpanId::from_bytes(match scheme {
        IdScheme::OtelExplorer => first::<8>(&Md5::digest(span_key.as_bytes())),
        IdScheme::RunnerContract => first::<8>(&Sha256::digest(span_key.as_bytes())),
    })
}

/// A job id made only of decimal digits that fits in 64 bits.
fn numeric_job_id(job_id: &str) -> Option<u64> {
    if job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    job_id.parse().ok()
}

fn first<const N: usize>(digest: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    // Both digests are at least 16 bytes long and N is 8 or 16.
    out.copy_from_slice(&digest[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(run: i64, job_id: &str, display: &str) -> JobCommon {
        JobCommon {
            workflow_run_id: run,
            job_id: job_id.into(),
            job_display_name: display.into(),
            ..Default::default()
        }
    }

    fn hex(ids: JobSpanIds) -> (String, String, String) {
        (
            ids.trace_id.to_string(),
            ids.parent_span_id.to_string(),
            ids.span_id.to_string(),
        )
    }

    /// `j`'s ids at attempt 1 under `scheme`: one trace and parent id for every span, and
    /// the queue, startup and execution spans' own ids `spans`.
    fn assert_span_ids(
        scheme: IdScheme,
        j: &JobCommon,
        [trace, parent]: [&str; 2],
        spans: [&str; 3],
    ) {
        for (name, span) in [SPAN_QUEUE, SPAN_STARTUP, SPAN_EXECUTION]
            .into_iter()
            .zip(spans)
        {
            assert_eq!(
                hex(job_span_ids(scheme, j, 1, name)),
                (trace.into(), parent.into(), span.into()),
                "{scheme} {name}"
            );
        }
    }

    // Vectors computed independently with Python's hashlib:
    //   md5 = lambda s: hashlib.md5(s.encode()).digest()
    //   sha = lambda s: hashlib.sha256(s.encode()).digest()
    #[test]
    fn vectors_of_both_schemes() {
        //   md5("12345-1").hex()                                  -> trace
        //   struct.pack(">Q", 67890).hex()                          -> parent
        //   md5(f"{name}-{parent}")[:8].hex()                       -> span
        let j = job(12345, "67890", "build");
        let trace_and_parent = ["3d7e2f2ea4fca7a337339f10a2f0954e", "0000000000010932"];
        let spans = ["5c1be415b6ce8e25", "62998a876fc48b02", "49d99fe729823661"];
        assert_span_ids(IdScheme::OtelExplorer, &j, trace_and_parent, spans);
        //   sha("12345-1")[:16].hex()                               -> trace
        //   sha("job-12345-1-build (ubuntu)")[:8].hex()             -> parent
        //   sha(f"{name}-{parent}")[:8].hex()                       -> span
        let j = job(12345, "67890", "build (ubuntu)");
        let trace_and_parent = ["cca151305227813e8d3a799c005652b7", "d30111fb901efe72"];
        let spans = ["085b2f2bf1614550", "6e989ca1092444b7", "3e8401baaf571a28"];
        assert_span_ids(IdScheme::RunnerContract, &j, trace_and_parent, spans);
    }

    //   md5("abc")[:8].hex(); md5("job-uuid-x")[:8].hex()       -> non-numeric parents
    #[test]
    fn otel_explorer_vectors_of_non_numeric_job_ids() {
        let ids = job_span_ids(
            IdScheme::OtelExplorer,
            &job(12345, "abc", ""),
            1,
            SPAN_QUEUE,
        );
        assert_eq!(ids.parent_span_id.to_string(), "900150983cd24fb0");
        let ids = job_span_ids(
            IdScheme::OtelExplorer,
            &job(12345, "job-uuid-x", ""),
            1,
            SPAN_QUEUE,
        );
        assert_eq!(ids.parent_span_id.to_string(), "07a39ddf4b1c6c7e");
        assert_eq!(ids.span_id.to_string(), "482dddac36f574d8");
        // "+5" is not a decimal integer id.
        let plus = job_span_ids(IdScheme::OtelExplorer, &job(1, "+5", ""), 1, SPAN_QUEUE);
        assert_ne!(plus.parent_span_id.to_string(), "0000000000000005");
    }

    //   md5("12345-3").hex(); sha("12345-3")[:16].hex(); sha("job-12345-3-build (ubuntu)")[:8].hex()
    #[test]
    fn the_attempt_is_in_both_schemes() {
        let j = job(12345, "67890", "build (ubuntu)");
        let md5 = job_span_ids(IdScheme::OtelExplorer, &j, 3, SPAN_QUEUE);
        assert_eq!(
            md5.trace_id.to_string(),
            hex_of(&Md5::digest(b"12345-3")[..16])
        );
        assert_eq!(md5.parent_span_id.to_string(), "0000000000010932");
        let sha = job_span_ids(IdScheme::RunnerContract, &j, 3, SPAN_QUEUE);
        assert_eq!(
            sha.trace_id.to_string(),
            hex_of(&Sha256::digest(b"12345-3")[..16])
        );
        assert_eq!(
            sha.parent_span_id.to_string(),
            hex_of(&Sha256::digest(b"job-12345-3-build (ubuntu)")[..8])
        );
        assert_eq!(
            run_trace_id(IdScheme::RunnerContract, 12345, 3),
            sha.trace_id
        );
        assert_ne!(
            job_span_ids(IdScheme::RunnerContract, &j, 1, SPAN_QUEUE).trace_id,
            sha.trace_id
        );
    }

    fn hex_of(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    #[test]
    fn scheme_names() {
        assert_eq!(
            "otel-explorer".parse::<IdScheme>().unwrap(),
            IdScheme::OtelExplorer
        );
        assert_eq!(
            " runner-contract ".parse::<IdScheme>().unwrap(),
            IdScheme::RunnerContract
        );
        let err = "md5".parse::<IdScheme>().unwrap_err().to_string();
        assert!(err.contains("\"md5\""), "{err}");
        assert!(err.contains("otel-explorer, runner-contract"), "{err}");
        assert_eq!(IdScheme::default().to_string(), "otel-explorer");
    }
}
