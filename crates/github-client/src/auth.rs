//! Credentials, the GitHub App JWT and reading a JWT's `exp` without verifying it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::error::Error;
use crate::secret::SecretString;

/// How the listener authenticates to GitHub REST.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A personal access token.
    Token(SecretString),
    /// A GitHub App installation. `app_id` may be the App ID or its client ID (the JWT issuer).
    /// `private_key` is a PEM RSA key, PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`).
    App {
        app_id: String,
        installation_id: i64,
        private_key: SecretString,
    },
}

/// Credentials checked at construction: the App key is parsed once.
pub(crate) enum Auth {
    Token(SecretString),
    App {
        app_id: String,
        installation_id: i64,
        key: jsonwebtoken::EncodingKey,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Auth::Token([REDACTED])"),
            Auth::App {
                app_id,
                installation_id,
                ..
            } => write!(
                f,
                "Auth::App {{ app_id: {app_id}, installation_id: {installation_id}, key: [REDACTED] }}"
            ),
        }
    }
}

impl Auth {
    pub(crate) fn new(credentials: Credentials) -> Result<Self, Error> {
        match credentials {
            Credentials::Token(token) => {
                if token.expose_secret().trim().is_empty() {
                    return Err(Error::InvalidConfig {
                        reason: "the GitHub token is empty".into(),
                    });
                }
                Ok(Auth::Token(token))
            }
            Credentials::App {
                app_id,
                installation_id,
                private_key,
            } => {
                if app_id.trim().is_empty() {
                    return Err(Error::InvalidConfig {
                        reason: "the GitHub App id is empty".into(),
                    });
                }
                if installation_id <= 0 {
                    return Err(Error::InvalidConfig {
                        reason: format!(
                            "the GitHub App installation id {installation_id} is not positive"
                        ),
                    });
                }
                // The key's parse error is not shown: it could quote key material.
                let key =
                    jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
                        .map_err(|_| {
                            Error::InvalidConfig {
                    reason: "the GitHub App private key is not an RSA PEM key (PKCS#1 or PKCS#8)"
                        .into(),
                }
                        })?;
                Ok(Auth::App {
                    app_id,
                    installation_id,
                    key,
                })
            }
        }
    }
}

#[derive(serde::Serialize)]
struct AppClaims<'a> {
    iat: u64,
    exp: u64,
    iss: &'a str,
}

/// The App JWT: RS256, `iat = now - 60 s` (clock skew), `exp = iat + 9 min`, `iss = app id`.
pub(crate) fn app_jwt(
    app_id: &str,
    key: &jsonwebtoken::EncodingKey,
    now: SystemTime,
) -> Result<SecretString, Error> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let iat = now.saturating_sub(60);
    let claims = AppClaims {
        iat,
        exp: iat + 9 * 60,
        iss: app_id,
    };
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, &claims, key)
        .map(SecretString::from)
        .map_err(|e| Error::InvalidConfig {
            reason: format!("cannot sign the GitHub App JWT: {e}"),
        })
}

/// The `exp` claim of a JWT, read without verifying its signature (we only need to know
/// when to refresh it; the service verifies it).
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp
        .as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// True when less than `margin` remains before `expires_at`.
pub(crate) fn expires_within(expires_at: SystemTime, margin: Duration, now: SystemTime) -> bool {
    now + margin >= expires_at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_keys() -> (&'static str, &'static str, &'static str) {
        (
            include_str!("../tests/fixtures/app_key_pkcs1.pem"),
            include_str!("../tests/fixtures/app_key_pkcs8.pem"),
            include_str!("../tests/fixtures/app_key_public.pem"),
        )
    }

    #[test]
    fn app_jwt_with_pkcs1_and_pkcs8_verifies() {
        let (pkcs1, pkcs8, public) = test_keys();
        let now = SystemTime::now();
        for pem in [pkcs1, pkcs8] {
            let auth = Auth::new(Credentials::App {
                app_id: "12345".into(),
                installation_id: 7,
                private_key: pem.into(),
            })
            .unwrap();
            let Auth::App { key, .. } = &auth else {
                panic!()
            };
            let jwt = app_jwt("12345", key, now).unwrap();
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_issuer(&["12345"]);
            validation.set_required_spec_claims(&["exp", "iat", "iss"]);
            let decoded = jsonwebtoken::decode::<serde_json::Value>(
                jwt.expose_secret(),
                &jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
                &validation,
            )
            .unwrap();
            let iat = decoded.claims["iat"].as_u64().unwrap();
            let exp = decoded.claims["exp"].as_u64().unwrap();
            let now_s = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
            assert_eq!(iat, now_s - 60);
            assert_eq!(exp, iat + 540);
            assert!(!format!("{auth:?}").contains("BEGIN"));
        }
    }

    #[test]
    fn bad_key_is_a_clear_error_without_the_key() {
        let err = Auth::new(Credentials::App {
            app_id: "1".into(),
            installation_id: 1,
            private_key: "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----"
                .into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        assert!(Auth::new(Credentials::Token("".into())).is_err());
    }

    #[test]
    fn reads_exp_unverified() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"exp":1700000000,"x":1}"#)
        );
        assert_eq!(
            jwt_expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry(&format!("a.{}.c", b64(r#"{"sub":1}"#))), None);
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert!(expires_within(
            UNIX_EPOCH + Duration::from_secs(1059),
            Duration::from_secs(60),
            now
        ));
        assert!(!expires_within(
            UNIX_EPOCH + Duration::from_secs(1061),
            Duration::from_secs(60),
            now
        ));
    }
}
