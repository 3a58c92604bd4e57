//! The Key Vault client over HTTPS against the simulator's fake Entra ID and Key Vault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use key_vault::{AzureEnvironment, Error, KeyVaultClient, KeyVaultConfig, KeyVaultOptions};
use retry::{Backoff, Classify, FailureKind};
use simulator::azure::{CLIENT_KEY_PEM, FakeAzure, FakeAzureConfig, OTHER_KEY_PEM};
use simulator::proxy::{ConnectProxy, PROXIED_HOST};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0f2a4c1e-1111-2222-3333-444455556666";
const SECRET_VALUE: &str = r#"{"github_token":"ghp_vault_only_value"}"#;

struct Setup {
    fake: FakeAzure,
    dir: tempfile::TempDir,
}

async fn setup(config: FakeAzureConfig) -> Setup {
    let fake = FakeAzure::start(config).await.unwrap();
    Setup {
        fake,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// A PEM file with `cert_pem` and `key_pem`, as ARC mounts it.
    fn certificate_file(&self, name: &str, cert_pem: &str, key_pem: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{cert_pem}{key_pem}")).unwrap();
        path.display().to_string()
    }

    fn registered_certificate_file(&self) -> String {
        let cert = self
            .fake
            .register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)
            .unwrap();
        self.certificate_file("client.pem", &cert, CLIENT_KEY_PEM)
    }

    fn config(&self, certificate_path: &str) -> KeyVaultConfig {
        KeyVaultConfig {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            url: self.fake.url(),
            certificate_path: certificate_path.into(),
            proxy: Default::default(),
        }
    }

    fn env(&self) -> AzureEnvironment {
        AzureEnvironment {
            authority_host: Some(self.fake.url()),
            ..Default::default()
        }
    }

    fn client(&self, config: &KeyVaultConfig, env: &AzureEnvironment) -> KeyVaultClient {
        KeyVaultClient::new(config, env, options(&self.fake)).unwrap()
    }

    /// A client that signs in with the certificate registered on the application.
    fn certificate_client(&self) -> KeyVaultClient {
        let path = self.registered_certificate_file();
        self.client(&self.config(&path), &self.env())
    }

    /// A projected service-account token file holding `contents`; the fake accepts
    /// `token` as the application's federated credential.
    fn federated_token_file(&self, token: &str, contents: &str) -> std::path::PathBuf {
        self.fake.accept_federated_token(TENANT, CLIENT, token);
        let path = self.dir.path().join("azure-identity-token");
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The error a client with `config` gets reading a secret; the read must fail.
    async fn read_error(&self, config: &KeyVaultConfig) -> Error {
        self.client(config, &self.env())
            .get_secret("x")
            .await
            .unwrap_err()
    }
}

fn options(fake: &FakeAzure) -> KeyVaultOptions {
    KeyVaultOptions {
        extra_roots_pem: Some(fake.ca_pem()),
        backoff: Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
            Duration::from_millis(5),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn certificate_reads_the_secret_caches_the_token_and_sees_rotation() {
    let s = setup(FakeAzureConfig::default()).await;
    s.fake.set_secret("arc-github", SECRET_VALUE);
    let client = s.certificate_client();

    let value = client.get_secret("arc-github").await.unwrap();
    assert_eq!(value.expose_secret(), SECRET_VALUE);
    assert!(!format!("{client:?}").contains("ghp_"));

    // Rotated in the vault: the next read sees it, with the cached token.
    s.fake
        .set_secret("arc-github", r#"{"github_token":"ghp_rotated"}"#);
    let value = client.get_secret("arc-github").await.unwrap();
    assert_eq!(value.expose_secret(), r#"{"github_token":"ghp_rotated"}"#);
    let counts = s.fake.counts();
    assert_eq!(counts.tokens_issued, 1, "{counts:?}");
    assert_eq!(counts.secrets_served, 2, "{counts:?}");

    // A revoked token is replaced once, transparently.
    s.fake.revoke_tokens();
    client.get_secret("arc-github").await.unwrap();
    assert_eq!(s.fake.counts().tokens_issued, 2);
}

#[tokio::test]
async fn the_challenge_names_the_resource() {
    let s = setup(FakeAzureConfig {
        vault_resource: "https://vault.azure.cn".into(),
        ..Default::default()
    })
    .await;
    s.fake.set_secret("arc-github", SECRET_VALUE);
    let client = s.certificate_client();
    let value = client.get_secret("arc-github").await.unwrap();
    assert_eq!(value.expose_secret(), SECRET_VALUE);
    // One token for the default resource, refused; one for the challenged one.
    assert_eq!(s.fake.counts().tokens_issued, 2);
    client.get_secret("arc-github").await.unwrap();
    assert_eq!(s.fake.counts().tokens_issued, 2);
}

#[tokio::test]
async fn workload_identity_reads_the_token_file_on_every_request() {
    let s = setup(FakeAzureConfig::default()).await;
    s.fake.set_secret("arc-github", SECRET_VALUE);
    let token_file = s.federated_token_file("federated-1", "federated-1\n");
    let mut config = s.config("");
    config.tenant_id = String::new();
    config.client_id = String::new();
    let env = AzureEnvironment {
        federated_token_file: Some(token_file.clone()),
        client_id: Some(CLIENT.into()),
        tenant_id: Some(TENANT.into()),
        authority_host: Some(s.fake.url()),
    };
    let client = s.client(&config, &env);
    assert_eq!(
        client
            .get_secret("arc-github")
            .await
            .unwrap()
            .expose_secret(),
        SECRET_VALUE
    );

    // The kubelet rotates the projected token; the next token request sends the new one.
    s.fake.accept_federated_token(TENANT, CLIENT, "federated-2");
    std::fs::write(&token_file, "federated-2").unwrap();
    s.fake.revoke_tokens();
    client.get_secret("arc-github").await.unwrap();
    assert_eq!(s.fake.counts().tokens_issued, 2);

    // A token Entra ID does not accept is a rejected assertion.
    std::fs::write(&token_file, "not-federated").unwrap();
    s.fake.revoke_tokens();
    let err = client.get_secret("arc-github").await.unwrap_err();
    assert!(matches!(err, Error::AssertionRejected { .. }), "{err}");
    assert!(!err.to_string().contains("not-federated"), "{err}");
}

/// `azure_key_vault.proxy` carries both the Entra ID and the Key Vault calls: the fake
/// stands under a name only the proxy can reach, and the proxy saw a tunnel for each.
#[tokio::test]
async fn the_proxy_carries_the_entra_id_and_key_vault_calls() {
    let s = setup(FakeAzureConfig::default()).await;
    s.fake.set_secret("arc-github", SECRET_VALUE);
    let token_file = s.federated_token_file("federated-1", "federated-1");
    let fake_addr: std::net::SocketAddr =
        s.fake.url().trim_start_matches("https://").parse().unwrap();
    let proxy = ConnectProxy::start(fake_addr).await.unwrap();
    let proxied_url = format!("https://{PROXIED_HOST}:{}", fake_addr.port());

    let mut config = s.config("");
    config.url = proxied_url.clone();
    config.proxy.https_proxy = Some(proxy.url().parse().unwrap());
    let env = AzureEnvironment {
        federated_token_file: Some(token_file),
        authority_host: Some(proxied_url),
        ..Default::default()
    };
    let client = s.client(&config, &env);
    let secret = client.get_secret("arc-github").await.unwrap();
    assert_eq!(secret.expose_secret(), SECRET_VALUE);
    let tunnel = format!("{PROXIED_HOST}:{}", fake_addr.port());
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == tunnel),
        "{tunnels:?}"
    );
    assert_eq!(s.fake.counts().tokens_issued, 1);
}

#[tokio::test]
async fn a_missing_secret_is_named() {
    let s = setup(FakeAzureConfig::default()).await;
    let client = s.certificate_client();
    let err = client.get_secret("no-such-secret").await.unwrap_err();
    assert!(matches!(err, Error::SecretNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-secret"), "{err}");
    assert_eq!(err.kind(), FailureKind::NotFound);
    let err = client.get_secret("bad/name").await.unwrap_err();
    assert!(err.to_string().contains("bad/name"), "{err}");
}

#[tokio::test]
async fn a_wrong_certificate_is_rejected_with_the_aadsts_code() {
    let s = setup(FakeAzureConfig::default()).await;
    s.fake.set_secret("arc-github", SECRET_VALUE);
    s.fake
        .register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)
        .unwrap();
    // A valid certificate and key, but not the one registered on the application.
    let unregistered = s
        .fake
        .register_certificate("another-tenant", "another-client", OTHER_KEY_PEM)
        .unwrap();
    let path = s.certificate_file("other.pem", &unregistered, OTHER_KEY_PEM);
    let client = s.client(&s.config(&path), &s.env());
    let err = client.get_secret("arc-github").await.unwrap_err();
    assert!(matches!(err, Error::AssertionRejected { .. }), "{err}");
    assert!(err.to_string().contains("AADSTS700027"), "{err}");
    assert_eq!(err.kind(), FailureKind::CredentialsRejected);
    assert!(
        !err.to_string().contains("eyJ"),
        "an assertion leaked: {err}"
    );
}

#[tokio::test]
async fn unknown_tenant_and_client_say_which() {
    let s = setup(FakeAzureConfig::default()).await;
    let path = s.registered_certificate_file();
    let mut config = s.config(&path);
    config.tenant_id = "no-such-tenant".into();
    let err = s.read_error(&config).await;
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err}");
    assert!(err.to_string().contains("AADSTS90002"), "{err}");
    assert!(err.to_string().contains("tenant_id"), "{err}");

    let mut config = s.config(&path);
    config.client_id = "no-such-client".into();
    let err = s.read_error(&config).await;
    assert!(matches!(err, Error::ClientNotFound { .. }), "{err}");
    assert!(err.to_string().contains("client_id"), "{err}");
    assert_eq!(err.kind(), FailureKind::InvalidInput);
}

#[tokio::test]
async fn certificate_problems_are_named() {
    let s = setup(FakeAzureConfig::default()).await;
    let cert = s
        .fake
        .register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)
        .unwrap();
    let cases = [
        (
            s.certificate_file("mismatch.pem", &cert, OTHER_KEY_PEM),
            "matches its private key",
        ),
        (
            s.certificate_file("key-only.pem", "", CLIENT_KEY_PEM),
            "no PEM CERTIFICATE",
        ),
        (
            s.certificate_file("cert-only.pem", &cert, ""),
            "no PEM private key",
        ),
        (
            s.dir.path().join("absent.pem").display().to_string(),
            "cannot read",
        ),
    ];
    for (path, says) in cases {
        let err = s.read_error(&s.config(&path)).await;
        assert!(matches!(err, Error::Certificate { .. }), "{path}: {err}");
        assert!(err.to_string().contains(says), "{path}: {err}");
        assert!(err.to_string().contains(&path), "{path}: {err}");
        assert!(!err.to_string().contains("PRIVATE KEY-----"), "{err}");
    }
    assert_eq!(s.fake.counts().token_requests, 0);
}

#[tokio::test]
async fn the_signed_assertion_has_the_thumbprint_headers() {
    let s = setup(FakeAzureConfig::default()).await;
    let path = s.registered_certificate_file();
    let cert = key_vault::load_certificate(std::path::Path::new(&path)).unwrap();
    let jwt = cert
        .sign(
            CLIENT,
            "https://login.example/t/oauth2/v2.0/token",
            std::time::SystemTime::now(),
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(jwt.expose_secret()).unwrap();
    assert_eq!(header.x5t.as_deref(), Some(cert.x5t()));
    assert!(header.x5t_s256.is_some());
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert!(!format!("{cert:?}").contains("PRIVATE"));
}

#[tokio::test]
async fn transient_failures_are_retried_within_the_budget() {
    let s = setup(FakeAzureConfig::default()).await;
    s.fake.set_secret("arc-github", SECRET_VALUE);
    let client = s.certificate_client();
    // The token request and the secret read each fail twice, then succeed.
    s.fake.fail_next(2, 503);
    let value = client.get_secret("arc-github").await.unwrap();
    assert_eq!(value.expose_secret(), SECRET_VALUE);
    s.fake.fail_next(2, 429);
    client.get_secret("arc-github").await.unwrap();

    // Past the retries (1 + 4 attempts), a transient error the caller may retry later.
    s.fake.fail_next(5, 503);
    let err = client.get_secret("arc-github").await.unwrap_err();
    assert!(err.kind().is_transient(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    // A 501 is not retried.
    s.fake.fail_next(1, 501);
    let err = client.get_secret("arc-github").await.unwrap_err();
    assert!(!err.kind().is_transient(), "{err}");
    client.get_secret("arc-github").await.unwrap();
}
