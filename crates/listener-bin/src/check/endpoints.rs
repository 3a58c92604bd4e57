//! The listener's own endpoints: the OTLP collector it exports to, and the metrics address
//! it serves on (free, or already served by the running listener this check runs beside).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use super::report::Check;
use crate::settings::Settings;

const OTLP: &str = "otlp";
const METRICS: &str = "metrics-addr";
/// This module's checks, in the order they run.
pub const NAMES: &[&str] = &[OTLP, METRICS];
/// Bound on the `/healthz` probe of a listener already bound to the metrics address.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn otlp(settings: &Settings) -> Check {
    let Some(otel) = &settings.otel else {
        return Check::skip(OTLP, "no OTLP endpoint configured: no spans are exported");
    };
    match recorders::probe_collector(otel).await {
        Ok(status) => Check::ok(
            OTLP,
            format!(
                "collector at {} accepted an empty export (HTTP {status})",
                otel.endpoint
            ),
        ),
        Err(e) => Check::fail(
            OTLP,
            e.to_string(),
            "check `otel_endpoint` (or OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT), that the collector listens for OTLP/HTTP there, and `otel_insecure` for plain http",
        ),
    }
}

pub async fn metrics(settings: &Settings) -> Check {
    let Some(metrics) = &settings.metrics else {
        return Check::skip(
            METRICS,
            "config key `metrics_addr` is empty: no metrics server",
        );
    };
    let bind = match recorders::listen_addr(&metrics.addr) {
        Ok(bind) => bind,
        Err(e) => {
            return Check::fail(
                METRICS,
                format!("config key `metrics_addr`: {e}"),
                "set `metrics_addr` to `:port` or `host:port`",
            );
        }
    };
    let addr: SocketAddr = match tokio::net::lookup_host(&bind).await.map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            return Check::fail(
                METRICS,
                format!("config key `metrics_addr`: {bind:?} does not resolve to an address"),
                "set `metrics_addr` to `:port` or `host:port` with a local host",
            );
        }
    };
    match tokio::net::TcpListener::bind(addr).await {
        // Dropped at once: the check only proves the listener could bind it.
        Ok(_) => Check::ok(METRICS, format!("{bind} is free")),
        Err(e) if e.kind() == ErrorKind::AddrInUse => match healthz(addr).await {
            Ok(()) => Check::ok(
                METRICS,
                format!("{bind} is served by a running listener (/healthz answered 200)"),
            ),
            Err(reason) => Check::fail(
                METRICS,
                format!("{bind} is in use and not by a listener: {reason}"),
                "free the port or choose another `metrics_addr`",
            ),
        },
        Err(e) => Check::fail(
            METRICS,
            format!("config key `metrics_addr`: cannot bind {bind}: {e}"),
            "choose an address of this host and a port the container may bind",
        ),
    }
}

/// GET `/healthz` on `addr` (a wildcard address is reached on loopback).
async fn healthz(addr: SocketAddr) -> Result<(), String> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let tls = github_client::tls_config(None).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(HEALTHZ_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://{target}/healthz"))
        .send()
        .await
        .map_err(|e| format!("/healthz did not answer: {}", e.without_url()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("/healthz answered {}", response.status()))
    }
}
