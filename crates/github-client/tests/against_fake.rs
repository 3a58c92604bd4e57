//! The client against the fake Actions service, over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use retry::{Classify as _, FailureKind};
use std::time::{Duration, Instant};

use common::fast_options;
use github_client::{
    ActionsClient, ClientOptions, Credentials, Error, JobMessage, MessageSession, ProxyConfig,
    RetryPolicy, SecretString,
};
use simulator::actions::{
    AuthKind, Endpoint, FakeActions, FakeActionsConfig, FakeAuth, Fault, RegistrationScope,
};

const PAT: &str = "ghp_fake";
const APP_ID: &str = "424242";
const INSTALLATION_ID: i64 = 77;
const PKCS1: &str = include_str!("fixtures/app_key_pkcs1.pem");
const PKCS8: &str = include_str!("fixtures/app_key_pkcs8.pem");
const PUBLIC: &str = include_str!("fixtures/app_key_public.pem");
const SCOPES: [&str; 3] = ["my-org", "my-org/my-repo", "enterprises/my-ent"];

/// Fast options: tiny backoffs, short timeouts, no proxy from the environment.
fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        long_poll_timeout: Duration::from_secs(15),
        session_conflict_timeout: Duration::from_secs(20),
        ..fast_options(4, Duration::from_millis(50))
    }
}

fn fake_config() -> FakeActionsConfig {
    FakeActionsConfig {
        long_poll_hold: Duration::from_millis(500),
        ..FakeActionsConfig::default()
    }
}

async fn start_fake() -> FakeActions {
    start_fake_with(fake_config()).await
}

/// The default fake with one setting changed.
async fn start_fake_tuned(tune: impl FnOnce(&mut FakeActionsConfig)) -> FakeActions {
    let mut config = fake_config();
    tune(&mut config);
    start_fake_with(config).await
}

async fn start_fake_with(config: FakeActionsConfig) -> FakeActions {
    FakeActions::start(config).await.unwrap()
}

fn pat() -> Credentials {
    Credentials::Token(SecretString::from(PAT))
}

fn client(fake: &FakeActions, scope: &str, options: ClientOptions) -> ActionsClient {
    ActionsClient::new(&fake.configure_url(scope), pat(), options).unwrap()
}

/// A PAT client of the fake's org and a session of scale set 1 it opened.
async fn open_session(fake: &FakeActions) -> (ActionsClient, MessageSession) {
    let client = client(fake, "my-org", options());
    let session = client.open_session(1, "pod").await.unwrap();
    (client, session)
}

/// A default fake, a client and its open session: how most session tests begin.
async fn fake_with_session() -> (FakeActions, ActionsClient, MessageSession) {
    let fake = start_fake().await;
    let (client, session) = open_session(&fake).await;
    (fake, client, session)
}

fn app_fake_config() -> FakeActionsConfig {
    FakeActionsConfig {
        auth: FakeAuth::App {
            app_id: APP_ID.into(),
            installation_id: INSTALLATION_ID,
            public_key_pem: PUBLIC.into(),
        },
        ..fake_config()
    }
}

/// Open a session, see jobs arrive, ack, acquire, see them assigned, close.
async fn exercise(fake: &FakeActions, client: &ActionsClient) {
    let session = client.open_session(1, "listener-pod-0").await.unwrap();
    assert_eq!(fake.session().unwrap().owner_name, "listener-pod-0");
    assert_eq!(session.session_id(), fake.session().unwrap().session_id);
    assert_eq!(session.initial_statistics().unwrap().total_assigned_jobs, 0);

    let ids = fake.queue_jobs(2);
    let msg = session.get_message(0, 5).await.unwrap().expect("a message");
    let available = msg.available_job_ids();
    assert_eq!(available, ids);
    assert_eq!(msg.statistics.unwrap().total_available_jobs, 2);
    session.delete_message(msg.message_id).await.unwrap();
    let acquired = session.acquire_jobs(&available).await.unwrap();
    assert_eq!(acquired, ids);

    let next = session
        .get_message(msg.message_id, 5)
        .await
        .unwrap()
        .expect("assigned");
    assert!(
        next.jobs
            .iter()
            .all(|j| matches!(j, JobMessage::Assigned(_)))
    );
    assert_eq!(next.statistics.unwrap().total_assigned_jobs, 2);
    session.delete_message(next.message_id).await.unwrap();
    assert_eq!(fake.stats().last_max_capacity, Some(5));
    assert_eq!(fake.stats().last_message_id_seen, Some(msg.message_id));

    session.close().await.unwrap();
    let requests = fake.requests().len();
    session.close().await.unwrap(); // idempotent, no request
    assert_eq!(fake.requests().len(), requests);
    assert!(matches!(
        session.get_message(0, 5).await,
        Err(Error::SessionClosed)
    ));
    assert_eq!(fake.stats().sessions_deleted, 1);
    assert!(fake.session().is_none());
}

fn expected_scope(scope: &str) -> RegistrationScope {
    match scope {
        "my-org" => RegistrationScope::Org("my-org".into()),
        "my-org/my-repo" => RegistrationScope::Repo {
            owner: "my-org".into(),
            repo: "my-repo".into(),
        },
        _ => RegistrationScope::Enterprise("my-ent".into()),
    }
}

#[tokio::test]
async fn pat_flow_for_the_three_scopes() {
    for scope in SCOPES {
        let fake = start_fake().await;
        let client = client(&fake, scope, options());
        exercise(&fake, &client).await;
        assert_eq!(fake.registration_scopes(), vec![expected_scope(scope)]);
        assert_eq!(fake.registered_urls(), vec![fake.configure_url(scope)]);
        let requests = fake.requests();
        assert!(requests.iter().all(|r| {
            r.user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with("gha-listener-rs/"))
        }));
        assert!(
            requests
                .iter()
                .all(|r| r.path.starts_with("/api/v3") || !r.path.contains("registration"))
        );
        assert!(
            requests
                .iter()
                .any(|r| r.endpoint == Some(Endpoint::RunnerRegistration)
                    && r.auth == AuthKind::RemoteAuth)
        );
        assert_eq!(client.metrics().retries(), 0);
        fake.shutdown().await;
    }
}

#[tokio::test]
async fn app_flow_for_the_three_scopes_with_pkcs1_and_pkcs8_keys() {
    for (scope, key) in SCOPES.iter().zip([PKCS1, PKCS8, PKCS1]) {
        let fake = start_fake_with(app_fake_config()).await;
        let creds = Credentials::App {
            app_id: APP_ID.into(),
            installation_id: INSTALLATION_ID,
            private_key: key.into(),
        };
        let client = ActionsClient::new(&fake.configure_url(scope), creds, options()).unwrap();
        exercise(&fake, &client).await;
        assert_eq!(fake.stats().app_tokens_issued, 1);
        assert_eq!(fake.registration_scopes(), vec![expected_scope(scope)]);
        fake.shutdown().await;
    }
    // a key that does not match the App's public key is rejected: credentials error, fatal
    let fake = start_fake_with(app_fake_config()).await;
    let other_key = PKCS8.replace('\r', "");
    let creds = Credentials::App {
        app_id: "999".into(), // wrong app id: JWT issuer mismatch
        installation_id: INSTALLATION_ID,
        private_key: other_key.into(),
    };
    let client = ActionsClient::new(&fake.configure_url("my-org"), creds, options()).unwrap();
    let err = client.open_session(1, "pod").await.unwrap_err();
    assert!(err.kind() == FailureKind::CredentialsRejected, "{err}");
    assert!(!err.kind().is_transient());
    assert_no_secret(&err);
}

#[tokio::test]
async fn hosted_style_rest_base_override() {
    let fake = start_fake().await;
    let options = ClientOptions {
        rest_base_override: Some(fake.url()),
        ..options()
    };
    let client = ActionsClient::new("https://github.com/my-org/my-repo", pat(), options).unwrap();
    assert!(client.config_url().is_hosted());
    let session = client.open_session(1, "pod").await.unwrap();
    session.close().await.unwrap();
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/repos/my-org/my-repo/actions/runners/registration-token")
    );
    assert_eq!(
        fake.registered_urls(),
        vec!["https://github.com/my-org/my-repo".to_string()]
    );
}

#[tokio::test]
async fn wrong_pat_is_credentials_rejected_without_the_secret() {
    let fake = start_fake().await;
    let client = ActionsClient::new(
        &fake.configure_url("my-org"),
        Credentials::Token("ghp_wrong_secret_value".into()),
        options(),
    )
    .unwrap();
    let err = client.open_session(1, "pod").await.unwrap_err();
    assert!(err.kind() == FailureKind::CredentialsRejected, "{err}");
    assert_eq!(err.status(), Some(401));
    assert!(!format!("{err} {err:?}").contains("ghp_wrong_secret_value"));
    assert_eq!(
        client.metrics().retries(),
        0,
        "401 on the registration token is not retried"
    );
    // Rotated: the same client heals in place; unusable credentials change nothing.
    let unusable = client
        .replace_credentials(Credentials::Token("  ".into()))
        .await
        .unwrap_err();
    assert_eq!(unusable.kind(), FailureKind::InvalidInput);
    client.replace_credentials(pat()).await.unwrap();
    exercise(&fake, &client).await;
}

/// An App uninstalled or suspended (installation token 403) is rejected credentials; once
/// reinstalled, the same client goes on.
#[tokio::test]
async fn an_uninstalled_app_is_rejected_credentials_until_reinstalled() {
    let fake = start_fake_with(app_fake_config()).await;
    fake.inject_fault(Endpoint::AppToken, Fault::status(403, 1));
    let app = Credentials::App {
        app_id: APP_ID.into(),
        installation_id: INSTALLATION_ID,
        private_key: PKCS8.into(),
    };
    let client = ActionsClient::new(&fake.configure_url("my-org"), app, options()).unwrap();
    let err = client.open_session(1, "pod").await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::CredentialsRejected, "{err}");
    // Reinstalled: the next attempt passes with the same client.
    exercise(&fake, &client).await;
    fake.shutdown().await;
}

#[tokio::test]
async fn admin_token_refreshed_before_expiry_and_after_rejection() {
    // exp within the 60 s margin: every admin call refreshes first.
    let fake = start_fake_tuned(|c| c.admin_token_ttl = Duration::from_secs(30)).await;
    let (client, session) = open_session(&fake).await;
    assert_eq!(fake.stats().runner_registrations, 1);
    session.close().await.unwrap();
    assert_eq!(
        fake.stats().runner_registrations,
        2,
        "near-expiry token refreshed"
    );
    assert_eq!(client.metrics().admin_token_refreshes(), 2);

    // long-lived token: reused; rejected token (401): refreshed once, call retried
    let fake = start_fake().await;
    let client = self::client(&fake, "my-org", options());
    let session = client.open_session(1, "pod").await.unwrap();
    fake.expire_admin_tokens();
    session.close().await.unwrap();
    assert_eq!(fake.stats().runner_registrations, 2);
    assert_eq!(fake.stats().sessions_deleted, 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_admin_refresh() {
    let fake = start_fake().await;
    fake.set_latency(Duration::from_millis(50));
    let client = client(&fake, "my-org", options());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.connect().await })
        })
        .collect();
    for t in tasks {
        let url = t.await.unwrap().unwrap();
        assert_eq!(url, fake.actions_service_url());
    }
    assert_eq!(fake.stats().runner_registrations, 1);
    assert_eq!(fake.stats().registration_tokens_issued, 1);
}

#[tokio::test]
async fn queue_401_refreshes_the_session_and_retries_once() {
    let (fake, client, session) = fake_with_session().await;
    fake.queue_jobs(1);
    fake.expire_queue_tokens();
    let msg = session.get_message(0, 3).await.unwrap().unwrap();
    assert_eq!(fake.stats().sessions_refreshed, 1);
    assert_eq!(client.metrics().session_refreshes(), 1);
    fake.expire_queue_tokens();
    session.delete_message(msg.message_id).await.unwrap();
    fake.expire_queue_tokens();
    let JobMessage::Available(job) = &msg.jobs[0] else {
        panic!("not available")
    };
    let got = session
        .acquire_jobs(&[job.common.runner_request_id])
        .await
        .unwrap();
    assert_eq!(got, vec![job.common.runner_request_id]);
    assert_eq!(fake.stats().sessions_refreshed, 3);

    // ack and acquire concurrently after an expiry: one refresh serves both
    fake.expire_queue_tokens();
    let ids = fake.queue_jobs(1);
    let (a, b) = tokio::join!(session.acquire_jobs(&ids), session.acquire_jobs(&ids));
    a.unwrap();
    b.unwrap();
    assert_eq!(fake.stats().sessions_refreshed, 4);
    session.close().await.unwrap();
}

#[tokio::test]
async fn session_conflict_is_waited_out() {
    let fake = start_fake().await;
    fake.add_stale_session("old-pod", Duration::from_millis(800));
    let client = client(&fake, "my-org", options());
    let session = client.open_session(1, "new-pod").await.unwrap();
    assert!(client.metrics().session_conflicts() >= 1);
    assert!(fake.stats().session_conflicts >= 1);
    assert_eq!(fake.session().unwrap().owner_name, "new-pod");
    session.close().await.unwrap();

    // a conflict that outlives the configured period is a transient SessionConflict error
    let fake = start_fake().await;
    fake.add_stale_session("old-pod", Duration::from_secs(600));
    let client = self::client(
        &fake,
        "my-org",
        ClientOptions {
            session_conflict_timeout: Duration::from_millis(300),
            ..options()
        },
    );
    let err = client.open_session(1, "new-pod").await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::Conflict, "{err}");
    assert_eq!(err.status(), Some(409));
}

#[tokio::test]
async fn server_errors_and_429_are_retried_and_counted() {
    let fake = start_fake().await;
    let client = client(&fake, "my-org", options());
    fake.inject_fault(Endpoint::RegistrationToken, Fault::status(502, 1));
    fake.inject_fault(Endpoint::CreateSession, Fault::status(503, 2));
    fake.inject_fault(Endpoint::CreateSession, Fault::status(429, 1));
    let session = client.open_session(1, "pod").await.unwrap();
    assert_eq!(client.metrics().retries(), 4);
    fake.inject_fault(Endpoint::GetMessage, Fault::drop_connection(1));
    fake.inject_fault(Endpoint::GetMessage, Fault::status(500, 1));
    assert!(session.get_message(0, 1).await.unwrap().is_none());
    assert_eq!(client.metrics().retries(), 6);

    // 501 is not retried
    fake.inject_fault(Endpoint::DeleteMessage, Fault::status(501, 1));
    let err = session.delete_message(1).await.unwrap_err();
    assert_eq!(err.status(), Some(501));
    assert!(!err.kind().is_transient());
    assert_eq!(client.metrics().retries(), 6);

    // retries run out: the last status comes back, transient
    fake.inject_fault(Endpoint::AcquireJobs, Fault::status(500, 10));
    let err = session.acquire_jobs(&[1]).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.kind().is_transient(), "{err}");
    assert_eq!(client.metrics().retries(), 10);
    fake.clear_faults();

    // runner-registration 401/403 are retried like the Go listener does
    let fake2 = start_fake().await;
    let client2 = self::client(&fake2, "my-org", options());
    fake2.inject_fault(Endpoint::RunnerRegistration, Fault::status(403, 2));
    client2.connect().await.unwrap();
    assert_eq!(client2.metrics().retries(), 2);
    session.close().await.unwrap();
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (fake, client, session) = fake_with_session().await;
    fake.inject_fault(
        Endpoint::DeleteMessage,
        Fault {
            status: Some(429),
            retry_after: Some(1),
            ..Fault::default()
        },
    );
    let started = Instant::now();
    let err = session.delete_message(12345).await.unwrap_err();
    // Retry-After 1 s, not the 5 ms backoff (lower bound only: no flaky upper bound).
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.kind() == FailureKind::NotFound,
        "the retry reached the service: {err}"
    );
    assert_eq!(client.metrics().retries(), 1);
}

#[tokio::test]
async fn requests_time_out_and_are_retried() {
    let fake = start_fake().await;
    let client = client(
        &fake,
        "my-org",
        ClientOptions {
            request_timeout: Duration::from_millis(400),
            ..options()
        },
    );
    let session = client.open_session(1, "pod").await.unwrap();
    fake.inject_fault(
        Endpoint::AcquireJobs,
        Fault::delay(Duration::from_secs(3), 1),
    );
    let ids = fake.queue_jobs(1);
    assert_eq!(session.acquire_jobs(&ids).await.unwrap(), ids);
    assert_eq!(client.metrics().retries(), 1);

    // the long poll has its own timeout, above the service's hold
    let fake = start_fake_tuned(|c| c.long_poll_hold = Duration::from_secs(30)).await;
    let client = self::client(
        &fake,
        "my-org",
        ClientOptions {
            long_poll_timeout: Duration::from_millis(300),
            retry: RetryPolicy {
                max_retries: 0,
                ..options().retry
            },
            ..options()
        },
    );
    let session = client.open_session(1, "pod").await.unwrap();
    let err = session.get_message(0, 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                timed_out: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.kind().is_transient());
}

#[tokio::test]
async fn get_message_is_cancel_safe() {
    let fake = start_fake_tuned(|c| c.long_poll_hold = Duration::from_secs(30)).await;
    let (_client, session) = open_session(&fake).await;
    let cancelled =
        tokio::time::timeout(Duration::from_millis(200), session.get_message(0, 1)).await;
    assert!(cancelled.is_err(), "the poll was still held");
    fake.queue_jobs(1);
    let msg = session.get_message(0, 1).await.unwrap().unwrap();
    assert_eq!(msg.jobs.len(), 1);
    session.close().await.unwrap();
}

#[tokio::test]
async fn bom_malformed_and_unknown_messages() {
    let (fake, _client, session) = fake_with_session().await;

    fake.enqueue_raw_message(
        "RunnerScaleSetJobMessages",
        "\u{feff}[{\"messageType\":\"JobAssigned\",\"runnerRequestId\":5},{\"messageType\":\"JobFuture\"}]",
    );
    let msg = session.get_message(0, 1).await.unwrap().unwrap();
    assert_eq!(msg.jobs.len(), 1);
    assert_eq!(msg.skipped_jobs, 1);
    session.delete_message(msg.message_id).await.unwrap();

    fake.enqueue_raw_message("RunnerScaleSetJobMessages", "{not json");
    let err = session.get_message(msg.message_id, 1).await.unwrap_err();
    let FailureKind::Poison { message_id: poison } = err.kind() else {
        panic!("message id in the error: {err}")
    };
    assert!(poison > msg.message_id);
    assert!(err.to_string().contains(&poison.to_string()), "{err}");
    assert!(!err.kind().is_transient());
    session.delete_message(poison).await.unwrap(); // ack and skip

    fake.enqueue_raw_message(
        "RunnerScaleSetJobMessages",
        "[{\"messageType\":\"JobStarted\",\"runnerRequestId\":\"x\"}]",
    );
    let err = session.get_message(poison, 1).await.unwrap_err();
    assert!(err.to_string().contains("JobStarted"), "{err}");
    let FailureKind::Poison {
        message_id: bad_job,
    } = err.kind()
    else {
        panic!("{err}")
    };
    session.delete_message(bad_job).await.unwrap();

    fake.enqueue_raw_message("SomethingNew", "whatever");
    let other = session.get_message(bad_job, 1).await.unwrap().unwrap();
    assert_eq!(other.message_type, "SomethingNew");
    assert!(other.jobs.is_empty());
    session.delete_message(other.message_id).await.unwrap();
    assert!(
        session
            .get_message(other.message_id, 1)
            .await
            .unwrap()
            .is_none()
    );
    session.close().await.unwrap();
}

#[tokio::test]
async fn tls_fake_needs_the_configured_root_ca() {
    let fake = start_fake_tuned(|c| c.tls = true).await;
    assert!(fake.url().starts_with("https://"));
    let without = client(&fake, "my-org", options());
    let err = without.connect().await.unwrap_err();
    assert!(matches!(err, Error::Transport { tls: true, .. }), "{err}");
    assert!(!err.kind().is_transient());
    assert_eq!(
        without.metrics().retries(),
        0,
        "certificate errors are not retried"
    );

    let with = client(
        &fake,
        "my-org",
        ClientOptions {
            root_ca_pem: fake.ca_pem(),
            ..options()
        },
    );
    exercise(&fake, &with).await;
}

/// A TCP relay standing in for an HTTP proxy: forwards every connection to `target`
/// (hyper accepts the absolute-form request line a client sends to a proxy).
async fn relay_proxy(target: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test]
async fn proxy_settings_are_applied() {
    let fake = start_fake().await;
    let fake_addr = fake.url().trim_start_matches("http://").to_owned();
    let port = fake_addr.rsplit(':').next().unwrap().to_owned();
    let (proxy_url, connections) = relay_proxy(fake_addr).await;
    // A host that does not resolve: reachable only through the proxy.
    let config_url = format!("http://ghes.invalid:{port}/my-org");
    let proxy = |no_proxy: &str| {
        let proxy_url = proxy_url.clone();
        let no_proxy = no_proxy.to_owned();
        ProxyConfig::from_lookup(move |k| match k {
            "http_proxy" => Some(proxy_url.clone()),
            "no_proxy" => Some(no_proxy.clone()),
            _ => None,
        })
        .unwrap()
    };
    let client = ActionsClient::new(
        &config_url,
        pat(),
        ClientOptions {
            proxy: Some(proxy("example.com")),
            ..options()
        },
    )
    .unwrap();
    // REST goes through the proxy; the Actions service (loopback) is reached directly.
    let session = client.open_session(1, "pod").await.unwrap();
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    session.close().await.unwrap();

    // no_proxy names the host: direct connection, which cannot resolve
    let direct = ActionsClient::new(
        &config_url,
        pat(),
        ClientOptions {
            proxy: Some(proxy("ghes.invalid")),
            retry: RetryPolicy {
                max_retries: 0,
                ..options().retry
            },
            ..options()
        },
    )
    .unwrap();
    let before = connections.load(std::sync::atomic::Ordering::SeqCst);
    let err = direct.connect().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
}

fn assert_no_secret(err: &Error) {
    let text = format!("{err} | {err:?}");
    for secret in [PAT, "BEGIN", "PRIVATE KEY", "RemoteAuth ", "Bearer "] {
        assert!(!text.contains(secret), "{secret:?} leaked: {text}");
    }
}

#[tokio::test]
async fn no_secret_in_errors_or_debug_output() {
    let (fake, client, session) = fake_with_session().await;
    let mut errors = Vec::new();
    fake.inject_fault(Endpoint::AcquireJobs, Fault::status(400, 1));
    errors.push(session.acquire_jobs(&[1]).await.unwrap_err());
    fake.inject_fault(Endpoint::GetMessage, Fault::drop_connection(10));
    errors.push(session.get_message(0, 1).await.unwrap_err());
    fake.clear_faults();
    fake.expire_queue_tokens();
    fake.inject_fault(Endpoint::RefreshSession, Fault::status(401, 10));
    errors.push(session.delete_message(1).await.unwrap_err());
    fake.clear_faults();
    errors.push(ActionsClient::new("https://github.com/a/b/c", pat(), options()).unwrap_err());
    errors.push(
        ActionsClient::new(
            "https://github.com/org",
            Credentials::App {
                app_id: "1".into(),
                installation_id: 1,
                private_key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".into(),
            },
            options(),
        )
        .unwrap_err(),
    );
    for err in &errors {
        assert_no_secret(err);
    }
    let debug = format!("{client:?} {session:?} {:?}", pat());
    assert!(!debug.contains(PAT), "{debug}");
    let app = Credentials::App {
        app_id: "1".into(),
        installation_id: 1,
        private_key: PKCS1.into(),
    };
    assert!(!format!("{app:?}").contains("BEGIN"));
    session.close().await.unwrap();
}

/// The listener spawns these futures on a multi-threaded runtime.
#[allow(dead_code, clippy::let_underscore_future)]
fn futures_are_send_and_types_are_sync(
    client: ActionsClient,
    session: github_client::MessageSession,
) {
    fn send<T: Send>(_: T) {}
    fn sync<T: Send + Sync>(_: &T) {}
    sync(&client);
    sync(&session);
    send(client.open_session(1, "pod"));
    send(client.connect());
    send(session.get_message(0, 1));
    send(session.delete_message(1));
    send(session.acquire_jobs(&[1]));
    send(session.close());
}

#[tokio::test]
async fn the_scale_set_is_read_without_a_session() {
    let fake = start_fake().await;
    let client = client(&fake, "my-org", options());
    client.check_registration_token().await.unwrap();
    let set = client.get_runner_scale_set(1).await.unwrap();
    assert_eq!(set.id, 1);
    assert!(
        !set.name.is_empty() && !set.runner_group_name.is_empty(),
        "{set:?}"
    );
    let missing = client.get_runner_scale_set(999).await.unwrap_err();
    assert!(
        matches!(missing, Error::NotFound(_)) && missing.to_string().contains("999"),
        "{missing}"
    );
    assert_eq!(fake.stats().sessions_created, 0);
}
