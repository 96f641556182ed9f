//! openraft wiring: the type configuration, Raft timing, and the gRPC
//! transport between servers ([`network`] sends, [`service`] receives).
//!
//! openraft is used here and, for its storage traits, in [`crate::store`];
//! the rest of the server talks to Raft through [`crate::node`].

// openraft fixes the error types of its network and storage traits; they are large.
#![allow(clippy::result_large_err)]

pub mod failover;
pub mod network;
pub mod peers;
pub mod service;
mod types;

pub use types::*;
