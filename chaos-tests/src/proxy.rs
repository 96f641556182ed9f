//! A TCP proxy the test controls, for cutting a process off from a server
//! without touching either: while cut, the proxy forwards nothing in either
//! direction (connections stay open and stall, new ones are accepted and
//! stall too) — what a network partition looks like to both ends. It can
//! also cut only the replies (requests still arrive, answers are held
//! back), which is how a response gets lost after the server acted on it.
//! It can slow every forwarded chunk down by a delay, and drop every open
//! connection at once (both ends see it close), for lossy, slow links.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    replies_cut: Arc<watch::Sender<bool>>,
    forwarded: Arc<AtomicU64>,
    delay: Arc<watch::Sender<Duration>>,
    resets: Arc<watch::Sender<u64>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let addr = listener.local_addr()?.to_string();
        let cut = Arc::new(watch::channel(false).0);
        let replies_cut = Arc::new(watch::channel(false).0);
        let forwarded = Arc::new(AtomicU64::new(0));
        let delay = Arc::new(watch::channel(Duration::ZERO).0);
        let resets = Arc::new(watch::channel(0u64).0);
        let target = target.to_owned();
        let (relay_cut, relay_replies_cut, relay_forwarded) = (cut.clone(), replies_cut.clone(), forwarded.clone());
        let (relay_delay, relay_resets) = (delay.clone(), resets.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let (cut, replies_cut) = (relay_cut.subscribe(), relay_replies_cut.subscribe());
                let delay = relay_delay.subscribe();
                let mut resets = relay_resets.subscribe();
                let forwarded = relay_forwarded.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let requests = Gate {
                        cut: cut.clone(),
                        direction_cut: None,
                        delay: delay.clone(),
                    };
                    let replies = Gate {
                        cut,
                        direction_cut: Some(replies_cut),
                        delay,
                    };
                    tokio::select! {
                        () = relay(in_read, out_write, requests, Some(forwarded)) => {}
                        () = relay(out_read, in_write, replies, None) => {}
                        _ = resets.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            cut,
            replies_cut,
            forwarded,
            delay,
            resets,
            accept,
        })
    }

    /// Stops forwarding (until [`Proxy::restore`]).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Stops forwarding replies (target to client) only; requests still
    /// arrive.
    pub fn cut_replies(&self) {
        self.replies_cut.send_replace(true);
    }

    /// Forwards again, both ways.
    pub fn restore(&self) {
        self.cut.send_replace(false);
        self.replies_cut.send_replace(false);
    }

    /// Holds every chunk back by `delay` before forwarding it (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    /// Drops every connection open through the proxy; both ends see it
    /// close. New connections are accepted as before.
    pub fn reset_connections(&self) {
        self.resets.send_modify(|generation| *generation += 1);
    }

    /// Bytes forwarded from clients to the target so far.
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Stalled relays end with the runtime; open ones see their peer go.
        self.cut.send_replace(true);
    }
}

/// Copies `from` to `to`, pausing while `gate` is cut and delaying each
/// chunk by its delay; counts the bytes written in `counter`.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: Gate,
    counter: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if !gate.open().await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            closed = gate.closed() => {
                if !closed {
                    return;
                }
                continue;
            }
        };
        let delay = *gate.delay.borrow();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // Bytes read just before a cut are held back until the restore.
        if !gate.open().await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(counter) = &counter {
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
}

/// The cuts and the delay that apply to one direction.
struct Gate {
    cut: watch::Receiver<bool>,
    direction_cut: Option<watch::Receiver<bool>>,
    delay: watch::Receiver<Duration>,
}

impl Gate {
    /// Waits until neither cut is on; false if the proxy is gone.
    async fn open(&mut self) -> bool {
        loop {
            if self.cut.wait_for(|c| !*c).await.is_err() {
                return false;
            }
            let Some(direction) = &mut self.direction_cut else {
                return true;
            };
            if direction.wait_for(|c| !*c).await.is_err() {
                return false;
            }
            if !*self.cut.borrow() {
                return true;
            }
        }
    }

    /// Waits until a cut comes on; false if the proxy is gone.
    async fn closed(&mut self) -> bool {
        let Gate { cut, direction_cut, .. } = self;
        match direction_cut {
            None => cut.wait_for(|c| *c).await.is_ok(),
            Some(direction) => tokio::select! {
                r = cut.wait_for(|c| *c) => r.is_ok(),
                r = direction.wait_for(|c| *c) => r.is_ok(),
            },
        }
    }
}
