//! HTTP serving (placeholder while the routes are written).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::Inner;

pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = (&inner, &acceptor);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => { drop(accepted); }
        }
    }
}
