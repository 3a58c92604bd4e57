//! The run-attempt resolver against the fake's runs endpoint, over real HTTP (and TLS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use github_client::{
    ActionsClient, ClientOptions, Credentials, ProxyConfig, RunAttemptOutcome, RunAttemptResolver,
};
use simulator::actions::{
    Endpoint, FakeActions, FakeActionsConfig, FakeAuth, FakeRateLimit, Fault,
};

const APP_ID: &str = "424242";
const INSTALLATION_ID: i64 = 77;
const PKCS8: &str = include_str!("fixtures/app_key_pkcs8.pem");
const PUBLIC: &str = include_str!("fixtures/app_key_public.pem");

fn options(fake: &FakeActions) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        proxy: Some(ProxyConfig::default()),
        force_ghes: Some(false),
        root_ca_pem: fake.ca_pem(),
        ..ClientOptions::default()
    }
}

async fn fake(tls: bool, auth: FakeAuth) -> FakeActions {
    FakeActions::start(FakeActionsConfig {
        tls,
        auth,
        ..FakeActionsConfig::default()
    })
    .await
    .unwrap()
}

fn pat_fake_auth() -> FakeAuth {
    FakeAuth::Pat {
        token: "ghp_fake".into(),
    }
}

fn resolver(fake: &FakeActions) -> RunAttemptResolver {
    let client = ActionsClient::new(
        &fake.configure_url("my-org"),
        Credentials::Token("ghp_fake".into()),
        options(fake),
    )
    .unwrap();
    RunAttemptResolver::new(client)
}

fn lookups(fake: &FakeActions) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.endpoint == Some(Endpoint::WorkflowRun))
        .map(|r| r.path)
        .collect()
}

#[tokio::test]
async fn attempts_are_read_over_tls_and_cached_per_run() {
    let fake = fake(true, pat_fake_auth()).await;
    fake.set_run_attempt(200, 2);
    fake.set_run_attempt(300, 3);
    let resolver = resolver(&fake);
    let first = resolver.resolve("my-org", "my-repo", 200).await;
    assert_eq!(first.outcome, RunAttemptOutcome::Ok(2));
    assert!(!first.cached);
    // Three jobs of run 300 at once, then run 200 again: one request per run.
    let (a, b, c) = tokio::join!(
        resolver.resolve("my-org", "my-repo", 300),
        resolver.resolve("my-org", "my-repo", 300),
        resolver.resolve("my-org", "my-repo", 300),
    );
    for r in [a, b, c] {
        assert_eq!(r.outcome, RunAttemptOutcome::Ok(3));
    }
    assert_eq!([a, b, c].iter().filter(|r| !r.cached).count(), 1);
    assert!(resolver.resolve("my-org", "my-repo", 200).await.cached);
    assert_eq!(
        lookups(&fake),
        [
            "/api/v3/repos/my-org/my-repo/actions/runs/200",
            "/api/v3/repos/my-org/my-repo/actions/runs/300"
        ]
    );
    // Unknown runs exist at attempt 1 in the fake.
    assert_eq!(
        resolver
            .resolve("my-org", "my-repo", 7)
            .await
            .outcome
            .attempt(),
        1
    );
}

#[tokio::test]
async fn denied_and_not_found_fall_back_to_attempt_one() {
    let fake = fake(false, pat_fake_auth()).await;
    fake.set_run_attempt(1, 4);
    fake.set_run_attempt(2, 4);
    fake.inject_fault(Endpoint::WorkflowRun, Fault::status(404, 1));
    fake.inject_fault(Endpoint::WorkflowRun, Fault::status(403, 1));
    let resolver = resolver(&fake);
    let not_found = resolver.resolve("my-org", "my-repo", 1).await.outcome;
    assert_eq!(not_found, RunAttemptOutcome::NotFound);
    assert_eq!(not_found.attempt(), 1);
    assert_eq!(not_found.as_str(), "not_found");
    let denied = resolver.resolve("my-org", "my-repo", 2).await.outcome;
    assert_eq!(denied, RunAttemptOutcome::Denied);
    assert_eq!(denied.as_str(), "denied");
    // A 429 is rate_limited, and stops lookups for the Retry-After.
    fake.inject_fault(
        Endpoint::WorkflowRun,
        Fault {
            status: Some(429),
            retry_after: Some(60),
            ..Fault::default()
        },
    );
    assert_eq!(
        resolver.resolve("my-org", "my-repo", 3).await.outcome,
        RunAttemptOutcome::RateLimited
    );
    assert_eq!(
        resolver.resolve("my-org", "my-repo", 4).await.outcome,
        RunAttemptOutcome::RateLimited
    );
    assert_eq!(lookups(&fake).len(), 3, "no request while rate limited");
}

#[tokio::test]
async fn lookups_stop_below_the_rate_limit_floor_until_the_reset() {
    let fake = fake(false, pat_fake_auth()).await;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    // 10% of 1000 is 100: answers leave 101, 100 (still fine), then 99 (below: pause).
    fake.set_rate_limit(Some(FakeRateLimit {
        limit: 1000,
        remaining: 102,
        reset,
    }));
    fake.set_run_attempt(2, 2);
    let resolver = resolver(&fake);
    for run in 1..=5 {
        resolver.resolve("my-org", "my-repo", run).await;
    }
    assert_eq!(
        lookups(&fake).len(),
        3,
        "the lookup that left 99 was the last"
    );
    assert_eq!(
        resolver.resolve("my-org", "my-repo", 6).await.outcome,
        RunAttemptOutcome::RateLimited
    );
}

#[tokio::test]
async fn an_app_uses_its_installation_token() {
    let fake = fake(
        false,
        FakeAuth::App {
            app_id: APP_ID.into(),
            installation_id: INSTALLATION_ID,
            public_key_pem: PUBLIC.into(),
        },
    )
    .await;
    fake.set_run_attempt(9, 2);
    let client = ActionsClient::new(
        &fake.configure_url("my-org/my-repo"),
        Credentials::App {
            app_id: APP_ID.into(),
            installation_id: INSTALLATION_ID,
            private_key: PKCS8.into(),
        },
        options(&fake),
    )
    .unwrap();
    let resolver = RunAttemptResolver::new(client);
    assert_eq!(
        resolver.resolve("my-org", "my-repo", 9).await.outcome,
        RunAttemptOutcome::Ok(2)
    );
    assert_eq!(fake.stats().app_tokens_issued, 1);
}
