use super::*;

fn queue_message(body: &str) -> Vec<u8> {
    serde_json::json!({
        "messageId": 7,
        "messageType": JOB_MESSAGES_TYPE,
        "body": body,
        "statistics": {"totalAssignedJobs": 3, "totalRunningJobs": 1}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn parses_every_job_type_and_skips_unknown() {
    let body = serde_json::json!([
        {"messageType": "JobAvailable", "runnerRequestId": 1, "acquireJobUrl": "http://x", "jobId": "a"},
        {"messageType": "JobAssigned", "runnerRequestId": 2},
        {"messageType": "JobStarted", "runnerRequestId": 3, "runnerId": 9, "runnerName": "r-1",
         "runnerAssignTime": "2024-05-01T10:00:00.1234567Z"},
        {"messageType": "JobCompleted", "runnerRequestId": 4, "result": "succeeded",
         "finishTime": "0001-01-01T00:00:00Z"},
        {"messageType": "JobSomethingNew", "runnerRequestId": 5}
    ])
    .to_string();
    let m = parse_queue_message(&queue_message(&body)).unwrap();
    assert_eq!(m.message_id, 7);
    assert_eq!(m.statistics.unwrap().total_assigned_jobs, 3);
    assert_eq!(m.jobs.len(), 4);
    assert_eq!(m.skipped_jobs, 1);
    let JobMessage::Started(started) = &m.jobs[2] else {
        panic!("not started")
    };
    assert_eq!(started.runner_name, "r-1");
    let t = started.common.runner_assign_time.unwrap();
    assert_eq!(t.nanosecond(), 123_456_700);
    let JobMessage::Completed(done) = &m.jobs[3] else {
        panic!("not completed")
    };
    assert_eq!(done.common.finish_time, None);
}

#[test]
fn items_without_a_string_message_type_are_skipped() {
    let body = r#"[1, "x", null, [], {"messageType": 5},
        {"messageType": "JobAssigned", "messageType": "JobNew"},
        {"runnerRequestId": 2, "messageType": "JobAssigned"}]"#;
    let m = parse_queue_message(&queue_message(body)).unwrap();
    assert_eq!(m.skipped_jobs, 6);
    assert_eq!(m.jobs.len(), 1);
    assert_eq!(m.jobs[0].common().runner_request_id, 2);
}

#[test]
fn strips_bom_from_envelope_and_body() {
    let body = "\u{feff}[{\"messageType\":\"JobAssigned\",\"runnerRequestId\":2}]";
    let mut raw = "\u{feff}".as_bytes().to_vec();
    raw.extend(queue_message(body));
    let m = parse_queue_message(&raw).unwrap();
    assert_eq!(m.jobs.len(), 1);
}

#[test]
fn malformed_body_is_a_clear_error() {
    let err = parse_queue_message(&queue_message("{not json")).unwrap_err();
    assert!(
        matches!(err, MessageParseError::Body { message_id: 7, .. }),
        "{err}"
    );
    let err = parse_queue_message(&queue_message(
        "[{\"messageType\":\"JobStarted\",\"queueTime\":\"yesterday\"}]",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("JobStarted"), "{err}");
    assert!(err.to_string().contains("yesterday"), "{err}");
}

/// Items the fast path must read on its own (the point of it), and items it must leave to
/// the reference decoder because it would read them differently.
#[test]
fn fast_path_reads_well_formed_items_and_leaves_the_rest() {
    let well_formed = [
        r#"{"messageType":"JobAvailable","runnerRequestId":1,"acquireJobUrl":"http://x","jobId":"a","requestLabels":["l"],"queueTime":"2024-05-01T10:00:00.1234567Z"}"#,
        r#"{"messageType":"JobAssigned","runnerRequestId":2,"jobId":7,"requestLabels":null,"runnerAssignTime":null}"#,
        r#"{"messageType":"JobStarted","runnerId":9,"runnerName":"r-1","finishTime":"0001-01-01T00:00:00Z"}"#,
        r#"{"messageType":"JobCompleted","result":"succeeded","runnerId":9,"jobId":null,"extra":{"a":[1]}}"#,
        r#"{"messageType":"Job\u0041vailable","repositoryName":"a\"b"}"#,
        r#"{"messageType":"JobNew","runnerRequestId":5}"#,
        r#"{}"#,
    ];
    for item in well_formed {
        let fast = fast::decode_item(item);
        assert!(fast.is_some(), "fast path turned down {item}");
        assert_eq!(Ok(fast.unwrap()), decode_item(1, 0, item), "{item}");
    }
    let left = [
        // A duplicate messageType: the reference decoder takes the last.
        r#"{"messageType":"JobAssigned","messageType":"JobNew"}"#,
        r#"{"messageType":"JobNew","messageType":"JobAssigned","runnerRequestId":3}"#,
        // Any other duplicate key: the reference decoder fails on those it reads.
        r#"{"messageType":"JobAssigned","result":"a","result":"b"}"#,
        // A wrong type in a field of another job type, which the reference decoder ignores.
        r#"{"messageType":"JobStarted","result":5}"#,
        r#"{"messageType":"JobAvailable","runnerId":"nine"}"#,
        // A messageType that is not a string: skipped.
        r#"{"messageType":5,"runnerRequestId":1}"#,
        r#"{"messageType":null}"#,
        // An array: serde's derive reads it by position, the reference decoder skips it.
        r#"["JobAssigned",5]"#,
        // A fractional jobId, written by serde_json::Number.
        r#"{"messageType":"JobAssigned","jobId":-0}"#,
        r#"{"messageType":"JobAssigned","jobId":1e3}"#,
        // Errors.
        r#"{"messageType":"JobAssigned","jobId":true}"#,
        r#"{"messageType":"JobStarted","queueTime":"yesterday"}"#,
    ];
    for item in left {
        assert_eq!(fast::decode_item(item), None, "{item}");
        // Still parsed as before, by the reference decoder.
        assert_eq!(parse_item(1, 0, item), decode_item(1, 0, item), "{item}");
    }
    let JobMessage::Assigned(assigned) = decode_item(1, 0, left[1]).unwrap().unwrap() else {
        panic!("last messageType wins")
    };
    assert_eq!(assigned.common.runner_request_id, 3);
    assert_eq!(
        decode_item(1, 0, left[3]).unwrap().unwrap().common().job_id,
        ""
    );
    let JobMessage::Assigned(assigned) = decode_item(1, 0, left[8]).unwrap().unwrap() else {
        panic!("assigned")
    };
    assert_eq!(assigned.common.job_id, "-0.0");
}

mod fast_path {
    use super::*;
    use proptest::prelude::*;

    /// Every key a job message may have, and two it may not.
    const KEYS: &[&str] = &[
        "messageType",
        "runnerRequestId",
        "repositoryName",
        "ownerName",
        "jobId",
        "jobWorkflowRef",
        "jobDisplayName",
        "workflowRunId",
        "eventName",
        "requestLabels",
        "queueTime",
        "scaleSetAssignTime",
        "runnerAssignTime",
        "finishTime",
        "acquireJobUrl",
        "runnerId",
        "runnerName",
        "result",
        "MessageType",
        "billingOwnerId",
    ];

    /// JSON text of values of every type, including the corner cases of each field's
    /// deserializer: escapes, Go's zero time, numbers `jobId` writes its own way.
    const ANY: &[&str] = &[
        "null",
        "true",
        "0",
        "-3",
        "18446744073709551615",
        "-9223372036854775808",
        "1.5",
        "-0",
        "1e3",
        r#""""#,
        r#""x""#,
        r#""a\"b\\c\u00e9\ud83d\ude00""#,
        r#""2024-05-01T10:00:00.1234567Z""#,
        r#""2024-05-01T10:00:00+02:00""#,
        r#""0001-01-01T00:00:00Z""#,
        r#""yesterday""#,
        r#""JobAvailable""#,
        r#""JobAssigned""#,
        r#""JobStarted""#,
        r#""JobCompleted""#,
        r#""Job\u0053tarted""#,
        r#""JobCancelled""#,
        "[]",
        r#"["self-hosted","linux"]"#,
        r#"["a",1]"#,
        "{}",
        r#"{"messageType":"JobAssigned"}"#,
    ];

    /// A value that fits `key` (so most items get through the fast path), sometimes any value.
    fn value_for(key: &'static str) -> BoxedStrategy<String> {
        let fits: &'static [&'static str] = match key {
            "messageType" => &[
                r#""JobAvailable""#,
                r#""JobAssigned""#,
                r#""JobStarted""#,
                r#""JobCompleted""#,
                r#""JobCancelled""#,
            ],
            "runnerRequestId" | "workflowRunId" | "runnerId" => {
                &["0", "7", "-3", "9007199254740993"]
            }
            "jobId" => &[r#""job-1""#, "42", "null", r#""""#, "18446744073709551615"],
            "requestLabels" => &[r#"["self-hosted","linux"]"#, "[]", "null"],
            "queueTime" | "scaleSetAssignTime" | "runnerAssignTime" | "finishTime" => &[
                r#""2024-05-01T10:00:00.1234567Z""#,
                r#""2024-05-01T10:00:00Z""#,
                r#""0001-01-01T00:00:00Z""#,
                r#""""#,
                "null",
            ],
            _ => &[r#""x""#, r#""""#, r#""a\"b""#],
        };
        prop_oneof![
            4 => prop::sample::select(fits),
            1 => prop::sample::select(ANY),
        ]
        .prop_map(str::to_owned)
        .boxed()
    }

    fn field() -> impl Strategy<Value = (&'static str, String)> {
        prop::sample::select(KEYS).prop_flat_map(|key| (Just(key), value_for(key)))
    }

    /// The text of one job message: an object of fields in any order, keys possibly
    /// repeated, now and then not an object at all.
    fn item() -> impl Strategy<Value = String> {
        let object = (
            prop::sample::select(&KEYS[..1]).prop_flat_map(value_for),
            prop::collection::vec(field(), 0..12),
            0usize..12,
            prop::collection::vec(field(), 0..3),
        )
            .prop_map(|(message_type, fields, at, repeats)| {
                let mut pairs: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": {v}"))
                    .collect();
                pairs.insert(
                    at.min(pairs.len()),
                    format!("\"messageType\":{message_type}"),
                );
                pairs.extend(repeats.iter().map(|(k, v)| format!("\"{k}\":{v}")));
                format!("{{{}}}", pairs.join(","))
            });
        prop_oneof![
            8 => object,
            1 => prop::sample::select(ANY).prop_map(str::to_owned),
            1 => (prop::sample::select(ANY), prop::sample::select(ANY))
                .prop_map(|(a, b)| format!("[{a},{b}]")),
        ]
    }

    /// The parser before the fast path: the body split into items, each read by
    /// [`decode_item`].
    fn reference(raw: RawQueueMessage) -> Result<RunnerScaleSetMessage, MessageParseError> {
        parse_message_with(raw, false, decode_item)
    }

    /// [`parse_queue_message`] before the fast path.
    fn reference_queue_message(raw: &[u8]) -> Result<RunnerScaleSetMessage, MessageParseError> {
        reference(crate::messages::envelope(raw)?)
    }

    /// The text of an envelope around a body of generated items, in shapes and escapes
    /// serde_json reads both ways and those it turns down.
    fn envelope() -> impl Strategy<Value = String> {
        // One-character escapes where the body's JSON tells them apart: in its strings (the
        // `x` of `"x"`), where all but `\\` and `\/` make the body invalid.
        let simple =
            prop::sample::select(&[r"\/", r"\t", r"\b", r"\f", r"\n", r"\r", r"\\\\", r#"\""#]);
        let items = prop::collection::vec(item(), 0..4);
        let body = (items, 0usize..8, simple).prop_map(|(items, form, escape)| {
            let body = format!("[{}]", items.join(","));
            let encoded = serde_json::to_string(&body).unwrap();
            match form {
                0 => encoded.replacen('[', r"\u005b", 1),
                1 => encoded.replace('x', escape).replace(',', r"\t,"),
                2 => r#""\ud800""#.to_owned(),
                3 => "null".to_owned(),
                4 => "5".to_owned(),
                _ => encoded,
            }
        });
        let message_type = prop::sample::select(&[
            r#""RunnerScaleSetJobMessages""#,
            r#""RunnerScaleSetJobMessages""#,
            r#""Other""#,
            "null",
        ]);
        (
            prop::collection::vec(body, 1..3),
            message_type,
            prop::sample::select(&["", "\u{feff}", " ", "\u{feff}\n"]),
            0usize..6,
        )
            .prop_map(|(bodies, message_type, prefix, shape)| {
                let mut pairs = vec![
                    format!(r#""messageId":7"#),
                    format!(r#""messageType":{message_type}"#),
                    format!(r#""statistics":{{"totalAssignedJobs":3}}"#),
                ];
                // A second body is a duplicate key; no body at all, none.
                if shape != 0 {
                    for body in &bodies {
                        pairs.insert(shape % 3, format!(r#""body":{body}"#));
                    }
                }
                let text = if shape == 5 {
                    format!(r#"[7,{message_type},{},null]"#, bodies[0])
                } else {
                    format!("{{{}}}", pairs.join(","))
                };
                format!("{prefix}{text}")
            })
    }

    proptest! {
        #![proptest_config(simulator::strategies::seeded(2048))]

        /// Envelopes, the body's escapes included, parse as the reference parser has them.
        #[test]
        fn envelopes_parse_as_the_reference_parser_has_them(text in envelope()) {
            let raw = text.as_bytes();
            prop_assert_eq!(parse_queue_message(raw), reference_queue_message(raw), "{}", text);
        }

        /// Where the fast path reads an item, it reads what the reference decoder reads.
        #[test]
        fn fast_path_agrees_with_the_reference_decoder(item in item(), index in 0usize..60) {
            let expected = decode_item(11, index, &item);
            if let Some(fast) = fast::decode_item(&item) {
                prop_assert_eq!(&Ok(fast), &expected, "{}", item);
            }
            prop_assert_eq!(parse_item(11, index, &item), expected, "{}", item);
        }

        /// Whole messages of such items come out as the reference parser has them.
        #[test]
        fn messages_parse_as_the_reference_parser_has_them(
            items in prop::collection::vec(item(), 0..8),
            spaced in any::<bool>(),
        ) {
            let separator = if spaced { " ,\n " } else { "," };
            let body = format!("[{}]", items.join(separator));
            let raw = queue_message(&body);
            let expected = reference(serde_json::from_slice(&raw).unwrap());
            prop_assert_eq!(parse_queue_message(&raw), expected, "{}", body);
        }
    }
}
