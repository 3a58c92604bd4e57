//! What the recorders' integration tests share: the job fixture and span-exporter settings.
#![allow(dead_code)] // each test binary uses its own part

pub mod jobs;

use std::collections::HashMap;

use recorders::{IdScheme, OtelSettings};

/// Settings for a collector at `endpoint` resolved with no environment variables.
pub fn otel_settings(endpoint: &str, insecure: bool, scheme: IdScheme) -> OtelSettings {
    OtelSettings::resolve(Some(endpoint), insecure, scheme, &HashMap::new())
        .unwrap()
        .unwrap()
}
