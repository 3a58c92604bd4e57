//! The completed job the recorders' tests record: every time set, a numeric job id, and
//! nanosecond-precise times. The unit tests in `src/spans/tests.rs` include this file too,
//! so there is one definition; a test sets on top of it the fields it is about.

use github_client::{JobCommon, JobCompleted};
use time::macros::datetime;

/// Job "67890" ("build") of run 12345 in acme/widgets, pushed to main, finished with
/// `result` on runner 42 ("arc-runner-x").
pub fn completed(result: &str) -> JobCompleted {
    JobCompleted {
        common: JobCommon {
            runner_request_id: 11,
            repository_name: "widgets".into(),
            owner_name: "acme".into(),
            job_id: "67890".into(),
            job_workflow_ref: "acme/widgets/.github/workflows/ci.yml@refs/heads/main".into(),
            job_display_name: "build".into(),
            workflow_run_id: 12345,
            event_name: "push".into(),
            request_labels: vec![],
            queue_time: Some(datetime!(2024-05-01 10:00:00.123456789 UTC)),
            scale_set_assign_time: Some(datetime!(2024-05-01 10:00:01.5 UTC)),
            runner_assign_time: Some(datetime!(2024-05-01 10:00:30 UTC)),
            finish_time: Some(datetime!(2024-05-01 10:05:00.000000001 UTC)),
        },
        result: result.into(),
        runner_id: 42,
        runner_name: "arc-runner-x".into(),
    }
}
