//! Exact wire format (headers, paths, queries, bodies) against a hand-rolled HTTP server, and
//! what the fake cannot do: short-lived installation tokens, a BOM before the whole response.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use retry::Classify as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::fast_options;
use github_client::{ActionsClient, ClientOptions, Credentials, JobMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PKCS8: &str = include_str!("fixtures/app_key_pkcs8.pem");
const PUBLIC: &str = include_str!("fixtures/app_key_public.pem");

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);
type Handler = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// One request per connection (`Connection: close`), enough for a wire check.
async fn mini_server(handler: Handler) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap().split(' ');
                let method = first.next().unwrap().to_owned();
                let target = first.next().unwrap().to_owned();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = buf[head_end + 4..].to_vec();
                while body.len() < len {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                let rec = Recorded {
                    method,
                    target,
                    headers,
                    body: String::from_utf8_lossy(&body).to_string(),
                };
                let index = {
                    let mut log = seen.lock().unwrap();
                    log.push(rec.clone());
                    log.len() - 1
                };
                let (status, extra, body) = handler(&rec, index);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (base, log)
}

fn jwt_with_exp(exp: u64) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#.into()),
        b64(format!(r#"{{"exp":{exp},"iss":"fake"}}"#))
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rfc3339_in(secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn options() -> ClientOptions {
    fast_options(3, Duration::from_millis(20))
}

fn json(status: u16, v: serde_json::Value) -> Reply {
    (
        status,
        vec![("Content-Type", "application/json".into())],
        v.to_string().into_bytes(),
    )
}

#[tokio::test]
async fn wire_format_matches_the_go_listener() {
    let base_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let b = base_cell.clone();
    let handler: Handler = Arc::new(move |r: &Recorded, _| {
        let base = b.lock().unwrap().clone();
        let path = r.target.split('?').next().unwrap().to_owned();
        match (r.method.as_str(), path.as_str()) {
            ("POST", "/api/v3/app/installations/77/access_tokens") => json(
                201,
                // short-lived: inside the 60 s margin, so the next use fetches a new one
                serde_json::json!({"token": "ghs_installation", "expires_at": rfc3339_in(30)}),
            ),
            ("POST", "/api/v3/orgs/my-org/actions/runners/registration-token") => json(
                201,
                serde_json::json!({"token": "REGTOKEN", "expires_at": rfc3339_in(3600)}),
            ),
            ("POST", "/api/v3/actions/runner-registration") => json(
                200,
                serde_json::json!({"url": format!("{base}/tenant/"), "token": jwt_with_exp(now_secs() + 30)}),
            ),
            ("POST", "/tenant/_apis/runtime/runnerscalesets/9/sessions") => json(
                200,
                serde_json::json!({
                    "sessionId": "8d3f-sess", "ownerName": "pod-a",
                    "runnerScaleSet": {"id": 9, "name": "set"},
                    "messageQueueUrl": format!("{base}/queue/messages?sessionId=8d3f-sess&x=a%20b"),
                    "messageQueueAccessToken": "QUEUETOKEN",
                    "statistics": {"totalAssignedJobs": 4}
                }),
            ),
            ("GET", "/queue/messages") => {
                let body = serde_json::json!([
                    {"messageType": "JobStarted", "runnerRequestId": 11, "runnerName": "r1", "jobId": "j"}
                ])
                .to_string();
                let envelope = serde_json::json!({
                    "messageId": 5, "messageType": "RunnerScaleSetJobMessages",
                    "body": body, "statistics": {"totalAssignedJobs": 2}
                })
                .to_string();
                let mut bytes = b"\xef\xbb\xbf".to_vec(); // BOM before the whole response
                bytes.extend(envelope.into_bytes());
                (
                    200,
                    vec![("Content-Type", "application/json".into())],
                    bytes,
                )
            }
            ("DELETE", "/queue/messages/5") => (204, vec![], vec![]),
            ("POST", "/tenant/_apis/runtime/runnerscalesets/9/acquirejobs") => {
                json(200, serde_json::json!({"count": 1, "value": [11]}))
            }
            ("DELETE", "/tenant/_apis/runtime/runnerscalesets/9/sessions/8d3f-sess") => {
                (204, vec![], vec![])
            }
            _ => json(
                404,
                serde_json::json!({"typeName": "NotFound", "message": r.target.clone()}),
            ),
        }
    });
    let (base, log) = mini_server(handler).await;
    *base_cell.lock().unwrap() = base.clone();

    let client = ActionsClient::new(
        &format!("{base}/my-org/"),
        Credentials::App {
            app_id: "Iv1.clientid".into(),
            installation_id: 77,
            private_key: PKCS8.into(),
        },
        ClientOptions {
            user_agent: "test-agent/1.0".into(),
            ..options()
        },
    )
    .unwrap();
    let session = client.open_session(9, "pod-a").await.unwrap();
    assert_eq!(session.session_id(), "8d3f-sess");
    assert_eq!(session.initial_statistics().unwrap().total_assigned_jobs, 4);
    let msg = session.get_message(0, 3).await.unwrap().unwrap();
    assert_eq!(msg.message_id, 5);
    let JobMessage::Started(started) = &msg.jobs[0] else {
        panic!("{msg:?}")
    };
    assert_eq!(started.runner_name, "r1");
    session.delete_message(5).await.unwrap();
    assert!(session.get_message(5, 3).await.is_ok());
    assert_eq!(session.acquire_jobs(&[11]).await.unwrap(), vec![11]);
    session.close().await.unwrap();

    let log = log.lock().unwrap().clone();
    let find = |method: &str, prefix: &str| -> Vec<Recorded> {
        log.iter()
            .filter(|r| r.method == method && r.target.starts_with(prefix))
            .cloned()
            .collect()
    };
    assert!(
        log.iter()
            .all(|r| r.header("User-Agent") == Some("test-agent/1.0"))
    );

    // App JWT: RS256, iss = app id (client id accepted), iat = now - 60, exp = iat + 540
    let app = find("POST", "/api/v3/app/installations/77/access_tokens");
    assert!(!app.is_empty());
    assert_eq!(
        app[0].header("Content-Type"),
        Some("application/vnd.github+json")
    );
    let jwt = app[0]
        .header("Authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["Iv1.clientid"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 540);
    assert!(iat.abs_diff(now_secs() - 60) <= 5);

    // Each call carries the credential of its step: installation token, registration
    // token, then the session's queue token.
    #[rustfmt::skip]
    let calls = [
        ("POST", "/api/v3/orgs/my-org/actions/runners/registration-token", "Bearer ghs_installation"),
        ("POST", "/api/v3/actions/runner-registration", "RemoteAuth REGTOKEN"),
        ("GET", "/queue/messages", "Bearer QUEUETOKEN"),
        ("DELETE", "/queue/messages/5", "Bearer QUEUETOKEN"),
        ("POST", "/tenant/_apis/runtime/runnerscalesets/9/acquirejobs", "Bearer QUEUETOKEN"),
    ];
    for (method, prefix, authorization) in calls {
        assert_eq!(
            find(method, prefix)[0].header("Authorization"),
            Some(authorization),
            "{method} {prefix}"
        );
    }

    let reg = find(
        "POST",
        "/api/v3/orgs/my-org/actions/runners/registration-token",
    );
    assert_eq!(
        reg[0].header("Content-Type"),
        Some("application/vnd.github.v3+json")
    );

    let rr = find("POST", "/api/v3/actions/runner-registration");
    assert_eq!(rr[0].header("Content-Type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&rr[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"url": format!("{base}/my-org"), "runner_event": "register"})
    );

    let create = find("POST", "/tenant/_apis/runtime/runnerscalesets/9/sessions");
    assert_eq!(
        create[0].target,
        "/tenant/_apis/runtime/runnerscalesets/9/sessions?api-version=6.0-preview"
    );
    assert!(
        create[0]
            .header("Authorization")
            .unwrap()
            .starts_with("Bearer ey")
    );
    assert_eq!(create[0].header("Content-Type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&create[0].body).unwrap(),
        serde_json::json!({"ownerName": "pod-a"})
    );

    let polls = find("GET", "/queue/messages");
    assert_eq!(
        polls[0].target,
        "/queue/messages?sessionId=8d3f-sess&x=a%20b"
    );
    assert_eq!(
        polls[1].target,
        "/queue/messages?sessionId=8d3f-sess&x=a%20b&lastMessageId=5"
    );
    assert_eq!(
        polls[0].header("Accept"),
        Some("application/json; api-version=6.0-preview")
    );
    assert_eq!(polls[0].header("X-ScaleSetMaxCapacity"), Some("3"));

    let ack = find("DELETE", "/queue/messages/5");
    assert_eq!(
        ack[0].target,
        "/queue/messages/5?sessionId=8d3f-sess&x=a%20b"
    );

    let acquire = find(
        "POST",
        "/tenant/_apis/runtime/runnerscalesets/9/acquirejobs",
    );
    assert_eq!(acquire[0].body, "[11]");

    let delete = find(
        "DELETE",
        "/tenant/_apis/runtime/runnerscalesets/9/sessions/8d3f-sess",
    );
    assert_eq!(delete.len(), 1);

    // admin JWT exp within 60 s: refreshed before each admin call (create, acquire, delete);
    // the 30 s installation token likewise.
    assert_eq!(
        rr.len(),
        3,
        "{:#?}",
        log.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(app.len(), 3);
    assert_eq!(client.metrics().admin_token_refreshes(), 3);
    assert_eq!(client.metrics().retries(), 0);
}

#[tokio::test]
async fn error_details_and_http_date_retry_after() {
    let handler: Handler = Arc::new(|r: &Recorded, index| {
        if r.target.contains("registration-token") && index == 0 {
            let date = (time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
                .format(time::macros::format_description!(
                    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
                ))
                .unwrap();
            return (503, vec![("Retry-After", date)], b"busy".to_vec());
        }
        if r.target.contains("registration-token") {
            return json(201, serde_json::json!({"token": "R"}));
        }
        (
            422,
            vec![
                ("ActivityId", "act-123".into()),
                ("X-GitHub-Request-Id", "GH:REQ:1".into()),
                ("Content-Type", "application/json".into()),
            ],
            serde_json::json!({"typeName": "SomeServiceException, GitHub.Actions", "message": "nope"})
                .to_string()
                .into_bytes(),
        )
    });
    let (base, _log) = mini_server(handler).await;
    let client = ActionsClient::new(
        &format!("{base}/enterprises/e"),
        Credentials::Token("ghp_secret_pat".into()),
        options(),
    )
    .unwrap();
    let err = client.connect().await.unwrap_err();
    assert_eq!(
        client.metrics().retries(),
        1,
        "503 with an HTTP-date Retry-After retried"
    );
    let api = err.api().unwrap();
    assert_eq!(api.status, 422);
    assert_eq!(api.activity_id.as_deref(), Some("act-123"));
    assert_eq!(api.github_request_id.as_deref(), Some("GH:REQ:1"));
    assert_eq!(
        api.type_name.as_deref(),
        Some("SomeServiceException, GitHub.Actions")
    );
    let text = err.to_string();
    for part in [
        "422",
        "act-123",
        "GH:REQ:1",
        "SomeServiceException",
        "nope",
        "runner-registration",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    assert!(!format!("{text} {err:?}").contains("ghp_secret_pat"));
    assert!(!err.kind().is_transient());
}
