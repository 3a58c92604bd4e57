//! No credential or token reaches the listener's output (issue 8): a full scenario at debug
//! level, with token refreshes and failing calls, then a scan of stdout, stderr, exit
//! errors, `/metrics`, the probes and the exported spans for every secret that crossed the
//! wire.
//!
//! The secrets are taken from the wire itself: the listener talks to the fake Actions
//! service through a recording reverse proxy on loopback, which keeps every token the
//! service issued (response bodies) and every credential the listener sent (the
//! `Authorization` headers).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use simulator::actions::{Endpoint, Fault};
use simulator::support::{
    ListenerProcess, environment_command, free_addr, http_get, listener_command,
    observed_environment, wait_until,
};
use simulator::workload::{
    DEMO_TOKEN, Environment, EnvironmentOptions, WorkloadOptions, run_workload, wait_for_replicas,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");

/// What the proxy saw: response bodies and request `Authorization` values.
#[derive(Default)]
struct Seen {
    bodies: Vec<String>,
    authorizations: Vec<String>,
}

/// A one-request-per-connection HTTP/1.1 reverse proxy in front of `upstream` that records
/// traffic and rewrites the upstream's base URL in bodies to its own, so that the Actions
/// service and queue URLs the service hands out also lead through it.
struct RecordingProxy {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

impl RecordingProxy {
    async fn start(upstream_base: String) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (proxy_base, state) = (base.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (upstream, proxy_base, state) =
                    (upstream_base.clone(), proxy_base.clone(), state.clone());
                tokio::spawn(async move {
                    let _ = relay(socket, &upstream, &proxy_base, &state).await;
                });
            }
        });
        RecordingProxy { base, seen }
    }
}

/// Read one HTTP message head and its `Content-Length` body.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

/// The head with `Connection: close` and, when given, a new `Content-Length`.
fn rewrite_head(head: &str, content_length: Option<usize>) -> String {
    let mut lines: Vec<String> = head
        .trim_end()
        .lines()
        .filter(|l| {
            let name = l.split(':').next().unwrap_or("").trim();
            let replaced = name.eq_ignore_ascii_case("connection")
                || (content_length.is_some() && name.eq_ignore_ascii_case("content-length"));
            !replaced
        })
        .map(str::to_owned)
        .collect();
    lines.push("Connection: close".to_owned());
    if let Some(len) = content_length {
        lines.push(format!("Content-Length: {len}"));
    }
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

async fn relay(
    mut client: TcpStream,
    upstream_base: &str,
    proxy_base: &str,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    let (head, body) = read_message(&mut client).await?;
    if let Some(auth) = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_owned())
    }) {
        seen.lock().unwrap().authorizations.push(auth);
    }
    let addr = upstream_base.trim_start_matches("http://");
    let mut upstream = TcpStream::connect(addr).await?;
    upstream
        .write_all(rewrite_head(&head, None).as_bytes())
        .await?;
    upstream.write_all(&body).await?;
    let (response_head, response_body) = read_message(&mut upstream).await?;
    let text = String::from_utf8_lossy(&response_body).into_owned();
    seen.lock().unwrap().bodies.push(text.clone());
    let rewritten = text.replace(upstream_base, proxy_base);
    client
        .write_all(rewrite_head(&response_head, Some(rewritten.len())).as_bytes())
        .await?;
    client.write_all(rewritten.as_bytes()).await?;
    client.shutdown().await
}

/// Every string under a `token` or `messageQueueAccessToken` key.
fn collect_tokens(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("token" | "messageQueueAccessToken", Value::String(s)) if !s.is_empty() => {
                        out.insert(s.clone());
                    }
                    _ => collect_tokens(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_tokens(v, out)),
        _ => {}
    }
}

/// The secrets and distinctive fragments of them (a JWT's signature, a token's tail), so a
/// partial leak is caught too.
fn needles(secrets: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in secrets {
        out.insert(s.clone());
        if let Some(signature) = s.rsplit('.').next().filter(|p| p.len() >= 16) {
            out.insert(signature.to_owned());
        }
        if s.len() >= 24 {
            out.insert(s[s.len() - 16..].to_owned());
        }
    }
    out
}

/// No needle in the listener's `stdout`, `stderr` or the `others` (what, text), and no
/// private key in its output.
fn assert_no_leaks(
    stdout: &str,
    stderr: &str,
    others: &[(&str, &str)],
    needles: &BTreeSet<String>,
) {
    let mut haystacks = vec![("stdout", stdout), ("stderr", stderr)];
    haystacks.extend_from_slice(others);
    let leaks = find_leaks(&haystacks, needles);
    assert!(leaks.is_empty(), "secrets leaked: {leaks:?}");
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
}

/// Starts the listener with its stdout and stderr in two files in `dir`.
fn start_split(command: tokio::process::Command, dir: &std::path::Path) -> ListenerProcess {
    let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
    ListenerProcess::start(command, &stdout, Some(&stderr)).expect("spawn")
}

/// The stdout and stderr of the listener [`start_split`] started in `dir`, which must have
/// logged at debug level.
fn debug_output(dir: &std::path::Path) -> (String, String) {
    let stdout = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(
        stdout.contains("DEBUG") || stderr.contains("DEBUG"),
        "not at debug level"
    );
    (stdout, stderr)
}

fn find_leaks(haystacks: &[(&str, &str)], needles: &BTreeSet<String>) -> Vec<String> {
    let mut leaks = Vec::new();
    for (what, text) in haystacks {
        for needle in needles {
            if text.contains(needle.as_str()) {
                leaks.push(format!("{what} holds a secret ({} chars)", needle.len()));
            }
        }
    }
    leaks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_output_errors_metrics_or_spans_at_debug_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (env, sink) = observed_environment(dir.path()).await.expect("environment");
    let metrics_addr = env.options.metrics_addr.expect("metrics on");
    let proxy = RecordingProxy::start(env.actions.url()).await;
    let mut config = env.listener_config();
    config["configure_url"] = json!(format!("{}/demo-org", proxy.base));
    env.write_config(&config).expect("config");

    let mut child = start_split(environment_command(LISTENER, &env), dir.path());

    // Jobs, then every token refreshed once and failing calls (errors carry URLs).
    let workload = WorkloadOptions::waves(
        vec![2, 3],
        Duration::from_secs(1),
        Duration::from_millis(300),
    )
    .failing_every(2);
    let summary = run_workload(&env, &workload, |_| {}).await;
    assert!(!summary.timed_out, "{summary:?}");
    env.actions.expire_queue_tokens();
    env.actions.expire_admin_tokens();
    env.actions
        .inject_fault(Endpoint::GetMessage, Fault::status(500, 2));
    env.actions
        .inject_fault(Endpoint::AcquireJobs, Fault::status(503, 1));
    let more = WorkloadOptions {
        waves: vec![2],
        ..workload.clone()
    };
    let summary = run_workload(&env, &more, |_| {}).await;
    assert!(!summary.timed_out, "{summary:?}");
    assert!(wait_for_replicas(&env, 0, Duration::from_secs(20)).await);
    let stats = env.actions.stats();
    assert!(
        stats.sessions_refreshed >= 1,
        "no session refresh: {stats:?}"
    );
    assert!(
        stats.runner_registrations >= 2,
        "no admin token refresh: {stats:?}"
    );
    let spans = sink.wait_for_spans(21, Duration::from_secs(20)).await;

    let metrics = http_get(metrics_addr, "/metrics").await;
    let ready = http_get(metrics_addr, "/readyz").await;
    let health = http_get(metrics_addr, "/healthz").await;
    assert!(metrics.contains("gha_listener_messages_total"), "{metrics}");
    let stopped = child
        .terminate(Duration::from_secs(30))
        .await
        .expect("sigterm");
    assert!(stopped.exit.is_some(), "exit");
    assert_eq!(stopped.code(), Some(0));

    // A rejected PAT (waited out in place: degraded, then SIGTERM), and a bad config
    // holding a PAT (exit 1).
    let rejected_pat = "ghp_rejectedButSecret0000000000000000000";
    let mut bad = env.listener_config();
    bad["configure_url"] = json!(format!("{}/demo-org", proxy.base));
    bad["github_token"] = json!(rejected_pat);
    let bad_path = dir.path().join("rejected.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let mut rejected_command = listener_command(LISTENER);
    rejected_command
        .env("LISTENER_CONFIG_PATH", &bad_path)
        .env("KUBECONFIG", &env.kubeconfig_path);
    let mut rejected =
        ListenerProcess::start(rejected_command, &dir.path().join("rejected.log"), None)
            .expect("spawn");
    let degraded = wait_until(Duration::from_secs(60), || {
        rejected.output().contains("listener degraded")
    })
    .await;
    assert!(degraded, "not degraded: {}", rejected.output());
    let stopped = rejected
        .terminate(Duration::from_secs(30))
        .await
        .expect("sigterm");
    assert_eq!(stopped.code(), Some(0), "{}", rejected.output());
    let mut invalid = bad.clone();
    invalid["max_runners"] = json!(-1);
    let invalid_path = dir.path().join("invalid.json");
    std::fs::write(&invalid_path, invalid.to_string()).unwrap();
    let invalid_run = listener_command(LISTENER)
        .env("LISTENER_CONFIG_PATH", &invalid_path)
        .output()
        .await
        .expect("run");
    assert_eq!(invalid_run.status.code(), Some(1));

    // The secrets: what the service issued, what the listener sent, and the configured ones.
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    {
        let seen = proxy.seen.lock().unwrap();
        for body in &seen.bodies {
            if let Ok(v) = serde_json::from_str::<Value>(body) {
                collect_tokens(&v, &mut secrets);
            }
        }
        for auth in &seen.authorizations {
            let credential = auth.split_once(' ').map(|(_, c)| c).unwrap_or(auth);
            secrets.insert(credential.to_owned());
        }
    }
    secrets.insert(DEMO_TOKEN.to_owned());
    secrets.insert(rejected_pat.to_owned());
    secrets.insert(env.kube.token().to_owned());
    let kinds = json!({
        "issued_tokens_and_sent_credentials": secrets.len(),
        "jwt_like": secrets.iter().filter(|s| s.starts_with("eyJ")).count(),
    });
    assert!(
        secrets.len() >= 6,
        "too few secrets seen on the wire: {}",
        secrets.len()
    );
    assert!(
        secrets.iter().any(|s| s.starts_with("eyJ")),
        "no admin JWT seen"
    );
    let needles = needles(&secrets);
    // The scan itself works: a planted secret is found.
    let planted = format!("token={}", secrets.iter().next().unwrap());
    assert!(!find_leaks(&[("control", &planted)], &needles).is_empty());

    let (stdout, stderr) = debug_output(dir.path());
    let rejected_text = rejected.output();
    assert!(
        rejected_text.contains("credentials_rejected"),
        "{rejected_text}"
    );
    let invalid_text = format!(
        "{}{}",
        String::from_utf8_lossy(&invalid_run.stdout),
        String::from_utf8_lossy(&invalid_run.stderr)
    );
    assert!(invalid_text.contains("max_runners"), "{invalid_text}");
    let span_text = format!("{spans:?}");
    assert_no_leaks(
        &stdout,
        &stderr,
        &[
            ("/metrics", &metrics),
            ("/readyz", &ready),
            ("/healthz", &health),
            ("rejected-PAT output", &rejected_text),
            ("invalid-config exit output", &invalid_text),
            ("exported spans", &span_text),
        ],
        &needles,
    );
    let figures = json!({
        "secrets": kinds,
        "needles": needles.len(),
        "bytes_scanned": stdout.len() + stderr.len() + metrics.len() + rejected_text.len()
            + invalid_text.len() + span_text.len(),
        "leaks": 0,
    });
    println!("FIGURES secrets_scan {figures}");
    if let Some(dir) = std::env::var_os("CHAOS_REPORT_DIR") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("secrets_scan.json"),
            figures.to_string(),
        );
    }
}

/// Issue 13: with the credentials in Azure Key Vault, neither the secret's value, the client
/// assertion (signed or federated) nor the Entra ID token reaches the output, at debug level,
/// on success or on a failed start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_vault_secret_in_output_at_debug_level() {
    use simulator::azure::{CLIENT_KEY_PEM, FakeAzure, FakeAzureConfig, OTHER_KEY_PEM};
    const TENANT: &str = "tenant-secrets-test";
    const CLIENT: &str = "client-secrets-test";
    const NAME: &str = "arc-credentials";

    let dir = tempfile::tempdir().expect("tempdir");
    let azure = FakeAzure::start(FakeAzureConfig::default())
        .await
        .expect("fake azure");
    let cert = azure
        .register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)
        .expect("register");
    let cert_path = dir.path().join("kv.pem");
    std::fs::write(&cert_path, format!("{cert}{CLIENT_KEY_PEM}")).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, azure.ca_pem()).unwrap();
    let federated = "federated-token-secrets-test-0123456789abcdef";
    azure.accept_federated_token(TENANT, CLIENT, federated);
    let token_file = dir.path().join("federated");
    std::fs::write(&token_file, federated).unwrap();
    let secret_value = json!({ "github_token": DEMO_TOKEN }).to_string();
    azure.set_secret(NAME, &secret_value);

    let metrics_addr = free_addr().expect("free port");
    let mut options = EnvironmentOptions::new(dir.path());
    options.metrics_addr = Some(metrics_addr);
    options.log_level = "debug".into();
    let env = Environment::start(options).await.expect("environment");
    let vault_config = |certificate_path: &std::path::Path| {
        let mut config = env.listener_config();
        config["github_token"] = json!("");
        config["vault_type"] = json!("azure_key_vault");
        config["vault_lookup_key"] = json!(NAME);
        config["azure_key_vault"] = json!({
            "tenant_id": TENANT, "client_id": CLIENT, "url": azure.url(),
            "certificate_path": certificate_path,
        });
        config
    };
    let command = || {
        let mut command = environment_command(LISTENER, &env);
        command
            .env("SSL_CERT_FILE", &ca_path)
            .env("AZURE_AUTHORITY_HOST", azure.url());
        command
    };
    let run_to_exit = |mut command: tokio::process::Command| async move {
        let out = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("exit")
            .expect("run");
        assert_eq!(out.status.code(), Some(1));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // A certificate run, to a session, with /metrics scraped.
    env.write_config(&vault_config(&cert_path)).unwrap();
    let mut child = start_split(command(), dir.path());
    assert!(
        simulator::support::wait_until(Duration::from_secs(60), || env
            .actions
            .stats()
            .sessions_active
            == 1)
        .await,
        "no session"
    );
    let metrics = http_get(metrics_addr, "/metrics").await;
    let stopped = child.terminate(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stopped.code(), Some(0));

    // A rejected certificate (waited out in place: degraded, then SIGTERM), then a failed
    // start: a federated token with a secret that is not app config JSON (its value must
    // not be quoted).
    let wrong_cert = azure
        .register_certificate("elsewhere", "elsewhere", OTHER_KEY_PEM)
        .unwrap();
    let wrong_path = dir.path().join("wrong.pem");
    std::fs::write(&wrong_path, format!("{wrong_cert}{OTHER_KEY_PEM}")).unwrap();
    env.write_config(&vault_config(&wrong_path)).unwrap();
    let rejected_log = dir.path().join("rejected.log");
    let mut waiting = ListenerProcess::start(command(), &rejected_log, None).expect("spawn");
    assert!(
        simulator::support::wait_until(Duration::from_secs(60), || waiting
            .output()
            .contains("credentials_unavailable"))
        .await,
        "not degraded: {}",
        waiting.output()
    );
    let stopped = waiting.terminate(Duration::from_secs(30)).await.unwrap();
    assert_eq!(stopped.code(), Some(0));
    let rejected = waiting.output();
    let not_app_config = r#"{"github_app_installation_id":"ghp_notAnAppConfigButSecret000"}"#;
    azure.set_secret(NAME, not_app_config);
    let mut federated_config = vault_config(std::path::Path::new(""));
    federated_config["azure_key_vault"]["certificate_path"] = json!("");
    env.write_config(&federated_config).unwrap();
    let mut federated_command = command();
    federated_command.env("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    let invalid = run_to_exit(federated_command).await;
    assert!(invalid.contains(NAME), "{invalid}");

    let mut secrets: BTreeSet<String> = azure.issued_tokens().into_iter().collect();
    let assertions = azure.received_assertions();
    assert!(
        assertions.iter().any(|a| a.starts_with("eyJ"))
            && assertions.iter().any(|a| a == federated),
        "both kinds of assertion were sent"
    );
    assert!(secrets.len() >= 2, "tokens issued: {}", secrets.len());
    secrets.extend(assertions);
    secrets.insert(secret_value);
    secrets.insert(DEMO_TOKEN.to_owned());
    secrets.insert("ghp_notAnAppConfigButSecret000".to_owned());
    let needles = needles(&secrets);
    let (stdout, stderr) = debug_output(dir.path());
    assert_no_leaks(
        &stdout,
        &stderr,
        &[
            ("/metrics", &metrics),
            ("rejected certificate, waited out", &rejected),
            ("invalid secret exit", &invalid),
        ],
        &needles,
    );
}
