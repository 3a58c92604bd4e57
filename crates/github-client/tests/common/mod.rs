//! What the client's integration tests share.

use std::time::Duration;

use github_client::{ClientOptions, ProxyConfig, RetryPolicy};

/// Fast options: `max_retries` retries with tiny backoffs (5 ms, capped at `max_backoff`),
/// no proxy from the environment, GitHub.com rather than GHES.
pub fn fast_options(max_retries: u32, max_backoff: Duration) -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_retries,
            backoff: retry::Backoff::new(
                Duration::from_millis(5),
                max_backoff,
                retry::policies::GITHUB_REQUEST.retry_after_cap,
            ),
        },
        proxy: Some(ProxyConfig::default()),
        force_ghes: Some(false),
        ..ClientOptions::default()
    }
}
