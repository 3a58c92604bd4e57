//! A forward proxy as corporate networks run them for HTTPS: `CONNECT host:port` opens a
//! tunnel, answered `200 Connection established`; anything else is answered 405. Every
//! tunnel goes to one upstream (a fake), whatever host was asked for, so a client can be
//! pointed at a name that does not resolve ([`PROXIED_HOST`]) and reach the fake only
//! through the proxy. The targets asked for are recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A host name the fakes' certificates are valid for and that no resolver knows: requests
/// to it work through [`ConnectProxy`] only (loopback addresses are never proxied).
pub const PROXIED_HOST: &str = "fakes.proxied.test";

/// The longest request head accepted before the tunnel is refused.
const MAX_HEAD: usize = 8 * 1024;

/// The running proxy; stops when dropped.
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    /// Listen on `127.0.0.1:0`, tunnelling every `CONNECT` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&tunnels);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, upstream, Arc::clone(&log)));
            }
        });
        Ok(Self {
            addr,
            tunnels,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, as `https_proxy` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `host:port` of every tunnel asked for, in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.tunnels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tunnel(mut client: TcpStream, upstream: SocketAddr, log: Arc<Mutex<Vec<String>>>) {
    let Some(head) = read_head(&mut client).await else {
        return;
    };
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "CONNECT" || target.is_empty() {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(target.to_owned());
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// The request head up to the blank line, byte by byte so nothing of the tunnel is read.
async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD || client.read_exact(&mut byte).await.is_err() {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
