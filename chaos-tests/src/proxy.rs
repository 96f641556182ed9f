//! A TCP proxy the test controls, for cutting a process off from a server
//! without touching either: while cut, the proxy forwards nothing in either
//! direction (connections stay open and stall, new ones are accepted and
//! stall too) — what a network partition looks like to both ends.

use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy.
pub struct Proxy {
    /// Where to connect to reach the target through the proxy.
    pub addr: String,
    cut: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let target = target.to_owned();
        let relay_cut = cut.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let cut = relay_cut.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::select! {
                        () = relay(in_read, out_write, cut.clone()) => {}
                        () = relay(out_read, in_write, cut) => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, cut, accept })
    }

    /// Stops forwarding (until [`Proxy::restore`]).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Stalled relays end with the runtime; open ones see their peer go.
        self.cut.send_replace(true);
    }
}

/// Copies `from` to `to`, pausing while the proxy is cut.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = cut.wait_for(|c| *c) => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just before a cut are held back until the restore.
        if cut.wait_for(|c| !*c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
