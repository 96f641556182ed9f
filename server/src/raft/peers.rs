//! One gRPC channel per peer address, created lazily and reused by every
//! replication stream, vote, snapshot and forwarded client request to that
//! peer. A tonic `Channel` multiplexes calls over one HTTP/2 connection and
//! reconnects by itself, so there is never a reason to dial twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rota_proto::tls::Connector;
use tonic::transport::{Channel, Endpoint};

/// How long dialing a peer may take before the call fails as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The environment variable of the test hook that routes peer links
/// through other addresses (see [`Peers::with_routes`]).
pub const ROUTES_VAR: &str = "ROTA_TEST_PEER_ROUTES";

/// A cache of channels by peer address. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    routes: Arc<HashMap<String, String>>,
    connector: Connector,
}

/// Parses `addr=via,addr=via` (the value of [`ROUTES_VAR`]).
pub fn parse_routes(value: &str) -> Result<HashMap<String, String>, String> {
    value
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((addr, via)) if !addr.trim().is_empty() && !via.trim().is_empty() => {
                Ok((addr.trim().to_owned(), via.trim().to_owned()))
            }
            _ => Err(format!(
                "{ROUTES_VAR}: {entry:?} is not `peer-address=dial-address` (entries separated by commas)"
            )),
        })
        .collect()
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
    /// Peers that dial `routes[addr]` whenever they mean `addr`. This is a
    /// test hook: the chaos tests put a proxy of their own on every
    /// server-to-server link to cut, delay or heal it one direction at a
    /// time ([`ROUTES_VAR`]); production servers have no routes.
    pub fn with_routes(routes: HashMap<String, String>) -> Self {
        Self {
            channels: Arc::default(),
            routes: Arc::new(routes),
            connector: Connector::plain(),
        }
    }

    /// The same, dialing through `connector` (TLS when the cluster uses it).
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = connector;
        self
    }

    /// The channel to `addr` (`host:port`), created without connecting.
    pub fn channel(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let dial = self.routes.get(addr).map_or(addr, String::as_str);
        let endpoint = Endpoint::from_shared(format!("http://{dial}")).map_err(|source| BadAddress {
            addr: addr.to_owned(),
            source,
        })?;
        let channel = self.connector.channel(
            endpoint
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5)),
        );
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_routes;

    #[test]
    fn routes_parse_or_name_the_bad_entry() {
        let routes = parse_routes("127.0.0.1:1=127.0.0.1:9, 127.0.0.1:2=127.0.0.1:8,").expect("valid");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes["127.0.0.1:2"], "127.0.0.1:8");
        let err = parse_routes("127.0.0.1:1").expect_err("no via");
        assert!(
            err.contains("ROTA_TEST_PEER_ROUTES") && err.contains("127.0.0.1:1"),
            "{err}"
        );
        assert!(parse_routes("=x").is_err());
    }
}
