//! The fake Actions service driven over real HTTP on loopback with reqwest, as a client would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use simulator::actions::{
    AuthKind, Endpoint, FakeActions, FakeActionsConfig, FakeAuth, FakeJob, FakeStatistics, Fault,
    RegistrationScope,
};

const APP_KEY: &str = include_str!("fixtures/test_app_key.pem");
const APP_PUBLIC_KEY: &str = include_str!("fixtures/test_app_key.pub.pem");
const PAT: &str = "ghp_fake";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn start(config: FakeActionsConfig) -> FakeActions {
    FakeActions::start(config).await.unwrap()
}

/// A fake with [`quick`] settings and a client for it: how most tests begin.
async fn quick_fake() -> (FakeActions, reqwest::Client) {
    (start(quick()).await, client())
}

fn quick() -> FakeActionsConfig {
    FakeActionsConfig {
        long_poll_hold: Duration::from_secs(1),
        ..FakeActionsConfig::default()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn jwt_claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn app_jwt(iss: Value, iat: i64, exp: i64) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(APP_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iss": iss, "iat": iat, "exp": exp}),
        &key,
    )
    .unwrap()
}

/// POST for an org registration token, with `authorization`.
async fn registration_token_request(
    http: &reqwest::Client,
    rest: &str,
    authorization: &str,
) -> reqwest::Response {
    http.post(format!(
        "{rest}/orgs/my-org/actions/runners/registration-token"
    ))
    .header("Authorization", authorization)
    .send()
    .await
    .unwrap()
}

/// Registration token (with `authorization`) then runner-registration: (service url, admin token).
async fn register(
    fake: &FakeActions,
    http: &reqwest::Client,
    rest: &str,
    authorization: &str,
) -> (String, String) {
    let response = registration_token_request(http, rest, authorization).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().contains_key("x-github-request-id"));
    let body: Value = response.json().await.unwrap();
    let registration_token = body["token"].as_str().unwrap().to_owned();
    assert!(body["expires_at"].is_string());

    let response = http
        .post(format!("{rest}/actions/runner-registration"))
        .header("Authorization", format!("RemoteAuth {registration_token}"))
        .json(&json!({"url": fake.configure_url("my-org"), "runner_event": "register"}))
        .send()
        .await
        .unwrap();
    let body = json_body(response, StatusCode::OK).await;
    let url = body["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&fake.url()) && url.ends_with('/'), "{url}");
    (url, body["token"].as_str().unwrap().to_owned())
}

/// The response's JSON body, once its status is `status`.
async fn json_body(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

/// The `typeName` of an Actions service error body.
fn type_name(body: &Value) -> &str {
    body["typeName"].as_str().unwrap()
}

struct Session {
    id: String,
    queue_url: String,
    queue_token: String,
    body: Value,
}

async fn create_session(http: &reqwest::Client, service: &str, admin: &str) -> reqwest::Response {
    http.post(format!(
        "{service}_apis/runtime/runnerscalesets/1/sessions?api-version=6.0-preview"
    ))
    .bearer_auth(admin)
    .json(&json!({"ownerName": "listener-pod"}))
    .send()
    .await
    .unwrap()
}

async fn session(http: &reqwest::Client, service: &str, admin: &str) -> Session {
    let response = create_session(http, service, admin).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("activityid"));
    let body: Value = response.json().await.unwrap();
    Session {
        id: body["sessionId"].as_str().unwrap().to_owned(),
        queue_url: body["messageQueueUrl"].as_str().unwrap().to_owned(),
        queue_token: body["messageQueueAccessToken"].as_str().unwrap().to_owned(),
        body,
    }
}

/// A quick fake with a PAT-registered session: (fake, client, session).
async fn quick_session() -> (FakeActions, reqwest::Client, Session) {
    let (fake, http) = quick_fake().await;
    let (_, _, s) = pat_session(&fake, &http).await;
    (fake, http, s)
}

/// The fake's REST API root, as GitHub Enterprise Server has it.
fn rest_url(fake: &FakeActions) -> String {
    format!("{}/api/v3", fake.url())
}

/// [`register`] with the PAT: (service url, admin token).
async fn pat_register(fake: &FakeActions, http: &reqwest::Client) -> (String, String) {
    register(fake, http, &rest_url(fake), &format!("Bearer {PAT}")).await
}

/// PAT registration + session in one go.
async fn pat_session(fake: &FakeActions, http: &reqwest::Client) -> (String, String, Session) {
    let (service, admin) = pat_register(fake, http).await;
    let session = session(http, &service, &admin).await;
    (service, admin, session)
}

async fn get_message(
    http: &reqwest::Client,
    session: &Session,
    last: Option<i64>,
) -> reqwest::Response {
    let mut url = session.queue_url.clone();
    if let Some(last) = last {
        url.push_str(&format!("&lastMessageId={last}"));
    }
    http.get(url)
        .bearer_auth(&session.queue_token)
        .header("Accept", "application/json; api-version=6.0-preview")
        .header("X-ScaleSetMaxCapacity", "10")
        .send()
        .await
        .unwrap()
}

/// Next message, parsed: (messageId, body array, statistics).
async fn next_message(http: &reqwest::Client, session: &Session) -> (i64, Vec<Value>, Value) {
    let response = get_message(http, session, None).await;
    let message = json_body(response, StatusCode::OK).await;
    assert_eq!(message["messageType"], "RunnerScaleSetJobMessages");
    let body: Vec<Value> = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
    (
        message["messageId"].as_i64().unwrap(),
        body,
        message["statistics"].clone(),
    )
}

/// The session's own URL (refresh with PATCH, close with DELETE).
fn session_url(service: &str, session: &Session) -> String {
    format!(
        "{service}_apis/runtime/runnerscalesets/1/sessions/{}?api-version=6.0-preview",
        session.id
    )
}

fn delete_url(session: &Session, message_id: i64) -> String {
    let (path, query) = session.queue_url.split_once('?').unwrap();
    format!("{path}/{message_id}?{query}")
}

async fn ack(http: &reqwest::Client, session: &Session, message_id: i64) -> StatusCode {
    http.delete(delete_url(session, message_id))
        .bearer_auth(&session.queue_token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn acquire(
    http: &reqwest::Client,
    service: &str,
    token: &str,
    ids: &[i64],
) -> reqwest::Response {
    http.post(format!(
        "{service}_apis/runtime/runnerscalesets/1/acquirejobs?api-version=6.0-preview"
    ))
    .bearer_auth(token)
    .json(ids)
    .send()
    .await
    .unwrap()
}

fn types(body: &[Value]) -> Vec<&str> {
    body.iter()
        .map(|m| m["messageType"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn pat_flow_end_to_end() {
    let (fake, http) = quick_fake().await;
    let (service, admin) = pat_register(&fake, &http).await;
    let claims = jwt_claims(&admin);
    let exp = claims["exp"].as_i64().unwrap();
    assert!((exp - now() - 3600).abs() <= 5, "exp {exp}");
    assert_eq!(fake.registered_urls(), vec![fake.configure_url("my-org")]);

    let s = session(&http, &service, &admin).await;
    assert_eq!(s.body["ownerName"], "listener-pod");
    assert_eq!(s.body["runnerScaleSet"]["id"], 1);
    assert_eq!(s.body["runnerScaleSet"]["name"], "arc-runner-set");
    assert_eq!(s.body["statistics"]["totalAssignedJobs"], 0);
    assert!(s.queue_url.contains(&format!("?sessionId={}&", s.id)));
    assert_eq!(fake.session().unwrap().owner_name, "listener-pod");

    let ids = fake.queue_jobs(3);
    let (id1, body, stats) = next_message(&http, &s).await;
    assert_eq!(types(&body), ["JobAvailable"; 3]);
    assert_eq!(stats["totalAvailableJobs"], 3);
    let first = &body[0];
    assert_eq!(first["runnerRequestId"], ids[0]);
    assert!(
        first["acquireJobUrl"]
            .as_str()
            .unwrap()
            .ends_with("/acquirejobs")
    );
    assert_eq!(first["scaleSetAssignTime"], "0001-01-01T00:00:00Z");
    for field in [
        "repositoryName",
        "ownerName",
        "jobId",
        "jobWorkflowRef",
        "queueTime",
    ] {
        assert!(first[field].is_string(), "{field}");
    }
    assert_eq!(ack(&http, &s, id1).await, StatusCode::NO_CONTENT);

    let mut wanted = ids.clone();
    wanted.push(999_999);
    let response = acquire(&http, &service, &s.queue_token, &wanted).await;
    let acquired = json_body(response, StatusCode::OK).await;
    assert_eq!(acquired, json!({"count": 3, "value": ids}));

    let (id2, body, stats) = next_message(&http, &s).await;
    assert!(id2 > id1);
    assert_eq!(types(&body), ["JobAssigned"; 3]);
    assert_eq!(stats["totalAssignedJobs"], 3);
    assert_eq!(stats["totalAvailableJobs"], 0);
    assert_eq!(ack(&http, &s, id2).await, StatusCode::NO_CONTENT);

    assert!(fake.start_job(ids[0], "runner-a"));
    assert!(!fake.start_job(ids[0], "runner-a"), "already started");
    assert!(fake.complete_job(ids[1], "canceled"));
    let (id3, body, stats) = next_message(&http, &s).await;
    assert_eq!(types(&body), ["JobStarted", "JobCompleted"]);
    assert_eq!(body[0]["runnerName"], "runner-a");
    assert_eq!(body[1]["result"], "canceled");
    assert_ne!(body[1]["finishTime"], "0001-01-01T00:00:00Z");
    assert_eq!(stats["totalAssignedJobs"], 2);
    assert_eq!(stats["totalRunningJobs"], 1);
    assert_eq!(ack(&http, &s, id3).await, StatusCode::NO_CONTENT);

    let url = session_url(&service, &s);
    let response = http.delete(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(fake.session().is_none());

    let stats = fake.stats();
    assert_eq!(stats.sessions_created, 1);
    assert_eq!(stats.sessions_deleted, 1);
    assert_eq!(stats.sessions_active, 0);
    assert_eq!(stats.messages_acked, 3);
    assert_eq!(stats.jobs_acquired, 3);
    assert_eq!(stats.last_max_capacity, Some(10));
    assert_eq!(
        fake.registration_scopes(),
        vec![RegistrationScope::Org("my-org".into())]
    );
    let records = fake.requests();
    assert!(records.iter().any(|r| r.auth == AuthKind::RemoteAuth
        && r.endpoint == Some(Endpoint::RunnerRegistration)
        && r.status == 200));
    fake.shutdown().await;
}

#[tokio::test]
async fn rest_scopes_schemes_and_hosted_paths() {
    let (fake, http) = quick_fake().await;
    for (path, scope) in [
        (
            "/repos/o/r/actions/runners/registration-token",
            RegistrationScope::Repo {
                owner: "o".into(),
                repo: "r".into(),
            },
        ),
        (
            "/api/v3/enterprises/e/actions/runners/registration-token",
            RegistrationScope::Enterprise("e".into()),
        ),
    ] {
        let response = http
            .post(format!("{}{path}", fake.url()))
            .header("Authorization", format!("token {PAT}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
        assert_eq!(fake.registration_scopes().last(), Some(&scope));
    }
    // Hosted style: no /api/v3 prefix for the whole registration.
    let (service, _admin) = register(&fake, &http, &fake.url(), &format!("token {PAT}")).await;
    assert!(service.starts_with(&fake.url()));

    // A registration token for one scope does not register another.
    let response = http
        .post(format!(
            "{}/api/v3/repos/o/r/actions/runners/registration-token",
            fake.url()
        ))
        .bearer_auth(PAT)
        .send()
        .await
        .unwrap();
    let token: Value = response.json().await.unwrap();
    let response = http
        .post(format!("{}/api/v3/actions/runner-registration", fake.url()))
        .header(
            "Authorization",
            format!("RemoteAuth {}", token["token"].as_str().unwrap()),
        )
        .json(&json!({"url": fake.configure_url("other-org"), "runner_event": "register"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    fake.shutdown().await;
}

#[tokio::test]
async fn app_flow_and_jwt_checks() {
    let fake = start(FakeActionsConfig {
        auth: FakeAuth::App {
            app_id: "12345".into(),
            installation_id: 42,
            public_key_pem: APP_PUBLIC_KEY.into(),
        },
        ..quick()
    })
    .await;
    let http = client();
    let rest = rest_url(&fake);
    let token_url = format!("{rest}/app/installations/42/access_tokens");
    let iat = now() - 60;

    let post = |url: String, jwt: String| {
        let http = http.clone();
        async move { http.post(url).bearer_auth(jwt).send().await.unwrap() }
    };
    // Wrong: iss, expired, too long, garbage, unsigned by the key, wrong installation.
    for (jwt, why) in [
        (app_jwt(json!("999"), iat, iat + 540), "iss"),
        (app_jwt(json!(12345), now() - 1200, now() - 700), "expired"),
        (app_jwt(json!(12345), iat, iat + 1200), "exp - iat > 10 min"),
        ("not.a.jwt".to_owned(), "garbage"),
        (
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &json!({"iss": "12345", "iat": iat, "exp": iat + 540}),
                &jsonwebtoken::EncodingKey::from_secret(b"secret"),
            )
            .unwrap(),
            "HS256",
        ),
    ] {
        let response = post(token_url.clone(), jwt).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{why}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string() && body["documentation_url"].is_string());
    }
    let good = app_jwt(json!(12345), iat, iat + 540);
    let response = post(
        format!("{rest}/app/installations/7/access_tokens"),
        good.clone(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = post(token_url.clone(), good).await;
    let body = json_body(response, StatusCode::CREATED).await;
    let installation_token = body["token"].as_str().unwrap().to_owned();
    assert!(body["expires_at"].is_string());

    // A PAT is not accepted in App mode; the installation token is.
    let response = http
        .post(format!(
            "{rest}/orgs/my-org/actions/runners/registration-token"
        ))
        .bearer_auth(PAT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (service, admin) =
        register(&fake, &http, &rest, &format!("Bearer {installation_token}")).await;
    let s = session(&http, &service, &admin).await;
    assert!(!s.queue_token.is_empty());
    assert_eq!(fake.stats().app_tokens_issued, 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn wrong_and_expired_tokens_get_401() {
    let (fake, http) = quick_fake().await;
    let rest = rest_url(&fake);
    let response = registration_token_request(&http, &rest, "Bearer ghp_wrong").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("x-github-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Bad credentials");

    let response = http
        .post(format!("{rest}/actions/runner-registration"))
        .header("Authorization", "RemoteAuth NOPE")
        .json(&json!({"url": fake.configure_url("my-org"), "runner_event": "register"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (service, admin) = pat_register(&fake, &http).await;
    let s = session(&http, &service, &admin).await;

    // Missing api-version.
    let response = http
        .post(format!("{service}_apis/runtime/runnerscalesets/1/sessions"))
        .bearer_auth(&admin)
        .json(&json!({"ownerName": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Queue token expired: 401 on the queue and on acquire; a refresh gives a working one.
    fake.expire_queue_tokens();
    let response = get_message(&http, &s, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("activityid"));
    let body: Value = response.json().await.unwrap();
    assert!(body["typeName"].is_string() && body["message"].is_string());
    assert_eq!(
        acquire(&http, &service, &s.queue_token, &[1])
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The admin token is not a queue token.
    assert_eq!(
        acquire(&http, &service, &admin, &[1]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let url = session_url(&service, &s);
    let response = http.patch(&url).bearer_auth(&admin).send().await.unwrap();
    let refreshed = json_body(response, StatusCode::OK).await;
    let s2 = Session {
        queue_token: refreshed["messageQueueAccessToken"]
            .as_str()
            .unwrap()
            .to_owned(),
        queue_url: refreshed["messageQueueUrl"].as_str().unwrap().to_owned(),
        id: s.id.clone(),
        body: refreshed,
    };
    assert_ne!(s2.queue_token, s.queue_token);
    assert_eq!(
        get_message(&http, &s2, None).await.status(),
        StatusCode::ACCEPTED
    );

    // Admin token expired by the fake, then by its own ttl.
    fake.expire_admin_tokens();
    assert_eq!(
        create_session(&http, &service, &admin).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(fake.stats().unauthorized >= 6);
    fake.shutdown().await;

    let fake = start(FakeActionsConfig {
        admin_token_ttl: Duration::from_secs(1),
        ..quick()
    })
    .await;
    let (service, admin) = pat_register(&fake, &http).await;
    let exp = jwt_claims(&admin)["exp"].as_i64().unwrap();
    assert!(exp <= now() + 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        create_session(&http, &service, &admin).await.status(),
        StatusCode::UNAUTHORIZED
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn conflict_until_the_stale_session_lapses() {
    let (fake, http) = quick_fake().await;
    let (service, admin) = pat_register(&fake, &http).await;
    fake.add_stale_session("old-pod", Duration::from_millis(1500));
    let response = create_session(&http, &service, &admin).await;
    let body = json_body(response, StatusCode::CONFLICT).await;
    assert!(type_name(&body).contains("TaskAgentSessionConflictException"));
    assert!(body["message"].as_str().unwrap().contains("old-pod"));

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let s = session(&http, &service, &admin).await;
    // A live session conflicts too, until deleted.
    assert_eq!(
        create_session(&http, &service, &admin).await.status(),
        StatusCode::CONFLICT
    );
    let url = session_url(&service, &s);
    let response = http.delete(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = http.delete(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    session(&http, &service, &admin).await;
    assert_eq!(fake.stats().session_conflicts, 2);
    fake.shutdown().await;
}

#[tokio::test]
async fn long_poll_holds_then_202_and_answers_as_soon_as_a_job_is_queued() {
    let (fake, http, s) = quick_session().await;

    let started = Instant::now();
    let response = get_message(&http, &s, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(fake.stats().empty_polls, 1);

    // A long hold; the job queued meanwhile answers the held poll.
    let fake = start(FakeActionsConfig {
        long_poll_hold: Duration::from_secs(40),
        ..FakeActionsConfig::default()
    })
    .await;
    let (_, _, s) = pat_session(&fake, &http).await;
    let poll = {
        let http = http.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = get_message(&http, &s, Some(7)).await;
            (response.status(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.queue_jobs(1);
    let (status, elapsed) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_eq!(fake.stats().last_message_id_seen, Some(7));
    fake.shutdown().await;
}

#[tokio::test]
async fn redelivery_until_ack_batching_and_raw_messages() {
    let fake = start(FakeActionsConfig {
        max_jobs_per_message: 50,
        ..quick()
    })
    .await;
    let http = client();
    let (_, _, s) = pat_session(&fake, &http).await;
    fake.queue_jobs(120);
    fake.enqueue_raw_message("SomethingElse", "\u{feff}not json");
    fake.queue_jobs(1);

    let (id, body, _) = next_message(&http, &s).await;
    assert_eq!(body.len(), 50);
    let (again, _, _) = next_message(&http, &s).await;
    assert_eq!(again, id, "redelivered until acked");
    // Acking an id never delivered is a 404; the right one is 204, twice is harmless.
    assert_eq!(ack(&http, &s, id + 1).await, StatusCode::NOT_FOUND);
    assert_eq!(ack(&http, &s, id).await, StatusCode::NO_CONTENT);
    assert_eq!(ack(&http, &s, id).await, StatusCode::NO_CONTENT);

    let mut sizes = Vec::new();
    for _ in 0..2 {
        let (id, body, _) = next_message(&http, &s).await;
        sizes.push(body.len());
        assert_eq!(ack(&http, &s, id).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(sizes, [50, 20]);

    let response = get_message(&http, &s, None).await;
    let raw: Value = response.json().await.unwrap();
    assert_eq!(raw["messageType"], "SomethingElse");
    assert_eq!(raw["body"], "\u{feff}not json");
    assert_eq!(
        ack(&http, &s, raw["messageId"].as_i64().unwrap()).await,
        StatusCode::NO_CONTENT
    );
    let (_, body, _) = next_message(&http, &s).await;
    assert_eq!(body.len(), 1);
    let stats = fake.stats();
    assert_eq!(stats.messages_redelivered, 1);
    assert_eq!(stats.messages_delivered, 6);
    fake.shutdown().await;
}

#[tokio::test]
async fn acquire_semantics_and_statistics() {
    let (fake, http) = quick_fake().await;
    let (service, _, s) = pat_session(&fake, &http).await;
    fake.set_registered_runners(3);
    let ids = fake.queue_jobs(4);
    assert!(!fake.start_job(ids[0], "r"), "not acquired yet");
    assert_eq!(fake.statistics().total_available_jobs, 4);

    let body: Value = acquire(&http, &service, &s.queue_token, &ids[..2])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["count"], 2);
    // Already acquired: not acquired again.
    let body: Value = acquire(&http, &service, &s.queue_token, &ids[..3])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"count": 1, "value": [ids[2]]}));
    assert!(fake.start_job(ids[0], "runner-0"));
    assert!(fake.complete_job(ids[1], "succeeded"));
    assert!(
        fake.complete_job(ids[3], "canceled"),
        "a queued job can be cancelled"
    );
    assert!(!fake.complete_job(ids[3], "canceled"), "already completed");
    assert_eq!(
        fake.statistics(),
        FakeStatistics {
            total_available_jobs: 0,
            total_acquired_jobs: 1,
            total_assigned_jobs: 2,
            total_running_jobs: 1,
            total_registered_runners: 3,
            total_busy_runners: 1,
            total_idle_runners: 2,
        }
    );
    // Garbage body and wrong scale set.
    let response = http
        .post(format!(
            "{service}_apis/runtime/runnerscalesets/1/acquirejobs?api-version=6.0-preview"
        ))
        .bearer_auth(&s.queue_token)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = http
        .post(format!(
            "{service}_apis/runtime/runnerscalesets/2/acquirejobs?api-version=6.0-preview"
        ))
        .bearer_auth(&s.queue_token)
        .json(&[1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The statistics of a message are those at delivery time.
    let (_, body, stats) = next_message(&http, &s).await;
    assert_eq!(body.len(), 4 + 3 + 1 + 2);
    assert_eq!(stats["totalAssignedJobs"], 2);
    assert_eq!(stats["totalIdleRunners"], 2);
    fake.shutdown().await;
}

#[tokio::test]
async fn fault_injection() {
    let (fake, http) = quick_fake().await;
    let rest = rest_url(&fake);
    let url = format!("{rest}/orgs/my-org/actions/runners/registration-token");
    let post = || http.post(&url).bearer_auth(PAT).send();

    fake.inject_fault(
        Endpoint::RegistrationToken,
        Fault {
            status: Some(503),
            retry_after: Some(7),
            times: 2,
            ..Fault::default()
        },
    );
    for _ in 0..2 {
        let response = post().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "7");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_string());
    }
    assert_eq!(post().await.unwrap().status(), StatusCode::CREATED);

    fake.inject_fault(Endpoint::RegistrationToken, Fault::drop_connection(1));
    assert!(
        post().await.is_err(),
        "connection dropped without a response"
    );
    assert_eq!(post().await.unwrap().status(), StatusCode::CREATED);

    fake.inject_fault(
        Endpoint::RegistrationToken,
        Fault::delay(Duration::from_millis(500), 1),
    );
    let started = Instant::now();
    assert_eq!(post().await.unwrap().status(), StatusCode::CREATED);
    assert!(started.elapsed() >= Duration::from_millis(450));

    // Faults on the Actions side answer Actions-style errors; other endpoints are unaffected.
    let (service, admin) = pat_register(&fake, &http).await;
    fake.inject_fault(Endpoint::CreateSession, Fault::status(500, 1));
    let response = create_session(&http, &service, &admin).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().contains_key("activityid"));
    let body: Value = response.json().await.unwrap();
    assert!(body["typeName"].is_string());
    fake.inject_fault(Endpoint::AcquireJobs, Fault::status(500, 1));
    fake.clear_faults();
    session(&http, &service, &admin).await;

    // A delayed request does not hold up the others.
    fake.set_latency(Duration::from_millis(10));
    fake.inject_fault(
        Endpoint::RunnerRegistration,
        Fault::delay(Duration::from_secs(30), 1),
    );
    let slow = tokio::spawn({
        let http = http.clone();
        let url = format!("{rest}/actions/runner-registration");
        async move {
            http.post(url)
                .header("Authorization", "RemoteAuth X")
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post().await.unwrap().status(), StatusCode::CREATED);
    slow.abort();

    let stats = fake.stats();
    assert_eq!(stats.faults_fired, 6);
    assert_eq!(stats.connections_dropped, 1);
    let records = fake.requests();
    assert!(
        records
            .iter()
            .any(|r| r.status == 0 && r.endpoint == Some(Endpoint::RegistrationToken))
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn tls_with_the_generated_ca() {
    let fake = start(FakeActionsConfig {
        tls: true,
        ..quick()
    })
    .await;
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    let ca = fake.ca_pem().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let (service, admin) = register(
        &fake,
        &trusting,
        &format!("{}/api/v3", fake.url()),
        &format!("Bearer {PAT}"),
    )
    .await;
    let s = session(&trusting, &service, &admin).await;
    assert!(s.queue_url.starts_with("https://"));

    let other_ca = start(FakeActionsConfig {
        tls: true,
        ..quick()
    })
    .await
    .ca_pem()
    .unwrap();
    let distrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other_ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert!(
        distrusting
            .post(format!("{}/api/v3/orgs/x", fake.url()))
            .send()
            .await
            .is_err()
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_never_a_panic() {
    let (fake, http) = quick_fake().await;
    let response = http
        .get(format!("{}/nope/at/all", fake.url()))
        .send()
        .await
        .unwrap();
    let body = json_body(response, StatusCode::NOT_FOUND).await;
    assert_eq!(body["message"], "Not Found");

    let (service, admin, s) = pat_session(&fake, &http).await;
    let response = http
        .get(format!(
            "{service}_apis/runtime/runnerscalesets/1/nope?api-version=6.0-preview"
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let body = json_body(response, StatusCode::NOT_FOUND).await;
    assert!(body["typeName"].is_string());

    // Missing or invalid X-ScaleSetMaxCapacity.
    for capacity in [None, Some("-1"), Some("lots")] {
        let mut request = http.get(&s.queue_url).bearer_auth(&s.queue_token);
        if let Some(capacity) = capacity {
            request = request.header("X-ScaleSetMaxCapacity", capacity);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
    // The queue URL without its query string.
    let bare = s.queue_url.split_once('?').unwrap().0;
    let response = http
        .get(bare)
        .bearer_auth(&s.queue_token)
        .header("X-ScaleSetMaxCapacity", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Garbage bodies.
    for body in ["", "null", "[", "{\"ownerName\": 5}"] {
        let response = http
            .post(format!(
                "{service}_apis/runtime/runnerscalesets/1/sessions?api-version=6.0-preview"
            ))
            .bearer_auth(&admin)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{body}");
    }
    let response = http
        .post(format!("{}/api/v3/actions/runner-registration", fake.url()))
        .header("Authorization", "RemoteAuth")
        .body("\u{0}\u{1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The request log can be cleared and bounded; the counter still counts.
    fake.clear_requests();
    fake.set_request_log_limit(1);
    let before = fake.stats().requests;
    for _ in 0..2 {
        http.get(format!("{}/x", fake.url())).send().await.unwrap();
    }
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.stats().requests, before + 2);
    fake.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_jobs_flow_through() {
    let fake = start(FakeActionsConfig {
        long_poll_hold: Duration::from_millis(200),
        ..FakeActionsConfig::default()
    })
    .await;
    let http = client();
    let (service, _, s) = pat_session(&fake, &http).await;
    let ids = fake.queue_jobs(10_000);
    let mut available = 0;
    loop {
        let response = get_message(&http, &s, None).await;
        if response.status() == StatusCode::ACCEPTED {
            break;
        }
        let message: Value = response.json().await.unwrap();
        let body: Vec<Value> = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
        let wanted: Vec<i64> = body
            .iter()
            .filter(|m| m["messageType"] == "JobAvailable")
            .map(|m| m["runnerRequestId"].as_i64().unwrap())
            .collect();
        available += wanted.len();
        assert_eq!(
            ack(&http, &s, message["messageId"].as_i64().unwrap()).await,
            StatusCode::NO_CONTENT
        );
        if !wanted.is_empty() {
            assert_eq!(
                acquire(&http, &service, &s.queue_token, &wanted)
                    .await
                    .status(),
                StatusCode::OK
            );
        }
    }
    assert_eq!(available, 10_000);
    assert_eq!(fake.statistics().total_assigned_jobs, 10_000);
    for id in ids {
        assert!(fake.start_job(id, "r"));
        assert!(fake.complete_job(id, "succeeded"));
    }
    assert_eq!(fake.statistics(), FakeStatistics::default());
    assert_eq!(fake.stats().jobs_completed, 10_000);
    fake.shutdown().await;
}

#[tokio::test]
async fn queue_job_with_explicit_fields() {
    let (fake, http, s) = quick_session().await;
    let id = fake.queue_job(FakeJob {
        repository_name: "repo-x".into(),
        owner_name: "owner-x".into(),
        workflow_run_id: 77,
        job_id: Some("job-77".into()),
        request_labels: vec!["a".into(), "b".into()],
        ..FakeJob::default()
    });
    let (_, body, _) = next_message(&http, &s).await;
    let job = &body[0];
    assert_eq!(job["runnerRequestId"], id);
    assert_eq!(job["repositoryName"], "repo-x");
    assert_eq!(job["ownerName"], "owner-x");
    assert_eq!(job["workflowRunId"], 77);
    assert_eq!(job["jobId"], "job-77");
    assert_eq!(job["requestLabels"], json!(["a", "b"]));
    fake.shutdown().await;
}

#[tokio::test]
async fn the_scale_set_is_read_with_the_admin_token_and_no_session() {
    let (fake, http) = quick_fake().await;
    let (service, admin) = pat_register(&fake, &http).await;
    let get = |id: i64, token: &str| {
        http.get(format!(
            "{service}_apis/runtime/runnerscalesets/{id}?api-version=6.0-preview"
        ))
        .bearer_auth(token)
        .send()
    };

    let response = get(1, &admin).await.unwrap();
    let body = json_body(response, StatusCode::OK).await;
    assert_eq!(body["id"], 1);
    assert!(
        body["name"].is_string() && body["runnerGroupName"].is_string(),
        "{body}"
    );

    let response = get(999, &admin).await.unwrap();
    let body = json_body(response, StatusCode::NOT_FOUND).await;
    assert!(
        type_name(&body).contains("RunnerScaleSetNotFoundException"),
        "{body}"
    );

    assert_eq!(
        get(1, "not-the-admin-token").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.endpoint == Some(Endpoint::GetScaleSet))
    );
    assert_eq!(fake.stats().sessions_created, 0);
}
