//! GitHub REST: App installation tokens, registration tokens and runner registration.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::responses::{rest_error, rest_json};
use super::{Body, Call, credential};
use crate::actions::{FakeAuth, RegistrationScope};

#[derive(Deserialize)]
struct RunnerRegistrationBody {
    url: String,
    runner_event: String,
}

impl Call<'_> {
    pub(super) fn app_token(&self, installation_id: &str) -> Response<Body> {
        let FakeAuth::App {
            app_id,
            installation_id: expected_installation,
            public_key_pem,
        } = &self.inner.config.auth
        else {
            return rest_error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        };
        let Some(jwt) = credential(self.headers, &["bearer"]) else {
            return rest_error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        };
        if let Err(message) = verify_app_jwt(jwt, app_id, public_key_pem) {
            return rest_error(StatusCode::UNAUTHORIZED, &message);
        }
        if installation_id != expected_installation.to_string() {
            return rest_error(StatusCode::NOT_FOUND, "Not Found");
        }
        let (token, expires_at) = self.inner.state().issue_installation_token();
        rest_json(
            StatusCode::CREATED,
            &json!({
                "token": token,
                "expires_at": expires_at,
                "permissions": {"organization_self_hosted_runners": "write", "administration": "write"},
                "repository_selection": "all",
            }),
        )
    }

    pub(super) fn registration_token(&self, scope: RegistrationScope) -> Response<Body> {
        let Some(presented) = credential(self.headers, &["bearer", "token"]) else {
            return rest_error(StatusCode::UNAUTHORIZED, "Requires authentication");
        };
        let valid = match &self.inner.config.auth {
            FakeAuth::Pat { .. } => self.inner.state().accepted_pat.as_deref() == Some(presented),
            FakeAuth::App { .. } => self.inner.state().installation_token_valid(presented),
        };
        if !valid {
            return rest_error(StatusCode::UNAUTHORIZED, "Bad credentials");
        }
        let (token, expires_at) = self.inner.state().issue_registration_token(scope);
        rest_json(
            StatusCode::CREATED,
            &json!({"token": token, "expires_at": expires_at}),
        )
    }

    pub(super) fn runner_registration(&self) -> Response<Body> {
        let Some(token) = credential(self.headers, &["remoteauth"]) else {
            return rest_error(StatusCode::UNAUTHORIZED, "Requires authentication");
        };
        let Some(scope) = self.inner.state().registration_token_scope(token) else {
            return rest_error(StatusCode::UNAUTHORIZED, "Bad credentials");
        };
        let body: RunnerRegistrationBody = match serde_json::from_slice(&self.body) {
            Ok(body) => body,
            Err(e) => {
                return rest_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Problems parsing JSON: {e}"),
                );
            }
        };
        if body.runner_event != "register" {
            return rest_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "runner_event must be \"register\"",
            );
        }
        match scope_of_url(&body.url) {
            Some(url_scope) if same_scope(&url_scope, &scope) => {}
            Some(_) => return rest_error(StatusCode::NOT_FOUND, "Not Found"),
            None => {
                return rest_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "url is not an organization, repository or enterprise URL",
                );
            }
        }
        let admin_token = match self.inner.state().issue_admin_token(&body.url) {
            Ok(token) => token,
            Err(e) => {
                return rest_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("could not sign the admin token: {e}"),
                );
            }
        };
        rest_json(
            StatusCode::OK,
            &json!({
                "url": format!("{}{}", self.inner.base_url, self.inner.service_prefix),
                "token": admin_token,
                "token_schema": "OAuthAccessToken",
            }),
        )
    }
}

/// The scope a configure URL names: `/ORG`, `/ORG/REPO` or `/enterprises/ENT`.
fn scope_of_url(url: &str) -> Option<RegistrationScope> {
    let parsed = url::Url::parse(url).ok()?;
    let segments: Vec<&str> = parsed.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["enterprises", ent] => Some(RegistrationScope::Enterprise((*ent).to_owned())),
        [org] => Some(RegistrationScope::Org((*org).to_owned())),
        [owner, repo] => Some(RegistrationScope::Repo {
            owner: (*owner).to_owned(),
            repo: (*repo).to_owned(),
        }),
        _ => None,
    }
}

/// GitHub names are case-insensitive.
fn same_scope(a: &RegistrationScope, b: &RegistrationScope) -> bool {
    use RegistrationScope::*;
    match (a, b) {
        (Org(a), Org(b)) | (Enterprise(a), Enterprise(b)) => a.eq_ignore_ascii_case(b),
        (
            Repo {
                owner: ao,
                repo: ar,
            },
            Repo {
                owner: bo,
                repo: br,
            },
        ) => ao.eq_ignore_ascii_case(bo) && ar.eq_ignore_ascii_case(br),
        _ => false,
    }
}

/// Verify a GitHub App JWT as GitHub does: RS256 signed by the App's key, `iss` the App id
/// (string or number), `exp` in the future and at most 10 minutes after `iat`, `iat` not
/// in the future (60 s of clock drift allowed).
fn verify_app_jwt(jwt: &str, app_id: &str, public_key_pem: &str) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
        .map_err(|_| "The fake's App public key is not a valid RSA PEM".to_owned())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<serde_json::Value>(jwt, &key, &validation)
        .map_err(|_| "A JSON web token could not be decoded".to_owned())?
        .claims;
    let iss = match claims.get("iss") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err("'Issuer' claim ('iss') must be an Integer".to_owned()),
    };
    if iss != app_id {
        return Err(format!(
            "Integration not found for 'iss' claim {iss:?}; expected the App id"
        ));
    }
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(serde_json::Value::as_i64),
        claims.get("exp").and_then(serde_json::Value::as_i64),
    ) else {
        return Err(
            "'Issued at' claim ('iat') and 'Expiration time' claim ('exp') must be numeric"
                .to_owned(),
        );
    };
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
    if iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                .to_owned(),
        );
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".to_owned());
    }
    if exp - iat > 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".to_owned());
    }
    Ok(())
}
