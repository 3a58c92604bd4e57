//! ARC's listener `config.json`, exactly as the controller writes it, plus the keys this
//! listener adds (`otel_endpoint`, `otel_insecure`, `otel_id_scheme`).
//!
//! Validation follows the Go listener (`cmd/ghalistener/config`), with errors that name the
//! key to fix. Unknown keys are ignored, as Go's decoder does. The struct is the one list of
//! keys and types: a value of the wrong type is named by the path `serde_path_to_error`
//! reports. Secrets are [`SecretString`]s, so `Debug` (the config is logged at debug level)
//! cannot show them.

use std::path::Path;

use github_client::SecretString;
use serde::{Deserialize, Deserializer};

/// Environment variable naming the config file, as ARC sets it.
pub const CONFIG_PATH_ENV: &str = "LISTENER_CONFIG_PATH";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub configure_url: String,
    pub vault_type: String,
    pub vault_lookup_key: String,
    pub azure_key_vault: Option<serde_json::Value>,
    /// App ID or client ID; older controllers wrote a number.
    #[serde(deserialize_with = "string_or_number")]
    pub github_app_id: String,
    pub github_app_installation_id: i64,
    #[serde(deserialize_with = "secret")]
    pub github_app_private_key: SecretString,
    #[serde(deserialize_with = "secret")]
    pub github_token: SecretString,
    pub ephemeral_runner_set_namespace: String,
    pub ephemeral_runner_set_name: String,
    pub max_runners: i64,
    pub min_runners: i64,
    pub runner_scale_set_id: i64,
    pub runner_scale_set_name: String,
    pub server_root_ca: String,
    pub log_level: String,
    pub log_format: String,
    pub metrics_addr: String,
    pub metrics_endpoint: String,
    /// Passed through to the Prometheus recorder, which owns its format.
    pub metrics: Option<serde_json::Value>,
    pub otel_endpoint: Option<String>,
    pub otel_insecure: Option<bool>,
    pub otel_id_scheme: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path} is not valid JSON: {reason}")]
    Json { path: String, reason: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The credentials the config holds, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigCredentials {
    Token(SecretString),
    App {
        app_id: String,
        installation_id: i64,
        private_key: SecretString,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let raw = std::fs::read(path).map_err(|e| ConfigError::Read {
            path: display.clone(),
            reason: e.to_string(),
        })?;
        Self::from_json(&raw).map_err(|e| match e {
            ConfigError::Json { reason, .. } => ConfigError::Json {
                path: display,
                reason,
            },
            other => other,
        })
    }

    pub fn from_json(raw: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(raw).map_err(|e| ConfigError::Json {
            path: String::new(),
            reason: e.to_string(),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json {
                path: String::new(),
                reason: e.to_string(),
            })?;
        // serde would also read a struct from an array, positionally: only objects are configs.
        let serde_json::Value::Object(map) = &value else {
            return Err(ConfigError::Json {
                path: String::new(),
                reason: format!("expected a JSON object, found {}", json_kind(&value)),
            });
        };
        let config: Config = match serde_path_to_error::deserialize(&value) {
            Ok(config) => config,
            Err(e) => return Err(field_error(map, e)),
        };
        config.validate()?;
        Ok(config)
    }

    /// The Go listener's checks, in its order, plus range checks it leaves to later failures.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.configure_url.trim().is_empty() {
            return Err(invalid(
                "configure_url",
                "is missing: the GitHub config URL is required",
            ));
        }
        if self.ephemeral_runner_set_namespace.is_empty() {
            return Err(invalid("ephemeral_runner_set_namespace", "is missing"));
        }
        if self.ephemeral_runner_set_name.is_empty() {
            return Err(invalid("ephemeral_runner_set_name", "is missing"));
        }
        if self.runner_scale_set_id == 0 {
            return Err(invalid(
                "runner_scale_set_id",
                "is missing (must be non-zero)",
            ));
        }
        if self.min_runners < 0 || self.min_runners > i64::from(i32::MAX) {
            return Err(invalid(
                "min_runners",
                format!("{} is out of range 0..=2147483647", self.min_runners),
            ));
        }
        if self.max_runners < 0 || self.max_runners > i64::from(i32::MAX) {
            return Err(invalid(
                "max_runners",
                format!("{} is out of range 0..=2147483647", self.max_runners),
            ));
        }
        if self.max_runners < self.min_runners {
            return Err(invalid(
                "max_runners",
                format!(
                    "min_runners {} cannot be greater than max_runners {}",
                    self.min_runners, self.max_runners
                ),
            ));
        }
        match self.vault_type.as_str() {
            "" => {}
            "azure_key_vault" => {
                return Err(invalid(
                    "vault_type",
                    "\"azure_key_vault\" is not supported by this listener yet: \
                     put the GitHub credentials in the config secret instead",
                ));
            }
            other => {
                return Err(invalid(
                    "vault_type",
                    format!(
                        "unsupported vault type {other:?} (accepted: \"\", \"azure_key_vault\")"
                    ),
                ));
            }
        }
        self.credentials()?;
        if !matches!(
            self.log_level.as_str(),
            "" | "debug" | "info" | "warn" | "error"
        ) {
            return Err(invalid(
                "log_level",
                format!(
                    "{:?} is not one of debug, info, warn, error",
                    self.log_level
                ),
            ));
        }
        if !matches!(self.log_format.as_str(), "" | "text" | "json") {
            return Err(invalid(
                "log_format",
                format!("{:?} is not one of text, json", self.log_format),
            ));
        }
        if !self.metrics_endpoint.is_empty() && !self.metrics_endpoint.starts_with('/') {
            return Err(invalid(
                "metrics_endpoint",
                format!("{:?} must start with '/'", self.metrics_endpoint),
            ));
        }
        Ok(())
    }

    /// PAT xor the complete App triple, as the Go listener's `AppConfig.Validate`.
    pub fn credentials(&self) -> Result<ConfigCredentials, ConfigError> {
        let has_token = !self.github_token.is_empty();
        let app_fields = [
            !self.github_app_id.is_empty(),
            self.github_app_installation_id > 0,
            !self.github_app_private_key.is_empty(),
        ];
        let has_app = app_fields.iter().all(|f| *f);
        match (has_token, has_app) {
            (true, true) => Err(invalid(
                "github_token",
                "both a PAT and GitHub App credentials are set: provide only one",
            )),
            (true, false) => Ok(ConfigCredentials::Token(self.github_token.clone())),
            (false, true) => Ok(ConfigCredentials::App {
                app_id: self.github_app_id.clone(),
                installation_id: self.github_app_installation_id,
                private_key: self.github_app_private_key.clone(),
            }),
            (false, false) if app_fields.iter().any(|f| *f) => {
                let missing = [
                    ("github_app_id", app_fields[0]),
                    ("github_app_installation_id", app_fields[1]),
                    ("github_app_private_key", app_fields[2]),
                ]
                .into_iter()
                .filter(|(_, set)| !set)
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
                .join(", ");
                Err(invalid(
                    "github_app_id",
                    format!("incomplete GitHub App credentials: missing {missing}"),
                ))
            }
            (false, false) => Err(invalid(
                "github_token",
                "no credentials: set github_token, or github_app_id, \
                 github_app_installation_id and github_app_private_key",
            )),
        }
    }

    pub fn min_runners_i32(&self) -> i32 {
        // Range checked in validate().
        i32::try_from(self.min_runners).unwrap_or(0)
    }

    pub fn max_runners_i32(&self) -> i32 {
        i32::try_from(self.max_runners).unwrap_or(i32::MAX)
    }

    pub fn metrics_endpoint_or_default(&self) -> &str {
        if self.metrics_endpoint.is_empty() {
            "/metrics"
        } else {
            &self.metrics_endpoint
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_i64() => "an integer out of range",
        serde_json::Value::Number(_) => "a number that is not a 64-bit integer",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Name the key whose value has the wrong type, and the type it takes. The value itself is
/// not echoed (serde's message quotes it): a credential put under the wrong key must not
/// reach the logs.
fn field_error(
    map: &serde_json::Map<String, serde_json::Value>,
    error: serde_path_to_error::Error<serde_json::Error>,
) -> ConfigError {
    // Config is flat, so the first segment is the key; a nested path cannot occur but
    // would still name its key.
    let key = match error.path().iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
        _ => String::new(),
    };
    let inner = error.into_inner();
    match map.get(&key) {
        Some(value) if !key.is_empty() => invalid(
            key.clone(),
            format!("must be {}, found {}", expected(&inner), json_kind(value)),
        ),
        _ => ConfigError::Json {
            path: String::new(),
            reason: inner.to_string(),
        },
    }
}

/// What serde expected, in words: the part of its message after the quoted value.
fn expected(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once(", expected ").map(|(_, e)| e) {
        Some("i64") => "an integer".to_owned(),
        Some(e) if !e.is_empty() => e.to_owned(),
        _ => "a value of another type".to_owned(),
    }
}

/// A string, as for any other string key (`null` is a type error, as before), kept secret.
fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::new)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(serde::de::Error::invalid_type(
            unexpected(&other),
            &"a string or a number",
        )),
    }
}

fn unexpected(value: &serde_json::Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match value {
        serde_json::Value::Bool(b) => Unexpected::Bool(*b),
        serde_json::Value::Array(_) => Unexpected::Seq,
        serde_json::Value::Object(_) => Unexpected::Map,
        _ => Unexpected::Other("a value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arc_config() -> serde_json::Value {
        // Every key present, as ARC's controller writes it.
        json!({
            "configure_url": "https://github.com/my-org",
            "vault_type": "",
            "vault_lookup_key": "",
            "github_app_id": "",
            "github_app_installation_id": 0,
            "github_app_private_key": "",
            "github_token": "ghp_secret_value",
            "ephemeral_runner_set_namespace": "arc-runners",
            "ephemeral_runner_set_name": "arc-runner-set-abcde",
            "max_runners": 10,
            "min_runners": 1,
            "runner_scale_set_id": 42,
            "runner_scale_set_name": "arc-runner-set",
            "server_root_ca": "",
            "log_level": "debug",
            "log_format": "json",
            "metrics_addr": ":8080",
            "metrics_endpoint": "/metrics",
            "metrics": null
        })
    }

    fn with(key: &str, value: serde_json::Value) -> Vec<u8> {
        let mut c = arc_config();
        c[key] = value;
        c.to_string().into_bytes()
    }

    #[test]
    fn accepts_arc_config_and_ignores_unknown_keys() {
        let config = Config::from_json(&with("some_future_key", json!(true))).unwrap();
        assert_eq!(config.runner_scale_set_id, 42);
        assert_eq!(
            config.credentials().unwrap(),
            ConfigCredentials::Token("ghp_secret_value".into())
        );
        assert_eq!(config.otel_endpoint, None);
        assert!(!format!("{config:?}").contains("ghp_secret_value"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("configure_url", json!(""), "configure_url"),
            (
                "ephemeral_runner_set_namespace",
                json!(""),
                "ephemeral_runner_set_namespace",
            ),
            (
                "ephemeral_runner_set_name",
                json!(""),
                "ephemeral_runner_set_name",
            ),
            ("runner_scale_set_id", json!(0), "runner_scale_set_id"),
            ("min_runners", json!(11), "max_runners"),
            ("max_runners", json!(-1), "max_runners"),
            ("vault_type", json!("azure_key_vault"), "vault_type"),
            ("vault_type", json!("hashicorp"), "vault_type"),
            ("log_level", json!("verbose"), "log_level"),
            ("log_format", json!("xml"), "log_format"),
            ("github_token", json!(""), "github_token"),
            ("metrics_endpoint", json!("metrics"), "metrics_endpoint"),
        ];
        for (key, value, named) in cases {
            let err = Config::from_json(&with(key, value.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
            assert!(!err.contains("ghp_secret_value"), "{err}");
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let err = Config::from_json(&with("max_runners", json!("ten")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_runners") && err.contains("must be an integer, found a string"),
            "{err}"
        );
        assert!(!err.contains("ten"), "the value is echoed: {err}");
    }

    #[test]
    fn app_credentials() {
        let mut c = arc_config();
        c["github_token"] = json!("");
        c["github_app_id"] = json!(12345);
        c["github_app_installation_id"] = json!(99);
        c["github_app_private_key"] = json!("-----BEGIN RSA PRIVATE KEY-----");
        let config = Config::from_json(c.to_string().as_bytes()).unwrap();
        assert!(
            matches!(config.credentials().unwrap(), ConfigCredentials::App { installation_id: 99, ref app_id, .. } if app_id == "12345")
        );

        c["github_app_installation_id"] = json!(0);
        let err = Config::from_json(c.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("github_app_installation_id"), "{err}");

        c["github_app_installation_id"] = json!(99);
        c["github_token"] = json!("ghp_x");
        let err = Config::from_json(c.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("both"), "{err}");
    }
}
