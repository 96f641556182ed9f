//! The rota worker agent.
//!
//! It holds one session with the cluster's leader ([`session`]), runs the
//! attempts assigned to it as containers of the local Docker engine or as
//! host processes ([`driver`]), ships their output and exit back, and stops
//! them itself when it cannot renew its lease ([`agent`]). What it must not
//! forget across a restart lives in its data directory ([`journal`],
//! [`logbuf`], [`images`]).

pub mod agent;
pub mod config;
pub mod driver;
pub mod images;
pub mod journal;
pub mod logbuf;
pub mod metrics;
pub mod policy;
pub mod session;

pub use agent::Agent;
pub use config::Config;
