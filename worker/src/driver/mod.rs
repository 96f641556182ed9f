//! Drivers: how an attempt becomes a running task — a container
//! ([`docker`]) or a host process group ([`exec`]).
//!
//! Both take a channel for the task's output (and their own progress notes,
//! on the system stream) and give the same shape back ([`Started`]): the
//! exit once it happens, and a [`Stopper`] that stops the task from anywhere
//! — SIGTERM, then SIGKILL after a grace period, unless it exited first.

pub mod cgroup;
pub mod docker;
pub mod exec;

use std::collections::HashMap;
use std::time::Duration;

use rota_proto::v1 as pb;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::journal::Exit;

/// A piece of a task's output.
#[derive(Debug)]
pub struct Output {
    /// Which stream.
    pub stream: pb::LogStream,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What identifies a started task on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskId {
    /// A container id.
    Container(String),
    /// A process group id.
    ProcessGroup(i32),
}

/// A task that started.
pub struct Started {
    /// Its id on this host.
    pub id: TaskId,
    /// Its exit, sent once it ended and its output was read (all of it sent
    /// to the output channel the driver was given).
    pub exit: oneshot::Receiver<Exit>,
    /// Stops it.
    pub stopper: Stopper,
}

/// Stops a task: SIGTERM, then SIGKILL after a grace period unless it
/// exited first.
#[derive(Clone)]
pub struct Stopper {
    kind: StopperKind,
    /// Cancelled when the task has exited.
    pub exited: CancellationToken,
}

#[derive(Clone)]
enum StopperKind {
    Exec { pgid: i32 },
    Docker { docker: bollard::Docker, id: String },
}

impl Stopper {
    /// Stops the task; returns once it has exited or was SIGKILLed.
    pub async fn stop(&self, grace: Duration) {
        if self.exited.is_cancelled() {
            return;
        }
        match &self.kind {
            StopperKind::Exec { pgid } => exec::signal_group(*pgid, nix::sys::signal::Signal::SIGTERM),
            StopperKind::Docker { docker, id } => docker::signal(docker, id, "SIGTERM").await,
        }
        tokio::select! {
            () = self.exited.cancelled() => return,
            () = tokio::time::sleep(grace) => {}
        }
        match &self.kind {
            StopperKind::Exec { pgid } => exec::signal_group(*pgid, nix::sys::signal::Signal::SIGKILL),
            StopperKind::Docker { docker, id } => docker::signal(docker, id, "SIGKILL").await,
        }
    }
}

/// What a driver needs to start a task.
pub struct Launch<'a> {
    /// The assignment from the cluster.
    pub assignment: &'a pb::Assignment,
    /// The worker's id (a container label).
    pub worker_id: &'a str,
    /// The worker's metrics (container start latency, image pulls).
    pub metrics: &'a crate::metrics::Metrics,
    /// The host access this worker allows.
    pub policy: &'a crate::policy::HostPolicy,
}

impl Launch<'_> {
    /// The task spec.
    pub fn task(&self) -> pb::Task {
        self.assignment
            .spec
            .as_ref()
            .and_then(|s| s.task.clone())
            .unwrap_or_default()
    }

    /// The full environment of the task, as the cluster computed it.
    pub fn env(&self) -> &HashMap<String, String> {
        &self.assignment.env
    }
}
