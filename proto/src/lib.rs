//! The `rota.v1` gRPC API: protobuf messages and tonic clients and servers,
//! generated at build time from `proto/rota/v1/*.proto`.
//!
//! This crate holds wire types (and the parsing of the quantity strings they
//! carry, [`quantity`]); with the `propagation` feature, trace context in
//! gRPC metadata, and with `trace` also logging and span export (module
//! `trace`); with `telemetry`, what the server
//! and the worker share to be observed (module `telemetry`); with `tls`,
//! mutual TLS for every link (module `tls`) and API token secrets (module
//! `token`). Domain types, validation and the conversions
//! between the two live in the crates that use them.

pub mod quantity;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tls")]
pub mod token;
#[cfg(feature = "propagation")]
pub mod trace;

/// Generated code of package `rota.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rota.v1");
}

/// Encoded `FileDescriptorSet` of every rota proto file (and the well-known
/// types they import), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rota_descriptor.bin"));

/// Response metadata key that carries the leader's address on `UNAVAILABLE`.
pub const LEADER_METADATA_KEY: &str = "rota-leader";

/// Request metadata key set on a request a server forwarded to the leader, so
/// that it is never forwarded twice.
pub const FORWARDED_METADATA_KEY: &str = "rota-forwarded";
