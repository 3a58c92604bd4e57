//! Property tests of the config parser (`Config::from_json`): no input panics it, every
//! malformed field is named in the error, and no secret is echoed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use listener_bin::config::Config;
use proptest::prelude::*;
use serde_json::{Value, json};

/// ARC's config.json (every key, as its controller writes it) with the OTel keys, and a
/// token the tests look for in every error.
fn valid() -> Value {
    let mut config: Value = serde_json::from_str(include_str!("fixtures/arc_config.json")).unwrap();
    config["github_token"] = json!("ghp_propSecret00000000000000000000000000");
    config["otel_endpoint"] = json!("");
    config["otel_insecure"] = json!(false);
    config
}

const STRING_KEYS: &[&str] = &[
    "configure_url",
    "vault_type",
    "vault_lookup_key",
    "github_app_private_key",
    "github_token",
    "ephemeral_runner_set_namespace",
    "ephemeral_runner_set_name",
    "runner_scale_set_name",
    "server_root_ca",
    "log_level",
    "log_format",
    "metrics_addr",
    "metrics_endpoint",
    "otel_endpoint",
];
const INT_KEYS: &[&str] = &[
    "github_app_installation_id",
    "max_runners",
    "min_runners",
    "runner_scale_set_id",
];

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    simulator::strategies::any_json(".{0,12}".boxed())
}

/// A value of the wrong JSON type for a string key.
fn not_a_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!([1, 2])),
        Just(json!({"a": "b"})),
    ]
}

/// A value of the wrong JSON type (or out of range) for an integer key.
fn not_an_int() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        ".{0,10}".prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!(1e300)),
        Just(json!(u64::MAX)),
        Just(json!([3])),
        Just(json!({"n": 3})),
    ]
}

/// `key` set to a value of the wrong type is refused, the error names the key, and the
/// token elsewhere in the config is not echoed.
fn wrong_type_is_named(key: &str, value: Value) -> Result<(), TestCaseError> {
    let mut config = valid();
    config[key] = value.clone();
    let err = Config::from_json(config.to_string().as_bytes()).expect_err("accepted");
    let text = err.to_string();
    prop_assert!(text.contains(key), "{key}={value}: {text}");
    prop_assert!(!text.contains("ghp_propSecret"), "secret echoed: {text}");
    Ok(())
}

proptest! {
    #![proptest_config(simulator::strategies::seeded(256))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = Config::from_json(&raw) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        let raw = serde_json::to_vec(&value).unwrap();
        if let Err(e) = Config::from_json(&raw) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_values_of_known_keys_never_panic(
        key in prop::sample::select([STRING_KEYS, INT_KEYS, &["metrics", "otel_insecure", "github_app_id", "azure_key_vault"]].concat()),
        value in any_json(),
    ) {
        let mut config = valid();
        config[key] = value;
        let _ = Config::from_json(config.to_string().as_bytes());
    }

    #[test]
    fn arbitrary_key_vault_settings_never_panic_and_are_named(
        key in prop::sample::select(vec!["tenant_id", "client_id", "url", "certificate_path", "proxy"]),
        value in any_json(),
    ) {
        let mut config = valid();
        config["github_token"] = json!("");
        config["vault_type"] = json!("azure_key_vault");
        config["vault_lookup_key"] = json!("arc-github");
        config["azure_key_vault"] = json!({
            "tenant_id": "t", "client_id": "c", "url": "https://v.vault.azure.net",
            "certificate_path": "/etc/cert.pem",
        });
        config["azure_key_vault"][key] = value;
        if let Err(e) = Config::from_json(config.to_string().as_bytes()) {
            prop_assert!(e.to_string().contains("azure_key_vault"), "{e}");
        }
    }

    #[test]
    fn a_string_key_of_the_wrong_type_is_named(key in prop::sample::select(STRING_KEYS), value in not_a_string()) {
        wrong_type_is_named(key, value)?;
    }

    #[test]
    fn an_int_key_of_the_wrong_type_is_named(key in prop::sample::select(INT_KEYS), value in not_an_int()) {
        wrong_type_is_named(key, value)?;
    }

    #[test]
    fn a_secret_in_a_malformed_config_is_never_echoed(secret in "[A-Za-z0-9_]{20,40}", bad in not_an_int()) {
        let mut config = valid();
        config["github_token"] = json!(secret);
        config["max_runners"] = bad;
        let err = Config::from_json(config.to_string().as_bytes()).expect_err("accepted");
        prop_assert!(!err.to_string().contains(&secret));
    }

    #[test]
    fn valid_ranges_are_accepted(min in 0i64..1000, extra in 0i64..1000, id in 1i64..i64::MAX, level in prop::sample::select(vec!["", "debug", "info", "warn", "error"])) {
        let mut config = valid();
        config["min_runners"] = json!(min);
        config["max_runners"] = json!(min + extra);
        config["runner_scale_set_id"] = json!(id);
        config["log_level"] = json!(level);
        let parsed = Config::from_json(config.to_string().as_bytes());
        prop_assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn min_above_max_is_named(max in 0i64..1000, over in 1i64..1000) {
        let mut config = valid();
        config["min_runners"] = json!(max + over);
        config["max_runners"] = json!(max);
        let text = Config::from_json(config.to_string().as_bytes()).expect_err("accepted").to_string();
        prop_assert!(text.contains("max_runners"), "{text}");
    }
}

#[test]
fn a_json_document_that_is_not_an_object_is_a_clear_error() {
    for raw in ["[]", "\"x\"", "3", "null", "", "{", "\u{feff}"] {
        let text = Config::from_json(raw.as_bytes())
            .expect_err(raw)
            .to_string();
        assert!(
            text.contains("JSON") || text.contains("object"),
            "{raw:?}: {text}"
        );
    }
}
