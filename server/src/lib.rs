//! The rota server: a Raft-replicated store of job definitions (and, in later
//! issues, runs and workers), served over gRPC.
//!
//! Layout, from the pure core outwards:
//! - [`state`]: the domain and its deterministic transition function;
//! - [`spec`]: job specs at the network edge, validated into domain values;
//! - [`store`]: durability — the Raft log (raft-log WAL) and the state
//!   machine (sled), snapshots;
//! - [`raft`]: openraft wiring and the gRPC transport between servers;
//! - [`secrets`]: secret environment values, sealed with the cluster's key;
//! - [`scheduler`]: leader-only loops that propose ticks, placements and
//!   worker losses;
//! - [`api`]: the client-facing gRPC services;
//! - [`auth`]: who may call what (certificates, tokens) and the audit log;
//! - [`metrics`]: Prometheus metrics and health over HTTP;
//! - [`node`]: configuration, startup and graceful shutdown.

pub mod api;
pub mod auth;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod scheduler;
pub mod secrets;
pub mod spec;
pub mod state;
pub mod store;
