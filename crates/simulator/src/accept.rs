//! The accept loop every fake server runs: plain TCP or TLS, one HTTP/1 connection task per
//! client, all closed when the shutdown flag turns true.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::faults::DropConnection;

/// How long to wait after a failed `accept` (`EMFILE` and the like) before trying again:
/// the error persists until a descriptor frees up, so retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `shutdown` is true, serving each with `handle`. `name` labels
/// the logs.
pub(crate) async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, DropConnection>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(server = name, %error, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handle = handle.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, conn_shutdown, handle).await,
                Some(acceptor) => {
                    let tls = tokio::select! {
                        _ = conn_shutdown.wait_for(|s| *s) => return,
                        tls = acceptor.accept(stream) => tls,
                    };
                    match tls {
                        Ok(tls) => serve_connection(tls, conn_shutdown, handle).await,
                        Err(error) => {
                            tracing::debug!(server = name, %error, "TLS handshake failed")
                        }
                    }
                }
            }
        });
    }
}

async fn serve_connection<S, H, F>(stream: S, mut shutdown: watch::Receiver<bool>, handle: H)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, DropConnection>> + Send + 'static,
{
    let service = hyper::service::service_fn(handle);
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// A fake's server task and its shutdown flag: the fake keeps this in its shared state
/// (the task is spawned once that state exists, so it is set afterwards).
pub(crate) struct ServerTask {
    shutdown: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ServerTask {
    /// The flag, and the receiver [`serve`] watches.
    pub(crate) fn new() -> (Self, watch::Receiver<bool>) {
        let (shutdown, receiver) = watch::channel(false);
        let task = std::sync::Mutex::new(None);
        (Self { shutdown, task }, receiver)
    }

    pub(crate) fn set(&self, task: tokio::task::JoinHandle<()>) {
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Raise the flag (every connection closes) and wait for the accept loop to end.
    pub(crate) async fn stop(&self) {
        let _ = self.shutdown.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
