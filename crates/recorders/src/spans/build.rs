//! Span building: a completed job's queue, startup and execution phases as OTel span
//! data, with ids from [`super::ids`] and the GitHub and CI/CD semantic-convention
//! attributes. Pure: no I/O, no clock.

use std::borrow::Cow;
use std::time::SystemTime;

use github_client::JobCompleted;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::ids::{IdScheme, SPAN_EXECUTION, SPAN_QUEUE, SPAN_STARTUP, job_span_ids};
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

/// Turns completed jobs into spans.
pub(super) struct SpanBuilder {
    pub(super) scheme: IdScheme,
    /// Web URL of the GitHub server, without a trailing slash.
    server_url: String,
    scope: InstrumentationScope,
}

impl SpanBuilder {
    pub(super) fn new(scheme: IdScheme, server_url: &str) -> Self {
        Self {
            scheme,
            server_url: server_url.trim_end_matches('/').to_owned(),
            scope: InstrumentationScope::builder("gha-listener")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// How many spans [`Self::job_spans`] gives for `job` (the attempt changes only ids).
    pub(super) fn span_count(job: &JobCompleted) -> u64 {
        let c = &job.common;
        [
            (c.queue_time, c.scale_set_assign_time),
            (c.scale_set_assign_time, c.runner_assign_time),
            (c.runner_assign_time, c.finish_time),
        ]
        .iter()
        .filter(|(start, end)| start.is_some() && end.is_some())
        .count() as u64
    }

    /// The spans of a completed job in attempt `attempt` of its run; each only when both
    /// of its times are set.
    pub(super) fn job_spans(&self, job: &JobCompleted, attempt: u32) -> Vec<SpanData> {
        let c = &job.common;
        let phases = [
            (SPAN_QUEUE, c.queue_time, c.scale_set_assign_time),
            (SPAN_STARTUP, c.scale_set_assign_time, c.runner_assign_time),
            (SPAN_EXECUTION, c.runner_assign_time, c.finish_time),
        ];
        let mut spans = Vec::new();
        let mut common: Option<Vec<KeyValue>> = None;
        for (name, start, end) in phases {
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            let common = common.get_or_insert_with(|| self.common_attributes(job, attempt));
            let ids = job_span_ids(self.scheme, c, attempt, name);
            let mut attributes = common.clone();
            attributes.push(KeyValue::new("type", name));
            let mut status = Status::Unset;
            if name == SPAN_EXECUTION {
                attributes.push(KeyValue::new("github.conclusion", job.result.clone()));
                if let Some(result) = map_job_result(&job.result) {
                    attributes.push(KeyValue::new("cicd.pipeline.task.run.result", result));
                    if matches!(result, "failure" | "timeout" | "error") {
                        status = Status::error(job.result.clone());
                    }
                }
            }
            spans.push(SpanData {
                span_context: SpanContext::new(
                    ids.trace_id,
                    ids.span_id,
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: ids.parent_span_id,
                parent_span_is_remote: true,
                span_kind: SpanKind::Internal,
                name: Cow::Borrowed(name),
                start_time: SystemTime::from(start),
                end_time: SystemTime::from(end),
                attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status,
                instrumentation_scope: self.scope.clone(),
            });
        }
        spans
    }

    fn common_attributes(&self, job: &JobCompleted, attempt: u32) -> Vec<KeyValue> {
        let c = &job.common;
        let repository = format!("{}/{}", c.owner_name, c.repository_name);
        let workflow = parse_workflow_ref(&c.job_workflow_ref);
        let mut attributes = vec![
            KeyValue::new("github.run_id", c.workflow_run_id),
            KeyValue::new("github.run_attempt", i64::from(attempt)),
            KeyValue::new("github.job_id", c.job_id.clone()),
            KeyValue::new("github.job_name", c.job_display_name.clone()),
            KeyValue::new("github.repository", repository.clone()),
            KeyValue::new("github.runner_name", job.runner_name.clone()),
            KeyValue::new("github.runner_id", job.runner_id),
            KeyValue::new("github.workflow_ref", c.job_workflow_ref.clone()),
            KeyValue::new("github.event_name", c.event_name.clone()),
            KeyValue::new("github.runner_request_id", c.runner_request_id),
            KeyValue::new("cicd.pipeline.run.id", c.workflow_run_id.to_string()),
            KeyValue::new("cicd.pipeline.task.name", c.job_display_name.clone()),
            KeyValue::new("cicd.pipeline.task.run.id", c.job_id.clone()),
            KeyValue::new("cicd.worker.name", job.runner_name.clone()),
            KeyValue::new("cicd.worker.id", job.runner_id.to_string()),
            KeyValue::new(
                "vcs.repository.url.full",
                format!("{}/{repository}", self.server_url),
            ),
            KeyValue::new(
                "cicd.pipeline.run.url.full",
                format!(
                    "{}/{repository}/actions/runs/{}/attempts/{attempt}",
                    self.server_url, c.workflow_run_id
                ),
            ),
        ];
        if !workflow.name.is_empty() {
            attributes.push(KeyValue::new("cicd.pipeline.name", workflow.name));
        }
        let head = workflow
            .target
            .strip_prefix("heads/")
            .map(|b| (b, "branch"))
            .or_else(|| workflow.target.strip_prefix("tags/").map(|t| (t, "tag")));
        if let Some((name, kind)) = head {
            attributes.push(KeyValue::new("vcs.ref.head.name", name.to_owned()));
            attributes.push(KeyValue::new("vcs.ref.head.type", kind));
        }
        attributes
    }
}
