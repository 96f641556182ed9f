//! Opening a worker session: one bidirectional gRPC stream to the leader.
//!
//! A follower refuses the stream with UNAVAILABLE and names the leader in the
//! `rota-leader` metadata; [`connect`] follows that hint, and otherwise tries
//! the configured servers in turn. The caller retries a failed round with
//! [`Backoff`].

use std::time::{Duration, Instant};

use rand::Rng;
use rota_proto::tls::{Connector, Tls};
use rota_proto::v1 as pb;
use rota_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};

/// Outbound messages a session may queue before it counts as stuck.
pub const OUTBOUND_QUEUE: usize = 1024;

/// How long a server has to answer a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// An open, registered session.
pub struct Session {
    /// The server it is open on.
    pub server: String,
    /// Messages to the server.
    pub outbound: mpsc::Sender<pb::WorkerMessage>,
    /// Messages from the server, after `registered`.
    pub inbound: tonic::Streaming<pb::ServerMessage>,
    /// The server's answer to the registration.
    pub registered: pb::Registered,
    /// When the registration was sent (the lease counts from then).
    pub sent_at: Instant,
}

/// How the worker reaches servers: TLS or not, and its token.
#[derive(Clone, Default)]
pub struct Link {
    /// Dials servers.
    pub connector: Connector,
    /// `Bearer <token>`, if the worker has one.
    pub authorization: Option<MetadataValue<Ascii>>,
}

impl Link {
    /// A link with `tls` (if any) and `token` (if any).
    pub fn new(tls: Option<&std::sync::Arc<Tls>>, token: Option<&str>) -> Result<Link, String> {
        let authorization = match token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "token_file: the token has characters a gRPC header cannot carry".to_owned())?,
            ),
            None => None,
        };
        Ok(Link {
            connector: Connector::new(tls),
            authorization,
        })
    }
}

/// Opens a session stream on the server at `addr` with `first` as its first
/// message. The server's refusal is the error (e.g. UNAVAILABLE from a
/// follower, with the leader's address in the `rota-leader` metadata).
pub async fn open(
    addr: &str,
    first: pb::WorkerMessage,
    link: &Link,
) -> Result<(mpsc::Sender<pb::WorkerMessage>, tonic::Streaming<pb::ServerMessage>), tonic::Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::invalid_argument(format!("server address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(4))
        .keep_alive_while_idle(true);
    let channel = link
        .connector
        .connect(endpoint)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connecting to {addr}: {}", error_chain(&e))))?;
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    tx.send(first)
        .await
        .map_err(|_| tonic::Status::internal("outbound queue closed"))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(authorization) = &link.authorization {
        request.metadata_mut().insert("authorization", authorization.clone());
    }
    let response = WorkerServiceClient::new(channel).session(request).await?;
    Ok((tx, response.into_inner()))
}

/// An error with its causes (a TLS refusal is only in the source chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The leader named by a refusal, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(rota_proto::LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// One round of connecting: each of `servers` once, following leader hints
/// (a few hops), until one registers the worker.
pub async fn connect(servers: &[String], register: &pb::Register, link: &Link) -> Result<Session, String> {
    let first = || pb::WorkerMessage {
        seq: 0,
        message: Some(pb::worker_message::Message::Register(register.clone())),
    };
    let mut candidates: Vec<String> = servers.iter().rev().cloned().collect();
    let mut hops = 0;
    let mut errors = Vec::new();
    while let Some(addr) = candidates.pop() {
        hops += 1;
        if hops > servers.len() + 4 {
            break;
        }
        let sent_at = Instant::now();
        let opened = tokio::time::timeout(REGISTER_TIMEOUT, open(&addr, first(), link))
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer to the session request")));
        let (outbound, mut inbound) = match opened {
            Ok(opened) => opened,
            Err(status) => {
                if let Some(hint) = leader_hint(&status).filter(|h| *h != addr) {
                    candidates.push(hint);
                }
                errors.push(format!("{addr}: {}", status.message()));
                continue;
            }
        };
        match tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::ServerMessage {
                message: Some(pb::server_message::Message::Registered(registered)),
            }))) => {
                return Ok(Session {
                    server: addr,
                    outbound,
                    inbound,
                    registered,
                    sent_at,
                });
            }
            Ok(Ok(other)) => errors.push(format!("{addr}: expected Registered, got {other:?}")),
            Ok(Err(status)) => {
                if let Some(hint) = leader_hint(&status).filter(|h| *h != addr) {
                    candidates.push(hint);
                }
                errors.push(format!("{addr}: {}", status.message()));
            }
            Err(_) => errors.push(format!("{addr}: no answer to the registration in {REGISTER_TIMEOUT:?}")),
        }
    }
    Err(errors.join("; "))
}

/// Exponential backoff with jitter for reconnecting: 200 ms doubling to 2 s,
/// each delay drawn from its upper half. Short, because the lease keeps
/// running while the worker is away: after an election it must find the
/// new leader quickly.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(2);

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Backoff::MAX));
        assert!(delays[9] >= Backoff::MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }
}
