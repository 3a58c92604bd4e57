//! The Kubernetes client the scaler talks through: kube-rs's `Client` over the kube
//! config's own TLS, auth, base URI and extra headers, with HTTP/2 offered (ALPN `h2`,
//! then `http/1.1`), as client-go, and so ARC's Go listener, does.
//!
//! kube-rs's default stack speaks HTTP/1.1 only. Over HTTP/1.1 each of a message's up to 50
//! concurrent runner-status patches takes a connection of its own and a TLS record, write
//! and read per request; over HTTP/2 they share one connection and its writes: the
//! runner-patch system calls were the largest single cost of a job in the 10,000-job burst
//! (docs/benchmarks.md, CPU per job). A server that does not offer `h2` is spoken to in
//! HTTP/1.1 as before.
//!
//! A kube config with a proxy keeps kube-rs's own stack (it tunnels through the proxy).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt as _;
use tower::{BoxError, ServiceBuilder};

use crate::error::ScalerError;

fn client_config_error(e: impl std::fmt::Display) -> ScalerError {
    ScalerError::ClientConfig(e.to_string())
}

/// A client for `config` (whose `default_retry` the caller has decided).
pub(crate) fn kube_client(config: kube::Config) -> Result<kube::Client, ScalerError> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config).map_err(client_config_error);
    }
    let mut http = HttpConnector::new();
    // The cluster URL decides the scheme; the TLS connector below handles https.
    http.enforce_http(false);
    let tls = config.rustls_client_config().map_err(client_config_error)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    // The same connection timeouts kube-rs's own stack applies.
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(client_config_error)?)
        .layer(config.extra_headers_layer().map_err(client_config_error)?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}
