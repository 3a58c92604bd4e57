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
/// The one `vault_type` besides `""`.
pub const VAULT_TYPE_AZURE_KEY_VAULT: &str = "azure_key_vault";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub configure_url: String,
    pub vault_type: String,
    pub vault_lookup_key: String,
    pub azure_key_vault: Option<AzureKeyVault>,
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

/// ARC's `azure_key_vault` object: where the secret named by `vault_lookup_key` lives and
/// how to authenticate to it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AzureKeyVault {
    pub tenant_id: String,
    pub client_id: String,
    pub url: String,
    /// PEM with the certificate and its key; empty for workload identity.
    pub certificate_path: String,
    pub proxy: Option<VaultProxy>,
}

/// The proxy of the Entra ID and Key Vault calls. ARC marshals Go's `httpproxy.Config`, whose
/// keys are its field names (`HTTPProxy`, `HTTPSProxy`, `NoProxy`, matched ignoring case as Go
/// does); `http_proxy`, `https_proxy`, `no_proxy` are accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultProxy {
    pub http_proxy: String,
    pub https_proxy: String,
    pub no_proxy: String,
}

impl<'de> Deserialize<'de> for VaultProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, Option<String>>::deserialize(d)?;
        let mut proxy = VaultProxy::default();
        for (key, value) in map {
            let value = value.unwrap_or_default();
            match key.to_ascii_lowercase().replace('_', "").as_str() {
                "httpproxy" => proxy.http_proxy = value,
                "httpsproxy" => proxy.https_proxy = value,
                "noproxy" => proxy.no_proxy = value,
                _ => {}
            }
        }
        Ok(proxy)
    }
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
        let config: Config = from_object(raw)?;
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
            "" => {
                self.credentials()?;
            }
            // The credentials are the vault secret's; inline ones are not needed.
            VAULT_TYPE_AZURE_KEY_VAULT => {
                self.key_vault()?;
            }
            other => {
                return Err(invalid(
                    "vault_type",
                    format!(
                        "unsupported vault type {other:?} (accepted: \"\", \"{VAULT_TYPE_AZURE_KEY_VAULT}\")"
                    ),
                ));
            }
        }
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

    /// The vault secret's name and the Key Vault settings, when `vault_type` is
    /// `azure_key_vault`, checked as the Go listener does (a certificate path, or none for
    /// workload identity, whose ids may come from `AZURE_CLIENT_ID` / `AZURE_TENANT_ID`).
    pub fn key_vault(&self) -> Result<(String, key_vault::KeyVaultConfig), ConfigError> {
        let name = self.vault_lookup_key.trim();
        if name.is_empty() {
            return Err(invalid(
                "vault_lookup_key",
                format!(
                    "is missing: the name of the Key Vault secret is required when vault_type \
                     is {:?}",
                    self.vault_type
                ),
            ));
        }
        let Some(vault) = &self.azure_key_vault else {
            return Err(invalid(
                "azure_key_vault",
                "is missing: {tenant_id, client_id, url, certificate_path} is required when \
                 vault_type is \"azure_key_vault\"",
            ));
        };
        if vault.url.trim().is_empty() {
            return Err(invalid(
                "azure_key_vault.url",
                "is missing: the vault URL, https://NAME.vault.azure.net",
            ));
        }
        if !vault.certificate_path.trim().is_empty() {
            for (key, value) in [
                ("azure_key_vault.tenant_id", &vault.tenant_id),
                ("azure_key_vault.client_id", &vault.client_id),
            ] {
                if value.trim().is_empty() {
                    return Err(invalid(key, "is missing"));
                }
            }
        }
        let proxy = match &vault.proxy {
            None => github_client::ProxyConfig::default(),
            Some(p) if p == &VaultProxy::default() => {
                return Err(invalid(
                    "azure_key_vault.proxy",
                    "is empty: set at least one of http_proxy, https_proxy, no_proxy",
                ));
            }
            Some(p) => github_client::ProxyConfig::from_lookup(|k| match k {
                "http_proxy" => Some(p.http_proxy.clone()),
                "https_proxy" => Some(p.https_proxy.clone()),
                "no_proxy" => Some(p.no_proxy.clone()),
                _ => None,
            })
            .map_err(|e| invalid("azure_key_vault.proxy", e.to_string()))?,
        };
        Ok((
            name.to_owned(),
            key_vault::KeyVaultConfig {
                tenant_id: vault.tenant_id.trim().to_owned(),
                client_id: vault.client_id.trim().to_owned(),
                url: vault.url.trim().to_owned(),
                certificate_path: vault.certificate_path.trim().to_owned(),
                proxy,
            },
        ))
    }

    /// PAT xor the complete App triple, as the Go listener's `AppConfig.Validate`.
    pub fn credentials(&self) -> Result<ConfigCredentials, ConfigError> {
        credentials_of(
            &self.github_token,
            &self.github_app_id,
            self.github_app_installation_id,
            &self.github_app_private_key,
        )
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

/// PAT xor the complete App triple, as the Go listener's `AppConfig.Validate`; the same
/// check for inline credentials and for a vault secret's.
fn credentials_of(
    token: &SecretString,
    app_id: &str,
    installation_id: i64,
    private_key: &SecretString,
) -> Result<ConfigCredentials, ConfigError> {
    let has_token = !token.is_empty();
    let app_fields = [
        !app_id.is_empty(),
        installation_id > 0,
        !private_key.is_empty(),
    ];
    let has_app = app_fields.iter().all(|f| *f);
    match (has_token, has_app) {
        (true, true) => Err(invalid(
            "github_token",
            "both a PAT and GitHub App credentials are set: provide only one",
        )),
        (true, false) => Ok(ConfigCredentials::Token(token.clone())),
        (false, true) => Ok(ConfigCredentials::App {
            app_id: app_id.to_owned(),
            installation_id,
            private_key: private_key.clone(),
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

/// ARC's AppConfig JSON, as a vault secret holds it: the credential keys of `config.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AppConfig {
    #[serde(deserialize_with = "string_or_number")]
    github_app_id: String,
    github_app_installation_id: i64,
    #[serde(deserialize_with = "secret")]
    github_app_private_key: SecretString,
    #[serde(deserialize_with = "secret")]
    github_token: SecretString,
}

/// The credentials of a vault secret holding ARC's AppConfig JSON, validated exactly like
/// inline ones. Errors name the key, never the value.
pub fn parse_app_config(raw: &[u8]) -> Result<ConfigCredentials, ConfigError> {
    let app: AppConfig = from_object(raw)?;
    credentials_of(
        &app.github_token,
        &app.github_app_id,
        app.github_app_installation_id,
        &app.github_app_private_key,
    )
}

/// `raw` as a JSON object (see [`json_object`]) read into `T`; a field of the wrong type is
/// named by [`field_error`].
fn from_object<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, ConfigError> {
    let value = json_object(raw)?;
    // serde would also read a struct from an array, positionally: only objects are configs.
    let serde_json::Value::Object(map) = &value else {
        return Err(ConfigError::Json {
            path: String::new(),
            reason: format!("expected a JSON object, found {}", json_kind(&value)),
        });
    };
    serde_path_to_error::deserialize(&value).map_err(|e| field_error(map, e))
}

/// UTF-8 JSON (a BOM tolerated), parsed. serde_json's syntax errors give a position, never
/// the text.
fn json_object(raw: &[u8]) -> Result<serde_json::Value, ConfigError> {
    let text = std::str::from_utf8(raw).map_err(|e| ConfigError::Json {
        path: String::new(),
        reason: e.to_string(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(text).map_err(|e| ConfigError::Json {
        path: String::new(),
        reason: e.to_string(),
    })
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
    // The dotted path of the key (`azure_key_vault.url`), and its value, to say what it is.
    let segments: Vec<String> = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let key = segments.join(".");
    let mut found = map.get(segments.first().map(String::as_str).unwrap_or_default());
    for segment in segments.iter().skip(1) {
        found = found.and_then(|v| v.get(segment));
    }
    let inner = error.into_inner();
    match found {
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

    /// Every key present, as ARC's controller writes it.
    fn arc_config() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/fixtures/arc_config.json")).unwrap()
    }

    fn with(key: &str, value: serde_json::Value) -> Vec<u8> {
        let mut c = arc_config();
        c[key] = value;
        c.to_string().into_bytes()
    }

    /// The error for the ARC config with `key` set to `value`, which must be refused.
    fn error_with(key: &str, value: serde_json::Value) -> String {
        Config::from_json(&with(key, value))
            .unwrap_err()
            .to_string()
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
            let err = error_with(key, value.clone());
            assert!(err.contains(named), "{key}={value}: {err}");
            assert!(!err.contains("ghp_secret_value"), "{err}");
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let err = error_with("max_runners", json!("ten"));
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

    fn vault_config(vault: serde_json::Value) -> Vec<u8> {
        let mut c = arc_config();
        c["github_token"] = json!("");
        c["vault_type"] = json!("azure_key_vault");
        c["vault_lookup_key"] = json!("arc-github");
        c["azure_key_vault"] = vault;
        c.to_string().into_bytes()
    }

    #[test]
    fn key_vault_config_is_checked_key_by_key() {
        let good = json!({
            "tenant_id": "t", "client_id": "c", "url": "https://v.vault.azure.net",
            "certificate_path": "/etc/arc/cert.pem",
            "proxy": {"HTTPSProxy": "http://proxy.corp:3128", "NoProxy": "internal"}
        });
        let config = Config::from_json(&vault_config(good.clone())).unwrap();
        let (name, vault) = config.key_vault().unwrap();
        assert_eq!(name, "arc-github");
        assert_eq!(
            vault.proxy.https_proxy.map(|u| u.to_string()).as_deref(),
            Some("http://proxy.corp:3128/")
        );
        assert_eq!(vault.proxy.no_proxy, vec!["internal".to_owned()]);
        let mut snake = good.clone();
        snake["proxy"] = json!({"https_proxy": "http://p:1"});
        assert!(Config::from_json(&vault_config(snake)).is_ok());
        // Workload identity: no certificate, ids from the environment.
        assert!(
            Config::from_json(&vault_config(json!({"url": "https://v.vault.azure.net"}))).is_ok()
        );

        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut c = good.clone();
        c["url"] = json!("");
        cases.push((vault_config(c), "azure_key_vault.url"));
        let mut c = good.clone();
        c["tenant_id"] = json!("");
        cases.push((vault_config(c), "azure_key_vault.tenant_id"));
        let mut c = good.clone();
        c["proxy"] = json!({});
        cases.push((vault_config(c), "azure_key_vault.proxy"));
        let mut c = good.clone();
        c["client_id"] = json!(5);
        cases.push((vault_config(c), "azure_key_vault.client_id"));
        let mut missing_key = arc_config();
        missing_key["vault_type"] = json!("azure_key_vault");
        missing_key["azure_key_vault"] = good.clone();
        cases.push((missing_key.to_string().into_bytes(), "vault_lookup_key"));
        let mut no_object = arc_config();
        no_object["vault_type"] = json!("azure_key_vault");
        no_object["vault_lookup_key"] = json!("x");
        cases.push((no_object.to_string().into_bytes(), "azure_key_vault"));
        for (raw, named) in cases {
            let err = Config::from_json(&raw).unwrap_err().to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
        let err = error_with("vault_type", json!("hashicorp"));
        assert!(
            err.contains("hashicorp") && err.contains("azure_key_vault"),
            "{err}"
        );
    }

    #[test]
    fn app_config_secrets_are_validated_like_inline_credentials() {
        assert_eq!(
            parse_app_config(br#"{"github_token":"ghp_v"}"#).unwrap(),
            ConfigCredentials::Token("ghp_v".into())
        );
        assert!(matches!(
            parse_app_config(
                br#"{"github_app_id":"1","github_app_installation_id":2,"github_app_private_key":"k"}"#
            )
            .unwrap(),
            ConfigCredentials::App { installation_id: 2, .. }
        ));
        let cases: [(&[u8], &str); 5] = [
            (br#"{"github_token":"ghp_v","github_app_id":"1","github_app_installation_id":2,"github_app_private_key":"k"}"#, "both"),
            (br#"{"github_app_id":"1"}"#, "github_app_installation_id"),
            (br#"{"github_app_installation_id":"ghp_v"}"#, "github_app_installation_id"),
            (br#"{"github_token":"ghp_v""#, "JSON"),
            (br#"["ghp_v"]"#, "object"),
        ];
        for (raw, says) in cases {
            let err = parse_app_config(raw).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("ghp_v"), "the value is echoed: {err}");
        }
    }
}
