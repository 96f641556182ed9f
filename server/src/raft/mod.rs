//! openraft wiring: the type configuration, Raft configuration, and the gRPC
//! transport between servers.

mod types;

pub use types::*;
