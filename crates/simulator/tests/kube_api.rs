//! The fake Kubernetes API over real HTTPS, with a plain HTTP client: it must answer the
//! way a real API server with the listener Role does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::https_client;
use reqwest::StatusCode;
use serde_json::{Value, json};
use simulator::kube_api::{FakeKubeApi, Fault, FaultAction, merge_patch};

const NS: &str = "arc-runners";
const SET: &str = "my-set";
const MERGE: &str = "application/merge-patch+json";

async fn start(controller: bool) -> (FakeKubeApi, reqwest::Client) {
    let fake = FakeKubeApi::builder()
        .namespace(NS)
        .service_account_namespace("arc-systems")
        .service_account("my-set-listener")
        .allowed_set_name(SET)
        .with_runner_controller(controller)
        .start()
        .await
        .unwrap();
    let client = https_client(fake.ca_pem());
    (fake, client)
}

async fn send(
    fake: &FakeKubeApi,
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = client
        .request(method, format!("{}{path}", fake.url()))
        .bearer_auth(fake.token())
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn patch(
    fake: &FakeKubeApi,
    client: &reqwest::Client,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    send(
        fake,
        client,
        reqwest::Method::PATCH,
        path,
        Some(MERGE),
        &body.to_string(),
    )
    .await
}

fn set_path() -> String {
    FakeKubeApi::set_path(NS, SET)
}

#[tokio::test]
async fn requires_the_bearer_token() {
    let (fake, client) = start(false).await;
    fake.put_ephemeral_runner_set(NS, SET, 1);
    for auth in [None, Some("Bearer wrong"), Some("Basic Zm9vOmJhcg==")] {
        let mut req = client
            .patch(format!("{}{}", fake.url(), set_path()))
            .header("content-type", MERGE)
            .body(r#"{"spec":{"replicas":2}}"#);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "Unauthorized");
        assert_eq!(body["code"], 401);
    }
    assert_eq!(
        fake.get_ephemeral_runner_set(NS, SET).unwrap()["spec"]["replicas"],
        1
    );
}

#[tokio::test]
async fn only_the_listener_role_is_granted() {
    let (fake, client) = start(false).await;
    fake.put_ephemeral_runner_set(NS, SET, 1);
    fake.put_ephemeral_runner_set(NS, "other", 1);
    let user = "system:serviceaccount:arc-systems:my-set-listener";
    let g = "actions.github.com";
    let base = format!("/apis/{g}/v1alpha1/namespaces/{NS}");
    use reqwest::Method as M;
    let cases: Vec<(M, String, Option<&str>, String)> = vec![
        (
            M::GET,
            set_path(),
            None,
            format!(
                "ephemeralrunnersets.{g} \"{SET}\" is forbidden: User \"{user}\" cannot get resource \"ephemeralrunnersets\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::GET,
            format!("{base}/ephemeralrunnersets"),
            None,
            format!(
                "ephemeralrunnersets.{g} is forbidden: User \"{user}\" cannot list resource \"ephemeralrunnersets\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::GET,
            format!("{base}/ephemeralrunners?watch=true"),
            None,
            format!(
                "ephemeralrunners.{g} is forbidden: User \"{user}\" cannot watch resource \"ephemeralrunners\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::GET,
            format!("{base}/ephemeralrunners/r1/status"),
            None,
            format!(
                "ephemeralrunners.{g} \"r1\" is forbidden: User \"{user}\" cannot get resource \"ephemeralrunners/status\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::POST,
            format!("{base}/ephemeralrunners"),
            Some("application/json"),
            format!(
                "ephemeralrunners.{g} is forbidden: User \"{user}\" cannot create resource \"ephemeralrunners\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::PUT,
            set_path(),
            Some("application/json"),
            format!(
                "ephemeralrunnersets.{g} \"{SET}\" is forbidden: User \"{user}\" cannot update resource \"ephemeralrunnersets\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::DELETE,
            format!("{base}/ephemeralrunners/r1"),
            None,
            format!(
                "ephemeralrunners.{g} \"r1\" is forbidden: User \"{user}\" cannot delete resource \"ephemeralrunners\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::PATCH,
            FakeKubeApi::set_path(NS, "other"),
            Some(MERGE),
            format!(
                "ephemeralrunnersets.{g} \"other\" is forbidden: User \"{user}\" cannot patch resource \"ephemeralrunnersets\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::PATCH,
            FakeKubeApi::set_path("elsewhere", SET),
            Some(MERGE),
            format!(
                "ephemeralrunnersets.{g} \"{SET}\" is forbidden: User \"{user}\" cannot patch resource \"ephemeralrunnersets\" in API group \"{g}\" in the namespace \"elsewhere\""
            ),
        ),
        (
            M::PATCH,
            format!("{}/status", set_path()),
            Some(MERGE),
            format!(
                "ephemeralrunnersets.{g} \"{SET}\" is forbidden: User \"{user}\" cannot patch resource \"ephemeralrunnersets/status\" in API group \"{g}\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::PATCH,
            format!("/api/v1/namespaces/{NS}/pods/p"),
            Some(MERGE),
            format!(
                "pods \"p\" is forbidden: User \"{user}\" cannot patch resource \"pods\" in API group \"\" in the namespace \"{NS}\""
            ),
        ),
        (
            M::GET,
            "/version".to_owned(),
            None,
            format!("forbidden: User \"{user}\" cannot get path \"/version\""),
        ),
    ];
    for (method, path, ct, message) in cases {
        let (status, body) = send(&fake, &client, method.clone(), &path, ct, "{}").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "Forbidden");
        assert_eq!(body["code"], 403);
        assert_eq!(body["message"], message.as_str(), "{method} {path}");
    }
    // 403 comes before existence: a missing set with the allowed name is a 404, a missing
    // set with another name a 403.
    let (status, body) = patch(
        &fake,
        &client,
        &FakeKubeApi::set_path(NS, "nope"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["details"],
        json!({"name": "nope", "group": g, "kind": "ephemeralrunnersets"})
    );
}

#[tokio::test]
async fn only_merge_patches_are_accepted() {
    let (fake, client) = start(false).await;
    fake.put_ephemeral_runner_set(NS, SET, 1);
    for ct in [
        None,
        Some("application/json"),
        Some("application/strategic-merge-patch+json"),
        Some("application/json-patch+json"),
        Some("application/apply-patch+yaml"),
    ] {
        let (status, body) = send(
            &fake,
            &client,
            reqwest::Method::PATCH,
            &set_path(),
            ct,
            r#"{"spec":{"replicas":5}}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(body["reason"], "UnsupportedMediaType");
        assert_eq!(body["code"], 415);
    }
    let (status, _) = send(
        &fake,
        &client,
        reqwest::Method::PATCH,
        &set_path(),
        Some("application/merge-patch+json; charset=utf-8"),
        r#"{"spec":{"replicas":5}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn merge_patch_semantics_and_versions() {
    let (fake, client) = start(false).await;
    fake.put_ephemeral_runner_set(NS, SET, 1);
    let before = fake.get_ephemeral_runner_set(NS, SET).unwrap();

    let (status, body) = patch(
        &fake,
        &client,
        &set_path(),
        json!({"spec": {"replicas": 3, "patchID": 4}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["spec"]["replicas"], 3);
    assert_eq!(body["spec"]["patchID"], 4);
    assert_eq!(body["metadata"]["generation"], 2);
    assert_ne!(
        body["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert_eq!(fake.get_ephemeral_runner_set(NS, SET).unwrap(), body);

    // null deletes (the Go listener's way of writing replicas 0).
    let (_, body) = patch(
        &fake,
        &client,
        &set_path(),
        json!({"spec": {"replicas": null, "patchID": 5}}),
    )
    .await;
    assert!(body["spec"].get("replicas").is_none());
    assert_eq!(body["spec"]["ephemeralRunnerSpec"], json!({}));
    assert_eq!(body["metadata"]["generation"], 3);

    // A no-op changes nothing, not even the resourceVersion.
    let rv = body["metadata"]["resourceVersion"].clone();
    let (_, same) = patch(&fake, &client, &set_path(), json!({"spec": {"patchID": 5}})).await;
    assert_eq!(same["metadata"]["resourceVersion"], rv);

    // Status changes through the main resource are ignored (status subresource).
    let (_, body) = patch(
        &fake,
        &client,
        &set_path(),
        json!({"status": {"currentReplicas": 9}, "metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    assert_eq!(body["status"]["currentReplicas"], 0);
    assert_eq!(body["metadata"]["labels"], json!({"a": "b"}));
    assert_eq!(
        body["metadata"]["generation"], 3,
        "metadata changes do not bump generation"
    );

    // A stale resourceVersion precondition conflicts.
    let (status, body) = patch(
        &fake,
        &client,
        &set_path(),
        json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["reason"], "Conflict");
    assert_eq!(
        body["message"],
        format!(
            "Operation cannot be fulfilled on ephemeralrunnersets.actions.github.com \"{SET}\": the object has been modified; please apply your changes to the latest version and try again"
        )
    );

    // Schema types are enforced.
    let (status, body) = patch(
        &fake,
        &client,
        &set_path(),
        json!({"spec": {"replicas": "three"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.replicas");

    // Not JSON.
    let (status, body) = send(
        &fake,
        &client,
        reqwest::Method::PATCH,
        &set_path(),
        Some(MERGE),
        "{not json",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["reason"], "BadRequest");
}

#[tokio::test]
async fn runner_status_subresource() {
    let (fake, client) = start(false).await;
    fake.put_ephemeral_runner(NS, "r1");
    let path = FakeKubeApi::runner_status_path(NS, "r1");
    let (status, body) = patch(
        &fake,
        &client,
        &path,
        json!({"status": {"jobRequestId": 7, "jobDisplayName": "build"}, "spec": {"ignored": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["jobRequestId"], 7);
    assert_eq!(body["status"]["phase"], "Pending");
    assert_eq!(
        body["spec"],
        json!({}),
        "the status subresource ignores spec"
    );
    assert_eq!(body["metadata"]["generation"], 1);

    let (status, body) = patch(
        &fake,
        &client,
        &FakeKubeApi::runner_status_path(NS, "gone"),
        json!({"status": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "ephemeralrunners.actions.github.com \"gone\" not found", "reason": "NotFound",
               "details": {"name": "gone", "group": "actions.github.com", "kind": "ephemeralrunners"}, "code": 404})
    );

    let (status, body) = patch(
        &fake,
        &client,
        &path,
        json!({"status": {"jobRequestId": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    assert!(fake.remove_ephemeral_runner(NS, "r1"));
    assert!(fake.get_ephemeral_runner(NS, "r1").is_none());
}

/// The scale patch the fault test sends.
fn two_replicas() -> serde_json::Value {
    json!({"spec": {"replicas": 2}})
}

#[tokio::test]
async fn faults_latency_and_request_log() {
    let (fake, client) = start(false).await;
    fake.put_ephemeral_runner_set(NS, SET, 1);
    fake.inject_fault(Fault::patch(set_path(), FaultAction::Status(503)).times(1));
    fake.inject_fault(Fault::patch(set_path(), FaultAction::DropConnection).times(1));
    fake.inject_fault(Fault::patch("/apis/*", FaultAction::Status(429)).times(1));

    let (status, body) = patch(&fake, &client, &set_path(), two_replicas()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "ServiceUnavailable");
    let dropped = client
        .patch(format!("{}{}", fake.url(), set_path()))
        .bearer_auth(fake.token())
        .header("content-type", MERGE)
        .body("{}")
        .send()
        .await;
    assert!(dropped.is_err());
    let (status, body) = patch(&fake, &client, &set_path(), json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["details"]["retryAfterSeconds"], 1);
    let (status, _) = patch(&fake, &client, &set_path(), two_replicas()).await;
    assert_eq!(status, StatusCode::OK);

    let log = fake.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 0, 429, 200]);
    assert!(
        log.iter()
            .all(|r| r.method == "PATCH" && r.path == set_path())
    );
    assert_eq!(log[3].json(), two_replicas());
    assert_eq!(log[3].content_type.as_deref(), Some(MERGE));

    // Latency and delays keep requests in flight together.
    fake.set_latency(Duration::from_millis(200));
    fake.reset_max_in_flight();
    let path = set_path();
    let (a, b, c) = tokio::join!(
        patch(&fake, &client, &path, json!({})),
        patch(&fake, &client, &path, json!({})),
        patch(&fake, &client, &path, json!({})),
    );
    for (status, _) in [a, b, c] {
        assert_eq!(status, StatusCode::OK);
    }
    assert!(fake.max_in_flight() >= 2, "{}", fake.max_in_flight());
}

#[tokio::test]
async fn runner_controller_creates_and_deletes_runners() {
    let (fake, client) = start(true).await;
    fake.put_ephemeral_runner_set(NS, SET, 0);
    let (_, body) = patch(
        &fake,
        &client,
        &set_path(),
        json!({"spec": {"replicas": 3}}),
    )
    .await;
    assert_eq!(body["status"]["currentReplicas"], 3);
    let runners = fake.runners(NS);
    assert_eq!(runners.len(), 3);
    for r in &runners {
        assert!(
            r.starts_with(&format!("{SET}-runner-")) && r.len() == SET.len() + "-runner-".len() + 5,
            "{r}"
        );
        let obj = fake.get_ephemeral_runner(NS, r).unwrap();
        assert_eq!(obj["metadata"]["ownerReferences"][0]["name"], SET);
    }
    // A busy runner survives a scale-down.
    patch(
        &fake,
        &client,
        &FakeKubeApi::runner_status_path(NS, &runners[1]),
        json!({"status": {"jobRequestId": 1}}),
    )
    .await;
    patch(
        &fake,
        &client,
        &set_path(),
        json!({"spec": {"replicas": null}}),
    )
    .await;
    assert_eq!(fake.runners(NS), vec![runners[1].clone()]);
    fake.remove_ephemeral_runner(NS, &runners[1]);
    assert!(fake.runners(NS).is_empty());
}

#[tokio::test]
async fn kubeconfig_points_at_the_server() {
    let (fake, _) = start(false).await;
    let yaml = fake.kubeconfig_yaml();
    assert!(yaml.contains(&format!("server: {}", fake.url())));
    assert!(yaml.contains(&format!("token: {}", fake.token())));
    assert!(yaml.contains("certificate-authority-data: "));
    let path = std::env::temp_dir().join(format!("fake-kubeconfig-{}", fake.addr().port()));
    fake.write_kubeconfig(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), yaml);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn merge_patch_is_rfc7386() {
    let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1]});
    merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
    assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
}

#[tokio::test]
async fn dry_run_authorizes_validates_and_answers_but_stores_nothing() {
    let (fake, client) = start(true).await;
    fake.put_ephemeral_runner_set(NS, SET, 1);
    let before = fake.get_ephemeral_runner_set(NS, SET).unwrap();
    let dry = |path: &str| format!("{path}?dryRun=All");

    // Answered as if applied; the stored set, its runners and resourceVersion stay.
    let (status, body) = patch(
        &fake,
        &client,
        &dry(&set_path()),
        json!({"spec": {"replicas": 3, "patchID": 4}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["spec"]["replicas"], 3);
    assert_eq!(fake.get_ephemeral_runner_set(NS, SET).unwrap(), before);
    assert!(
        fake.runners(NS).is_empty(),
        "the controller ran on a dry run"
    );

    // Validation still applies.
    let (status, body) = patch(
        &fake,
        &client,
        &dry(&set_path()),
        json!({"spec": {"replicas": "three"}}),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );

    // RBAC first: a set the Role does not name is 403, an unknown runner 404 after it; and
    // only `All` is a dry-run value.
    let refused = [
        (
            dry(&FakeKubeApi::set_path(NS, "other-set")),
            json!({"spec": {"replicas": 1}}),
            StatusCode::FORBIDDEN,
        ),
        (
            dry(&FakeKubeApi::runner_status_path(NS, "no-such-runner")),
            json!({"status": {"jobRequestId": 1}}),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("{}?dryRun=Some", set_path()),
            json!({"spec": {"replicas": 3}}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, body, want) in refused {
        let (status, answer) = patch(&fake, &client, &path, body).await;
        assert_eq!(status, want, "{path}: {answer}");
    }
    assert_eq!(fake.get_ephemeral_runner_set(NS, SET).unwrap(), before);
}
