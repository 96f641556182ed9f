//! The rota worker agent (skeleton).
//!
//! It will connect to the servers over the worker protocol, run tasks through
//! the Docker engine or as host processes, ship logs and exit status back, and
//! fence itself when it loses its lease (issue #4). Nothing of that exists yet;
//! this crate only reserves the layout of docs/architecture.md.
