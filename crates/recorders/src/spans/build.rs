//! Span building: a completed job's queue, startup and execution phases as encoded OTLP
//! spans ([`super::encode`]), with ids from [`super::ids`] and the GitHub and CI/CD semantic-convention
//! attributes. Pure: no I/O, no clock.

use github_client::JobCompleted;
use time::OffsetDateTime;

use super::encode::AttrValue::{Int, Str};
use super::encode::{SpanFields, put_span, put_span_attribute};
use super::ids::{
    IdScheme, SPAN_EXECUTION, SPAN_QUEUE, SPAN_STARTUP, child_span_id, job_trace_and_parent,
};
use crate::labels::parse_workflow_ref;

/// The CI/CD semantic-convention value of a job result, None when there is none.
pub fn map_job_result(result: &str) -> Option<&'static str> {
    let lower = result.trim().to_ascii_lowercase();
    Some(match lower.as_str() {
        "" => return None,
        "succeeded" | "success" | "succeededwithissues" => "success",
        "failed" | "failure" => "failure",
        "canceled" | "cancelled" => "cancellation",
        "skipped" => "skip",
        "timedout" | "timed_out" | "timeout" => "timeout",
        _ => "error",
    })
}

/// Spans encoded for export: `ScopeSpans.spans` entries, and how many.
#[derive(Default)]
pub(super) struct SpanBatch {
    pub(super) encoded: Vec<u8>,
    pub(super) count: usize,
}

impl SpanBatch {
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Turns completed jobs into encoded spans.
pub(super) struct SpanBuilder {
    pub(super) scheme: IdScheme,
    /// Web URL of the GitHub server, without a trailing slash.
    server_url: String,
}

/// Buffers [`SpanBuilder::write_job`] reuses from job to job.
#[derive(Default)]
pub(super) struct Scratch {
    shared: Vec<u8>,
    span: Vec<u8>,
}

/// The instrumentation scope of the spans.
pub(super) const SCOPE_NAME: &str = "gha-listener";
pub(super) const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn unix_nanos(t: OffsetDateTime) -> u64 {
    // Job times are after 1970; an earlier one is clamped to 0.
    u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)
}

impl SpanBuilder {
    pub(super) fn new(scheme: IdScheme, server_url: &str) -> Self {
        Self {
            scheme,
            server_url: server_url.trim_end_matches('/').to_owned(),
        }
    }

    /// How many spans [`Self::write_job`] gives for `job` (the attempt changes only ids).
    pub(super) fn span_count(job: &JobCompleted) -> usize {
        Self::phases(job)
            .iter()
            .filter(|(_, start, end)| start.is_some() && end.is_some())
            .count()
    }

    fn phases(
        job: &JobCompleted,
    ) -> [(&'static str, Option<OffsetDateTime>, Option<OffsetDateTime>); 3] {
        let c = &job.common;
        [
            (SPAN_QUEUE, c.queue_time, c.scale_set_assign_time),
            (SPAN_STARTUP, c.scale_set_assign_time, c.runner_assign_time),
            (SPAN_EXECUTION, c.runner_assign_time, c.finish_time),
        ]
    }

    /// Appends the spans of a completed job in attempt `attempt` of its run to `batch`;
    /// each only when both of its times are set.
    pub(super) fn write_job(
        &self,
        job: &JobCompleted,
        attempt: u32,
        batch: &mut SpanBatch,
        scratch: &mut Scratch,
    ) {
        let phases = Self::phases(job);
        if phases.iter().all(|(_, s, e)| s.is_none() || e.is_none()) {
            return;
        }
        let (trace_id, parent) = job_trace_and_parent(self.scheme, &job.common, attempt);
        scratch.shared.clear();
        self.write_shared_attributes(job, attempt, &mut scratch.shared);
        let result = map_job_result(&job.result);
        for (name, start, end) in phases {
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            let execution = name == SPAN_EXECUTION;
            let failed = execution && matches!(result, Some("failure" | "timeout" | "error"));
            let fields = SpanFields {
                trace_id: trace_id.to_bytes(),
                span_id: child_span_id(self.scheme, parent, name).to_bytes(),
                parent_span_id: parent.to_bytes(),
                name,
                start_unix_nanos: unix_nanos(start),
                end_unix_nanos: unix_nanos(end),
                error: failed.then_some(job.result.as_str()),
            };
            put_span(
                &mut batch.encoded,
                &mut scratch.span,
                &fields,
                &scratch.shared,
                |buf| {
                    put_span_attribute(buf, "type", Str(name));
                    if execution {
                        put_span_attribute(buf, "github.conclusion", Str(&job.result));
                        if let Some(result) = result {
                            put_span_attribute(buf, "cicd.pipeline.task.run.result", Str(result));
                        }
                    }
                },
            );
            batch.count += 1;
        }
    }

    /// The GitHub and CI/CD semantic-convention attributes all of a job's spans carry.
    fn write_shared_attributes(&self, job: &JobCompleted, attempt: u32, buf: &mut Vec<u8>) {
        let c = &job.common;
        let repository = format!("{}/{}", c.owner_name, c.repository_name);
        let workflow = parse_workflow_ref(&c.job_workflow_ref);
        let run_id = c.workflow_run_id.to_string();
        let runner_id = job.runner_id.to_string();
        let repository_url = format!("{}/{repository}", self.server_url);
        let run_url = format!(
            "{repository_url}/actions/runs/{}/attempts/{attempt}",
            c.workflow_run_id
        );
        let attributes = [
            ("github.run_id", Int(c.workflow_run_id)),
            ("github.run_attempt", Int(i64::from(attempt))),
            ("github.job_id", Str(&c.job_id)),
            ("github.job_name", Str(&c.job_display_name)),
            ("github.repository", Str(&repository)),
            ("github.runner_name", Str(&job.runner_name)),
            ("github.runner_id", Int(job.runner_id)),
            ("github.workflow_ref", Str(&c.job_workflow_ref)),
            ("github.event_name", Str(&c.event_name)),
            ("github.runner_request_id", Int(c.runner_request_id)),
            ("cicd.pipeline.run.id", Str(&run_id)),
            ("cicd.pipeline.task.name", Str(&c.job_display_name)),
            ("cicd.pipeline.task.run.id", Str(&c.job_id)),
            ("cicd.worker.name", Str(&job.runner_name)),
            ("cicd.worker.id", Str(&runner_id)),
            ("vcs.repository.url.full", Str(&repository_url)),
            ("cicd.pipeline.run.url.full", Str(&run_url)),
        ];
        for (key, value) in attributes {
            put_span_attribute(buf, key, value);
        }
        if !workflow.name.is_empty() {
            put_span_attribute(buf, "cicd.pipeline.name", Str(workflow.name));
        }
        let head = workflow
            .target
            .strip_prefix("heads/")
            .map(|b| (b, "branch"))
            .or_else(|| workflow.target.strip_prefix("tags/").map(|t| (t, "tag")));
        if let Some((name, kind)) = head {
            put_span_attribute(buf, "vcs.ref.head.name", Str(name));
            put_span_attribute(buf, "vcs.ref.head.type", Str(kind));
        }
    }
}
