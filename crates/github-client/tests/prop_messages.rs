//! Property tests of the queue-message parser (`parse_queue_message`): no input panics it,
//! well-formed batches come out whole and in order, and a malformed job message is reported
//! with its message id and index (the listener acks and skips such a poison message).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use github_client::messages::{JobMessage, MessageParseError, parse_queue_message};
use proptest::prelude::*;
use serde_json::{Value, json};

fn any_json() -> impl Strategy<Value = Value> {
    // The envelope's and the job messages' keys, so objects often look almost right.
    let keys = prop_oneof![
        Just("messageId".to_owned()),
        Just("messageType".to_owned()),
        Just("body".to_owned()),
        Just("statistics".to_owned()),
        Just("runnerRequestId".to_owned()),
        Just("queueTime".to_owned()),
        Just("jobId".to_owned()),
        ".{0,10}"
    ];
    simulator::strategies::any_json(keys.boxed())
}

const TYPES: &[&str] = &[
    "JobAvailable",
    "JobAssigned",
    "JobStarted",
    "JobCompleted",
    "JobCancelled",
    "",
];

/// A job message of `kind` with request id `id` and plausible fields.
fn job(kind: &str, id: i64, job_id: &Value, time: &str) -> Value {
    json!({
        "messageType": kind,
        "runnerRequestId": id,
        "repositoryName": "repo",
        "ownerName": "owner",
        "jobId": job_id,
        "jobWorkflowRef": "owner/repo/.github/workflows/ci.yml@refs/heads/main",
        "jobDisplayName": "build",
        "workflowRunId": id * 3,
        "eventName": "push",
        "requestLabels": ["self-hosted"],
        "queueTime": time,
        "scaleSetAssignTime": "0001-01-01T00:00:00Z",
        "runnerAssignTime": null,
        "finishTime": "",
        "acquireJobUrl": "https://example/acquire",
        "runnerId": 5,
        "runnerName": "runner-5",
        "result": "succeeded",
    })
}

fn envelope(id: i64, message_type: &str, body: &str) -> Vec<u8> {
    json!({
        "messageId": id,
        "messageType": message_type,
        "body": body,
        "statistics": {"totalAssignedJobs": 2, "totalAvailableJobs": 1},
    })
    .to_string()
    .into_bytes()
}

proptest! {
    #![proptest_config(simulator::strategies::seeded(256))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Err(e) = parse_queue_message(&raw) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json(), as_body in any::<bool>()) {
        let raw = if as_body {
            // The value as the (string) body of a job-messages envelope.
            envelope(1, "RunnerScaleSetJobMessages", &value.to_string())
        } else {
            value.to_string().into_bytes()
        };
        if let Err(e) = parse_queue_message(&raw) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn well_formed_batches_come_out_whole_and_in_order(
        id in 1i64..i64::MAX,
        kinds in prop::collection::vec(prop::sample::select(TYPES), 0..50),
        numeric_job_id in any::<bool>(),
        bom_envelope in any::<bool>(),
        bom_body in any::<bool>(),
    ) {
        let items: Vec<Value> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                let job_id = if numeric_job_id { json!(i) } else { json!(format!("job-{i}")) };
                job(kind, i as i64 + 1, &job_id, "2024-05-01T10:00:00.123Z")
            })
            .collect();
        let mut body = Value::from(items).to_string();
        if bom_body {
            body.insert(0, '\u{feff}');
        }
        let mut raw = envelope(id, "RunnerScaleSetJobMessages", &body);
        if bom_envelope {
            raw.splice(0..0, "\u{feff}".bytes());
        }
        let message = parse_queue_message(&raw).expect("well-formed");
        prop_assert_eq!(message.message_id, id);
        prop_assert_eq!(message.jobs.len() + message.skipped_jobs, kinds.len());
        let expected: Vec<i64> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| matches!(**k, "JobAvailable" | "JobAssigned" | "JobStarted" | "JobCompleted"))
            .map(|(i, _)| i as i64 + 1)
            .collect();
        let got: Vec<i64> = message.jobs.iter().map(|j| j.common().runner_request_id).collect();
        prop_assert_eq!(got, expected);
        for j in &message.jobs {
            prop_assert!(j.common().queue_time.is_some());
            prop_assert!(j.common().scale_set_assign_time.is_none(), "0001-01-01 means unset");
            if let JobMessage::Started(s) = j {
                prop_assert_eq!(s.runner_name.as_str(), "runner-5");
            }
        }
        prop_assert_eq!(message.statistics.map(|s| s.total_assigned_jobs), Some(2));
    }

    #[test]
    fn a_malformed_job_message_names_the_message_and_its_index(
        id in 1i64..1_000_000,
        before in 0usize..10,
        kind in prop::sample::select(&TYPES[..4]),
        corruption in 0usize..4,
    ) {
        let mut items: Vec<Value> = (0..before)
            .map(|i| job("JobAssigned", i as i64, &json!("ok"), "2024-05-01T10:00:00Z"))
            .collect();
        let mut bad = job(kind, 99, &json!("bad"), "2024-05-01T10:00:00Z");
        match corruption {
            0 => bad["runnerRequestId"] = json!("ninety-nine"),
            1 => bad["queueTime"] = json!("yesterday"),
            2 => bad["jobId"] = json!({"nested": true}),
            _ => bad["workflowRunId"] = json!(1.5),
        }
        items.push(bad);
        let raw = envelope(id, "RunnerScaleSetJobMessages", &Value::from(items).to_string());
        match parse_queue_message(&raw) {
            Err(MessageParseError::Job { message_id, index, message_type, .. }) => {
                prop_assert_eq!(message_id, id);
                prop_assert_eq!(index, before);
                prop_assert_eq!(message_type.as_str(), kind);
            }
            other => prop_assert!(false, "expected a job error, got {other:?}"),
        }
    }

    #[test]
    fn a_body_that_is_not_an_array_names_the_message(id in 1i64..1_000_000, body in prop_oneof![
        Just("{}".to_owned()),
        Just("42".to_owned()),
        Just("[1, 2]".to_owned()),
        "[a-z{}\\[\\]\":,]{1,30}",
    ]) {
        let raw = envelope(id, "RunnerScaleSetJobMessages", &body);
        match parse_queue_message(&raw) {
            Ok(m) => prop_assert_eq!(m.jobs.len(), 0, "{}", body),
            Err(MessageParseError::Body { message_id, .. } | MessageParseError::Job { message_id, .. }) => {
                prop_assert_eq!(message_id, id)
            }
            Err(e) => prop_assert!(false, "{}: {}", body, e),
        }
    }

    #[test]
    fn other_message_types_are_passed_through_unparsed(kind in "[A-Za-z]{1,20}", body in ".{0,50}") {
        prop_assume!(kind != "RunnerScaleSetJobMessages");
        let message = parse_queue_message(&envelope(3, &kind, &body)).expect("passed through");
        prop_assert!(message.jobs.is_empty());
        prop_assert_eq!(message.message_type, kind);
    }
}

/// The largest batch the service sends (50 job messages) with long fields parses.
#[test]
fn a_full_batch_with_long_fields_parses() {
    let long = "x".repeat(10_000);
    let items: Vec<Value> = (0..50)
        .map(|i| {
            let mut j = job("JobCompleted", i, &json!(long), "2024-05-01T10:00:00Z");
            j["jobDisplayName"] = json!(long);
            j
        })
        .collect();
    let raw = envelope(
        9,
        "RunnerScaleSetJobMessages",
        &Value::from(items).to_string(),
    );
    assert!(raw.len() > 1_000_000);
    assert_eq!(parse_queue_message(&raw).unwrap().jobs.len(), 50);
}
