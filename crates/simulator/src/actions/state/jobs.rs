//! The job model and the message queue: job transitions append pre-serialised job
//! messages, which are batched into queue messages and redelivered until acknowledged.

use serde::Serialize;
use time::OffsetDateTime;

use super::{State, UNSET_TIME, random_uuid, rfc3339};
use crate::actions::{FakeJob, FakeStatistics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobState {
    Available,
    Acquired,
    Running,
}

pub(super) struct Job {
    fields: FakeJob,
    job_id: String,
    state: JobState,
    queue_time: OffsetDateTime,
    scale_set_assign_time: Option<OffsetDateTime>,
    runner_assign_time: Option<OffsetDateTime>,
    runner_id: i64,
    runner_name: String,
}

/// A job message as the service sends it (camelCase, every common field present).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobMessageWire<'a> {
    message_type: &'a str,
    runner_request_id: i64,
    repository_name: &'a str,
    owner_name: &'a str,
    job_id: &'a str,
    job_workflow_ref: &'a str,
    job_display_name: &'a str,
    workflow_run_id: i64,
    event_name: &'a str,
    request_labels: &'a [String],
    queue_time: String,
    scale_set_assign_time: String,
    runner_assign_time: String,
    finish_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquire_job_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runner_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runner_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
}

pub(super) enum QueueItem {
    /// One serialised job message, batched with its neighbours.
    Job(String),
    /// A message of its own, delivered verbatim.
    Raw { message_type: String, body: String },
}

pub(super) struct InFlight {
    id: i64,
    message_type: String,
    body: String,
    deliveries: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueMessageWire<'a> {
    message_id: i64,
    message_type: &'a str,
    body: &'a str,
    statistics: FakeStatistics,
}

impl State {
    // ---- job model ----------------------------------------------------------------------

    pub(crate) fn queue_job(&mut self, fields: FakeJob) -> i64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        let mut fields = fields;
        if fields.workflow_run_id == 0 {
            fields.workflow_run_id = self.next_run_id;
            self.next_run_id += 1;
        }
        let job_id = fields.job_id.clone().unwrap_or_else(random_uuid);
        let job = Job {
            fields,
            job_id,
            state: JobState::Available,
            queue_time: OffsetDateTime::now_utc(),
            scale_set_assign_time: None,
            runner_assign_time: None,
            runner_id: 0,
            runner_name: String::new(),
        };
        self.push_job_message(&job, id, "JobAvailable", None);
        self.jobs.insert(id, job);
        self.available += 1;
        self.stats.jobs_queued += 1;
        id
    }

    /// Acquire the available jobs among `ids`; returns those acquired now.
    pub(crate) fn acquire(&mut self, ids: &[i64]) -> Vec<i64> {
        self.stats.acquire_calls += 1;
        let mut acquired = Vec::new();
        for &id in ids {
            let Some(mut job) = self.jobs.remove(&id) else {
                continue;
            };
            if job.state == JobState::Available {
                job.state = JobState::Acquired;
                job.scale_set_assign_time = Some(OffsetDateTime::now_utc());
                self.available -= 1;
                self.acquired += 1;
                self.stats.jobs_acquired += 1;
                self.push_job_message(&job, id, "JobAssigned", None);
                acquired.push(id);
            }
            self.jobs.insert(id, job);
        }
        acquired
    }

    pub(crate) fn start_job(&mut self, id: i64, runner_name: &str) -> bool {
        let Some(mut job) = self.jobs.remove(&id) else {
            return false;
        };
        let started = job.state == JobState::Acquired;
        if started {
            job.state = JobState::Running;
            job.runner_assign_time = Some(OffsetDateTime::now_utc());
            job.runner_id = self.next_runner_id;
            self.next_runner_id += 1;
            job.runner_name = runner_name.to_owned();
            self.acquired -= 1;
            self.running += 1;
            self.stats.jobs_started += 1;
            self.push_job_message(&job, id, "JobStarted", None);
        }
        self.jobs.insert(id, job);
        started
    }

    pub(crate) fn complete_job(&mut self, id: i64, result: &str) -> bool {
        let Some(job) = self.jobs.remove(&id) else {
            return false;
        };
        match job.state {
            JobState::Available => self.available -= 1,
            JobState::Acquired => self.acquired -= 1,
            JobState::Running => self.running -= 1,
        }
        self.stats.jobs_completed += 1;
        self.push_job_message(&job, id, "JobCompleted", Some(result));
        true
    }

    pub(crate) fn enqueue_raw(&mut self, message_type: &str, body: &str) {
        self.queue.push_back(QueueItem::Raw {
            message_type: message_type.to_owned(),
            body: body.to_owned(),
        });
    }

    fn push_job_message(&mut self, job: &Job, id: i64, message_type: &str, result: Option<&str>) {
        let time = |t: Option<OffsetDateTime>| t.map_or_else(|| UNSET_TIME.to_owned(), rfc3339);
        let has_runner = matches!(message_type, "JobStarted" | "JobCompleted");
        let wire = JobMessageWire {
            message_type,
            runner_request_id: id,
            repository_name: &job.fields.repository_name,
            owner_name: &job.fields.owner_name,
            job_id: &job.job_id,
            job_workflow_ref: &job.fields.job_workflow_ref,
            job_display_name: &job.fields.job_display_name,
            workflow_run_id: job.fields.workflow_run_id,
            event_name: &job.fields.event_name,
            request_labels: &job.fields.request_labels,
            queue_time: rfc3339(job.queue_time),
            scale_set_assign_time: time(job.scale_set_assign_time),
            runner_assign_time: time(job.runner_assign_time),
            finish_time: if result.is_some() {
                rfc3339(OffsetDateTime::now_utc())
            } else {
                UNSET_TIME.to_owned()
            },
            acquire_job_url: (message_type == "JobAvailable")
                .then_some(self.acquire_job_url.as_str()),
            runner_id: has_runner.then_some(job.runner_id),
            runner_name: has_runner.then_some(job.runner_name.as_str()),
            result,
        };
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_string(&wire).unwrap_or_default();
        self.queue.push_back(QueueItem::Job(json));
    }

    // ---- message queue ------------------------------------------------------------------

    /// The message to deliver now (the unacknowledged one again, or the next batch), as the
    /// JSON response body; `None` when the queue is empty.
    pub(crate) fn deliver(&mut self) -> Option<String> {
        if self.in_flight.is_none() {
            self.in_flight = self.next_batch();
        }
        let statistics = self.statistics();
        let in_flight = self.in_flight.as_mut()?;
        in_flight.deliveries += 1;
        let redelivered = in_flight.deliveries > 1;
        let wire = QueueMessageWire {
            message_id: in_flight.id,
            message_type: &in_flight.message_type,
            body: &in_flight.body,
            statistics,
        };
        let json = serde_json::to_string(&wire).unwrap_or_default();
        self.stats.messages_delivered += 1;
        if redelivered {
            self.stats.messages_redelivered += 1;
        }
        Some(json)
    }

    fn next_batch(&mut self) -> Option<InFlight> {
        let (message_type, body) = match self.queue.pop_front()? {
            QueueItem::Raw { message_type, body } => (message_type, body),
            QueueItem::Job(first) => {
                let mut body = String::with_capacity(first.len() * 4);
                body.push('[');
                body.push_str(&first);
                let mut count = 1;
                while count < self.max_jobs_per_message
                    && matches!(self.queue.front(), Some(QueueItem::Job(_)))
                {
                    if let Some(QueueItem::Job(next)) = self.queue.pop_front() {
                        body.push(',');
                        body.push_str(&next);
                        count += 1;
                    }
                }
                body.push(']');
                ("RunnerScaleSetJobMessages".to_owned(), body)
            }
        };
        let id = self.next_message_id;
        self.next_message_id += 1;
        Some(InFlight {
            id,
            message_type,
            body,
            deliveries: 0,
        })
    }

    /// Acknowledge message `id`. True when it is the message in flight or was acknowledged
    /// before (deleting twice is harmless); false for an id never delivered.
    pub(crate) fn ack(&mut self, id: i64) -> bool {
        match &self.in_flight {
            Some(m) if m.id == id && m.deliveries > 0 => {
                self.in_flight = None;
                self.stats.messages_acked += 1;
                true
            }
            Some(m) if m.id == id => false,
            Some(m) => id > 0 && id < m.id,
            None => id > 0 && id < self.next_message_id,
        }
    }
}
