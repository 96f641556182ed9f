//! One gRPC channel per peer address, created lazily and reused by every
//! replication stream, vote, snapshot and forwarded client request to that
//! peer. A tonic `Channel` multiplexes calls over one HTTP/2 connection and
//! reconnects by itself, so there is never a reason to dial twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How long dialing a peer may take before the call fails as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A cache of channels by peer address. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// A peer address that is not a valid URI authority.
#[derive(Debug, thiserror::Error)]
#[error("invalid peer address {addr:?}: {source}")]
pub struct BadAddress {
    /// The address.
    pub addr: String,
    /// Why tonic refused it.
    #[source]
    pub source: tonic::transport::Error,
}

impl Peers {
    /// The channel to `addr` (`host:port`), created without connecting.
    pub fn channel(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|source| BadAddress {
            addr: addr.to_owned(),
            source,
        })?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}
