//! The real `ghalistener` with its GitHub credentials in Azure Key Vault (issue 13), against
//! the simulator's fake Entra ID and Key Vault over HTTPS: certificate and workload identity,
//! PAT and App secrets, and the failures an operator must be able to fix from the message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use github_client::Credentials;
use key_vault::{AzureEnvironment, KeyVaultClient, KeyVaultConfig, KeyVaultOptions};
use listener_bin::credentials::{CredentialsError, CredentialsSource, KeyVaultSecret};
use serde_json::{Value, json};
use simulator::actions::FakeAuth;
use simulator::azure::{CLIENT_KEY_PEM, FakeAzure, FakeAzureConfig, OTHER_KEY_PEM};
use simulator::support::{ListenerProcess, environment_command, wait_until};
use simulator::workload::{DEMO_TOKEN, Environment, EnvironmentOptions};
use tokio::process::Command;

const LISTENER: &str = env!("CARGO_BIN_EXE_ghalistener");
const TENANT: &str = "2f4a9c3e-0000-4000-8000-00000000aaaa";
const CLIENT: &str = "7d1b5e2f-0000-4000-8000-00000000bbbb";
const SECRET_NAME: &str = "arc-github-credentials";
const APP_KEY_PEM: &str = include_str!("../../simulator/tests/fixtures/test_app_key.pem");
const APP_PUBLIC_PEM: &str = include_str!("../../simulator/tests/fixtures/test_app_key.pub.pem");

/// The fake vault with one registered certificate client, and the files the pod would mount.
struct Vault {
    azure: FakeAzure,
    /// The certificate and key, as the chart mounts them for `certificate_path`.
    certificate_path: PathBuf,
    /// The fake's CA, handed to the listener as `SSL_CERT_FILE`.
    ca_path: PathBuf,
}

async fn vault(dir: &Path) -> Vault {
    let azure = FakeAzure::start(FakeAzureConfig::default()).await.unwrap();
    let cert = azure
        .register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)
        .unwrap();
    let certificate_path = dir.join("key-vault.pem");
    std::fs::write(&certificate_path, format!("{cert}{CLIENT_KEY_PEM}")).unwrap();
    let ca_path = dir.join("azure-ca.pem");
    std::fs::write(&ca_path, azure.ca_pem()).unwrap();
    Vault {
        azure,
        certificate_path,
        ca_path,
    }
}

impl Vault {
    /// Puts ARC's app config with the PAT `token` in the vault; returns the secret's value.
    fn set_pat_secret(&self, token: &str) -> String {
        let secret = json!({ "github_token": token }).to_string();
        self.azure.set_secret(SECRET_NAME, &secret);
        secret
    }
}

/// ARC's config.json for `env`, its credentials in the vault instead of inline.
fn vault_config(env: &Environment, vault: &Vault, certificate_path: &Path) -> Value {
    let mut config = env.listener_config();
    config["github_token"] = json!("");
    config["vault_type"] = json!("azure_key_vault");
    config["vault_lookup_key"] = json!(SECRET_NAME);
    config["azure_key_vault"] = json!({
        "tenant_id": TENANT,
        "client_id": CLIENT,
        "url": vault.azure.url(),
        "certificate_path": certificate_path,
    });
    config
}

fn command(env: &Environment, vault: &Vault) -> Command {
    let mut command = environment_command(LISTENER, env);
    command
        .env("SSL_CERT_FILE", &vault.ca_path)
        .env("AZURE_AUTHORITY_HOST", vault.azure.url());
    command
}

async fn environment(dir: &Path, github_auth: Option<FakeAuth>) -> Environment {
    let mut options = EnvironmentOptions::new(dir);
    options.github_auth = github_auth;
    options.log_level = "debug".into();
    Environment::start(options).await.unwrap()
}

/// A directory with the vault and an environment (GitHub accepting the demo PAT) in it.
async fn setup() -> (tempfile::TempDir, Vault, Environment) {
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path()).await;
    let env = environment(dir.path(), None).await;
    (dir, vault, env)
}

/// Runs until the listener holds a message session, then SIGTERM; returns its output.
async fn runs_with_a_session(env: &Environment, command: Command, dir: &Path) -> String {
    let log = dir.join("listener.log");
    let mut child = ListenerProcess::start(command, &log, None).unwrap();
    let connected = wait_until(Duration::from_secs(60), || {
        env.actions.stats().sessions_active == 1
    })
    .await;
    let stopped = child.terminate(Duration::from_secs(30)).await.unwrap();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(connected, "no session; log:\n{output}");
    assert_eq!(stopped.code(), Some(0), "{output}");
    output
}

/// Runs `command` to its exit; its exit code and stdout + stderr.
async fn run_to_exit(mut command: Command) -> (Option<i32>, String) {
    let out: Output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the listener did not exit")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs the listener with `config` to its exit (a start-up failure); returns stdout + stderr.
async fn fails_with(env: &Environment, vault: &Vault, config: &Value) -> String {
    env.write_config(config).unwrap();
    let (code, text) = run_to_exit(command(env, vault)).await;
    assert_eq!(code, Some(1), "{text}");
    text
}

fn assert_no_azure_secrets(output: &str, vault: &Vault, secret_values: &[&str]) {
    for token in vault.azure.issued_tokens() {
        assert!(!output.contains(&token), "an Entra token leaked:\n{output}");
    }
    for assertion in vault.azure.received_assertions() {
        assert!(
            !output.contains(&assertion),
            "an assertion leaked:\n{output}"
        );
    }
    for value in secret_values {
        assert!(!output.contains(value), "a secret value leaked:\n{output}");
    }
    assert!(!output.contains("PRIVATE KEY-----"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_a_pat_secret() {
    let (dir, vault, env) = setup().await;
    let secret = vault.set_pat_secret(DEMO_TOKEN);
    env.write_config(&vault_config(&env, &vault, &vault.certificate_path))
        .unwrap();
    let output = runs_with_a_session(&env, command(&env, &vault), dir.path()).await;
    assert_eq!(vault.azure.counts().secrets_served, 1);
    assert_no_azure_secrets(&output, &vault, &[DEMO_TOKEN, &secret]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_an_app_secret() {
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path()).await;
    vault.azure.set_secret(
        SECRET_NAME,
        &json!({
            "github_app_id": "424242",
            "github_app_installation_id": 99,
            "github_app_private_key": APP_KEY_PEM,
        })
        .to_string(),
    );
    let app = FakeAuth::App {
        app_id: "424242".into(),
        installation_id: 99,
        public_key_pem: APP_PUBLIC_PEM.into(),
    };
    let env = environment(dir.path(), Some(app)).await;
    env.write_config(&vault_config(&env, &vault, &vault.certificate_path))
        .unwrap();
    let output = runs_with_a_session(&env, command(&env, &vault), dir.path()).await;
    assert_no_azure_secrets(&output, &vault, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity() {
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path()).await;
    vault.set_pat_secret(DEMO_TOKEN);
    let federated = "eyJhbGciOiJSUzI1NiJ9.federated-service-account-token.sig";
    vault
        .azure
        .accept_federated_token(TENANT, CLIENT, federated);
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, federated).unwrap();
    let env = environment(dir.path(), None).await;
    // As the webhook sets it up: no certificate, the ids in the environment.
    let mut config = vault_config(&env, &vault, Path::new(""));
    config["azure_key_vault"] = json!({ "url": vault.azure.url() });
    env.write_config(&config).unwrap();
    let mut command = command(&env, &vault);
    command
        .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
        .env("AZURE_CLIENT_ID", CLIENT)
        .env("AZURE_TENANT_ID", TENANT);
    let output = runs_with_a_session(&env, command, dir.path()).await;
    assert_no_azure_secrets(&output, &vault, &[DEMO_TOKEN, federated]);
}

/// Runs `ghalistener check` with the pod's config and environment; exit code and output.
async fn check(env: &Environment, vault: &Vault) -> (Option<i32>, String) {
    let mut command = command(env, vault);
    command.arg("check");
    run_to_exit(command).await
}

/// `ghalistener check` reads the vault as the listener does: a missing secret fails the
/// credentials line naming it (and skips the GitHub checks that need credentials); once
/// the secret is there, the credentials read and GitHub issues a registration token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_credentials_from_the_vault() {
    let (_dir, vault, env) = setup().await;
    env.write_config(&vault_config(&env, &vault, &vault.certificate_path))
        .unwrap();

    let (code, text) = check(&env, &vault).await;
    assert_ne!(code, Some(0), "{text}");
    let credentials = text
        .lines()
        .find(|l| l.starts_with("FAIL credentials:"))
        .unwrap_or_else(|| panic!("no failed credentials line:\n{text}"));
    assert!(
        credentials.contains(SECRET_NAME) && credentials.contains("not found"),
        "{text}"
    );
    assert!(text.contains("skip github-registration-token:"), "{text}");

    let secret = vault.set_pat_secret(DEMO_TOKEN);
    let (_, text) = check(&env, &vault).await;
    assert!(
        text.contains("ok   credentials: read (personal access token)"),
        "{text}"
    );
    assert!(text.contains("ok   github-registration-token:"), "{text}");
    assert_eq!(vault.azure.counts().secrets_served, 1);
    assert_eq!(env.actions.stats().sessions_created, 0);
    assert_no_azure_secrets(&text, &vault, &[DEMO_TOKEN, &secret]);
}

/// Holds the listener `hold` while the vault cannot give the credentials: it must stay up,
/// degraded `credentials_unavailable` with `what` in its log; then `fix` clears it and the
/// listener opens its session without a restart. Returns the log.
async fn waits_out(
    env: &Environment,
    vault: &Vault,
    dir: &Path,
    what: &str,
    fix: impl FnOnce(),
) -> String {
    let log = dir.join("listener-waiting.log");
    let mut command = command(env, vault);
    command.env("GHALISTENER_RECOVERY_MAX_BACKOFF_SECS", "1");
    let mut child = ListenerProcess::start(command, &log, None).unwrap();
    let degraded = wait_until(Duration::from_secs(60), || {
        child
            .output()
            .contains("reason=\"credentials_unavailable\"")
    })
    .await;
    let before = vault.azure.counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(degraded, "not degraded:\n{}", child.output());
    assert!(
        child.try_exit().unwrap().is_none(),
        "exited:\n{}",
        child.output()
    );
    assert!(child.output().contains(what), "{}", child.output());
    // Waiting, not spinning: about one attempt a second at a 1 s cap.
    let after = vault.azure.counts();
    let attempts = after.token_requests + after.secret_requests
        - before.token_requests
        - before.secret_requests;
    assert!(attempts <= 12, "{attempts} requests in 3 s");
    assert_eq!(env.actions.stats().sessions_created, 0);

    fix();
    let connected = wait_until(Duration::from_secs(30), || {
        env.actions.stats().sessions_active == 1
    })
    .await;
    let stopped = child.terminate(Duration::from_secs(30)).await.unwrap();
    let output = child.output();
    assert!(connected, "no session after the fix:\n{output}");
    assert!(output.contains("listener recovered"), "{output}");
    assert_eq!(stopped.code(), Some(0), "{output}");
    output
}

/// What the vault can fix is waited out in place (no crash loop), naming what to fix; then
/// it heals. Here: the secret is not there yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_waited_out_until_it_is_created() {
    let (dir, vault, env) = setup().await;
    let secret = json!({ "github_token": DEMO_TOKEN }).to_string();

    // The secret is not in the vault yet.
    env.write_config(&vault_config(&env, &vault, &vault.certificate_path))
        .unwrap();
    let output = waits_out(&env, &vault, dir.path(), "not found", || {
        vault.azure.set_secret(SECRET_NAME, &secret)
    })
    .await;
    assert!(output.contains(SECRET_NAME), "{output}");
    assert_no_azure_secrets(&output, &vault, &[DEMO_TOKEN, &secret]);
}

/// A certificate Entra ID does not know for the application (AADSTS700027).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_entra_id_does_not_know_is_waited_out_until_replaced() {
    let (dir, vault, env) = setup().await;
    let secret = vault.set_pat_secret(DEMO_TOKEN);
    let wrong = dir.path().join("wrong.pem");
    let unregistered = vault
        .azure
        .register_certificate("another-tenant", "another-client", OTHER_KEY_PEM)
        .unwrap();
    std::fs::write(&wrong, format!("{unregistered}{OTHER_KEY_PEM}")).unwrap();
    env.write_config(&vault_config(&env, &vault, &wrong))
        .unwrap();
    let output = waits_out(&env, &vault, dir.path(), "AADSTS700027", || {
        // The operator puts the application's certificate in the mounted secret; the
        // kubelet updates the file in place and the next token request reads it.
        std::fs::copy(&vault.certificate_path, &wrong).unwrap();
    })
    .await;
    assert!(output.contains("rejected the client assertion"), "{output}");
    assert_no_azure_secrets(&output, &vault, &[DEMO_TOKEN, &secret]);
}

/// What cannot work as written exits 1 naming it: a vault secret that is not ARC's app
/// config, config mistakes (before anything is asked of Azure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_failures_say_what_to_fix() {
    let (_dir, vault, env) = setup().await;
    let good = vault_config(&env, &vault, &vault.certificate_path);

    // The secret is there but is not ARC's app config.
    vault.azure.set_secret(
        SECRET_NAME,
        r#"{"github_app_id":"1","token":"ghp_notAppConfig"}"#,
    );
    let text = fails_with(&env, &vault, &good).await;
    assert!(
        text.contains(SECRET_NAME) && text.contains("github_app_installation_id"),
        "{text}"
    );
    assert!(!text.contains("ghp_notAppConfig"), "{text}");

    // Config mistakes are named before anything is asked of Azure.
    let before = vault.azure.counts().token_requests;
    let mut no_key = good.clone();
    no_key["vault_lookup_key"] = json!("");
    let text = fails_with(&env, &vault, &no_key).await;
    assert!(text.contains("vault_lookup_key"), "{text}");
    let mut unknown = good.clone();
    unknown["vault_type"] = json!("hashicorp_vault");
    let text = fails_with(&env, &vault, &unknown).await;
    assert!(
        text.contains("vault_type")
            && text.contains("hashicorp_vault")
            && text.contains("azure_key_vault"),
        "{text}"
    );
    assert_eq!(vault.azure.counts().token_requests, before);
}

#[tokio::test]
async fn load_reads_the_rotated_secret() {
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path()).await;
    vault.set_pat_secret("ghp_before");
    let client = KeyVaultClient::new(
        &KeyVaultConfig {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            url: vault.azure.url(),
            certificate_path: vault.certificate_path.display().to_string(),
            proxy: Default::default(),
        },
        &AzureEnvironment {
            authority_host: Some(vault.azure.url()),
            ..Default::default()
        },
        KeyVaultOptions {
            extra_roots_pem: Some(vault.azure.ca_pem()),
            ..Default::default()
        },
    )
    .unwrap();
    let source = CredentialsSource::KeyVault(Arc::new(KeyVaultSecret {
        client,
        name: SECRET_NAME.into(),
    }));
    let token = |c: Credentials| match c {
        Credentials::Token(t) => t.expose_secret().to_owned(),
        Credentials::App { .. } => panic!("not a PAT"),
    };
    assert_eq!(token(source.load().await.unwrap()), "ghp_before");

    vault.set_pat_secret("ghp_after");
    assert_eq!(token(source.load().await.unwrap()), "ghp_after");

    vault.azure.set_secret(SECRET_NAME, "ghp_not_json");
    let err = source.load().await.unwrap_err();
    assert!(matches!(err, CredentialsError::VaultSecret { .. }), "{err}");
    assert!(!err.to_string().contains("ghp_not_json"), "{err}");
    // One token served every read.
    assert_eq!(vault.azure.counts().tokens_issued, 1);
}
