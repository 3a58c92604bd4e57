//! The fake Entra ID and Key Vault driven over HTTPS with hand-made assertions: it must
//! refuse what Entra ID refuses (a signature by another key under a registered `x5t`, an
//! expired or too long-lived assertion, another audience) and answer like Key Vault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::https_client;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use sha1::Digest as _;
use simulator::azure::{CLIENT_KEY_PEM, FakeAzure, FakeAzureConfig, OTHER_KEY_PEM};

const TENANT: &str = "tenant-a";
const CLIENT: &str = "client-a";

fn x5t(cert_pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(der.as_ref()))
}

fn assertion(x5t: &str, key_pem: &str, aud: &str, nbf: u64, exp: u64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t = Some(x5t.to_owned());
    let claims =
        json!({"aud": aud, "iss": CLIENT, "sub": CLIENT, "jti": "j1", "nbf": nbf, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn token(http: &reqwest::Client, fake: &FakeAzure, assertion: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT),
        ("scope", "https://vault.azure.net/.default"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ];
    let body = serde_urlencoded(&form);
    let response = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", fake.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn serde_urlencoded(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

#[tokio::test]
async fn verifies_assertions_as_entra_does() {
    let fake = FakeAzure::start(FakeAzureConfig::default()).await.unwrap();
    let http = https_client(&fake.ca_pem());
    let cert = fake
        .register_certificate(TENANT, CLIENT, CLIENT_KEY_PEM)
        .unwrap();
    let thumbprint = x5t(&cert);
    let aud = format!("{}/{TENANT}/oauth2/v2.0/token", fake.url());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let (status, body) = token(
        &http,
        &fake,
        &assertion(&thumbprint, CLIENT_KEY_PEM, &aud, now, now + 300),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert!(body["expires_in"].as_u64().unwrap() > 0);

    // (assertion, the AADSTS code Entra answers)
    let cases = [
        (
            assertion(&thumbprint, OTHER_KEY_PEM, &aud, now, now + 300),
            700027,
        ),
        (
            assertion("bm90LXJlZ2lzdGVyZWQ", CLIENT_KEY_PEM, &aud, now, now + 300),
            700027,
        ),
        (
            assertion(&thumbprint, CLIENT_KEY_PEM, &aud, now - 900, now - 600),
            700024,
        ),
        (
            assertion(&thumbprint, CLIENT_KEY_PEM, &aud, now, now + 3600),
            700024,
        ),
        (
            assertion(
                &thumbprint,
                CLIENT_KEY_PEM,
                "https://elsewhere/token",
                now,
                now + 300,
            ),
            700212,
        ),
    ];
    for (jwt, code) in cases {
        let (status, body) = token(&http, &fake, &jwt).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client", "{body}");
        assert_eq!(body["error_codes"][0], code, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}:")),
            "{body}"
        );
    }

    // Key Vault: the challenge without a token, SecretNotFound, then the value.
    let secret_url = |name: &str| format!("{}/secrets/{name}?api-version=7.4", fake.url());
    let response = http.get(secret_url("gh")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer authorization=")
            && challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
    let response = http
        .get(secret_url("gh"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SecretNotFound");
    fake.set_secret("gh", "v1");
    fake.set_secret("gh", "v2");
    let body: Value = http
        .get(secret_url("gh"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"], "v2");
    assert!(body["id"].as_str().unwrap().contains("/secrets/gh/"));
    assert_eq!(fake.counts().tokens_issued, 1);
}
