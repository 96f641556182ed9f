//! The docker driver: a task as a container of the local Docker engine
//! (`DOCKER_HOST`, or the default socket), through bollard.
//!
//! Every container the worker creates is named `rota-<run>-<epoch>` and
//! labelled with [`LABEL_RUN`], [`LABEL_EPOCH`], [`LABEL_WORKER`] and
//! [`LABEL_JOB`]; reconciliation finds them by the worker label. Output is
//! read with the engine's log API (follow), which replays a container's
//! output from its start in the same order every time — so an adopted
//! container's output resumes exactly where the worker's buffer ends.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RemoveImageOptions, StatsOptions,
};
use futures::StreamExt;
use rota_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Launch, Output, Started, Stopper, StopperKind, TaskId};
use crate::journal::Exit;

/// Label with the run id.
pub const LABEL_RUN: &str = "rota.run";
/// Label with the attempt's epoch.
pub const LABEL_EPOCH: &str = "rota.epoch";
/// Label with the worker's id.
pub const LABEL_WORKER: &str = "rota.worker";
/// Label with the job's name.
pub const LABEL_JOB: &str = "rota.job";

/// How long the output of an exited container may take to drain.
const DRAIN: Duration = Duration::from_secs(5);

/// Connects to the engine and agrees on an API version.
pub async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_defaults().map_err(|e| format!("Docker engine: {e}"))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| format!("Docker engine: {e}"))?;
    docker.ping().await.map_err(|e| format!("Docker engine: {e}"))?;
    Ok(docker)
}

/// Whether an engine error is a 404.
fn not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// Sends `signal` to a container; one that is gone or stopped is fine.
pub async fn signal(docker: &Docker, id: &str, signal: &str) {
    let options = KillContainerOptions {
        signal: signal.to_owned(),
    };
    if let Err(e) = docker.kill_container(id, Some(options)).await {
        tracing::debug!(container = %id, signal, error = %e, "signal not delivered");
    }
}

/// Removes a container (forcibly: it is killed if it runs).
pub async fn remove(docker: &Docker, id: &str) -> Result<(), String> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(format!("removing container {id}: {e}")),
    }
}

/// A container of this worker, as reconciliation sees it.
#[derive(Debug, Clone)]
pub struct OwnContainer {
    /// Its id.
    pub id: String,
    /// The attempt it runs, if its labels say.
    pub attempt: Option<(String, u64)>,
    /// Its image.
    pub image: String,
}

/// Every container (running or not) labelled as this worker's.
pub async fn list_own(docker: &Docker, worker_id: &str) -> Result<Vec<OwnContainer>, String> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_WORKER}={worker_id}")])]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let attempt = labels
                .get(LABEL_RUN)
                .zip(labels.get(LABEL_EPOCH).and_then(|e| e.parse::<u64>().ok()))
                .map(|(run, epoch)| (run.clone(), epoch));
            Some(OwnContainer {
                id: c.id?,
                attempt,
                image: c.image.unwrap_or_default(),
            })
        })
        .collect())
}

/// The image reference to pull: a tag is added when there is none, since
/// the engine pulls every tag of an untagged name.
fn pull_reference(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || name.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

async fn system(out: &mpsc::Sender<Output>, line: String) {
    let _ = out
        .send(Output {
            stream: pb::LogStream::System,
            data: format!("{line}\n").into_bytes(),
        })
        .await;
}

/// Makes sure `image` is present, pulling it as `policy` says; progress
/// goes to the attempt's system log.
async fn ensure_image(
    docker: &Docker,
    image: &str,
    policy: pb::PullPolicy,
    out: &mpsc::Sender<Output>,
    metrics: &crate::metrics::Metrics,
) -> Result<(), String> {
    let present = match docker.inspect_image(image).await {
        Ok(_) => true,
        Err(e) if not_found(&e) => false,
        Err(e) => return Err(format!("inspecting image {image:?}: {e}")),
    };
    let pull = match policy {
        pb::PullPolicy::Always => true,
        pb::PullPolicy::Never if !present => {
            return Err(format!(
                "image {image:?} is not present on this worker and the job's pull policy is \"never\""
            ));
        }
        pb::PullPolicy::Never => false,
        pb::PullPolicy::IfNotPresent | pb::PullPolicy::Unspecified => !present,
    };
    if !pull {
        return Ok(());
    }
    let pulled = pull_image(docker, image, present, out).await;
    let result = if pulled.is_ok() { "ok" } else { "error" };
    metrics.image_pulls.with_label_values(&[result]).inc();
    pulled
}

/// Pulls `image`, progress to the attempt's system log; when the pull
/// fails but the image is `present`, that one is used.
async fn pull_image(docker: &Docker, image: &str, present: bool, out: &mpsc::Sender<Output>) -> Result<(), String> {
    let reference = pull_reference(image);
    system(out, format!("pulling image {reference}")).await;
    let options = CreateImageOptions {
        from_image: Some(reference.clone()),
        ..Default::default()
    };
    let mut progress = docker.create_image(Some(options), None, None);
    let mut last = String::new();
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(error) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("pulling image {reference}: {error}"));
                }
                // One line per change of status, not per progress tick.
                let status = format!(
                    "{}{}",
                    info.id.map(|id| format!("{id}: ")).unwrap_or_default(),
                    info.status.unwrap_or_default()
                );
                if status != last && info.progress_detail.is_none_or(|p| p.current.is_none()) {
                    system(out, format!("pull: {status}")).await;
                    last = status;
                }
            }
            Err(e) => {
                if present {
                    system(out, format!("pull failed ({e}); using the image present")).await;
                    return Ok(());
                }
                return Err(format!("pulling image {reference}: {e}"));
            }
        }
    }
    Ok(())
}

/// The container's configuration for `launch`.
fn container_body(launch: &Launch<'_>, task: &pb::Task) -> Result<ContainerCreateBody, String> {
    let assignment = launch.assignment;
    let mut host = HostConfig::default();
    if let Some(bytes) = launch.policy.container_memory(task)? {
        let bytes = i64::try_from(bytes).map_err(|_| "task.resources.memory is too large".to_owned())?;
        host.memory = Some(bytes);
        // No swap beyond the limit: over it, the task is OOM-killed.
        host.memory_swap = Some(bytes);
    }
    if let Some(resources) = &task.resources
        && resources.cpu > 0.0
    {
        host.nano_cpus = Some((resources.cpu * 1e9) as i64);
    }
    if !task.network_mode.is_empty() {
        host.network_mode = Some(task.network_mode.clone());
    }
    if let Some(access) = &task.host {
        host.privileged = Some(access.privileged);
        host.cap_add = (!access.cap_add.is_empty()).then(|| access.cap_add.clone());
        // Resolved and checked now, right before the container is created.
        let binds = launch.policy.binds(task)?;
        host.binds = (!binds.is_empty()).then(|| binds.iter().map(|b| b.to_docker()).collect());
        host.devices = (!access.devices.is_empty()).then(|| {
            access
                .devices
                .iter()
                .map(|d| bollard::models::DeviceMapping {
                    path_on_host: Some(d.clone()),
                    path_in_container: Some(d.clone()),
                    cgroup_permissions: Some("rwm".into()),
                })
                .collect()
        });
        if access.host_pid {
            host.pid_mode = Some("host".into());
        }
        if access.host_ipc {
            host.ipc_mode = Some("host".into());
        }
    }
    let labels = HashMap::from([
        (LABEL_RUN.to_owned(), assignment.run_id.clone()),
        (LABEL_EPOCH.to_owned(), assignment.epoch.to_string()),
        (LABEL_WORKER.to_owned(), launch.worker_id.to_owned()),
        (LABEL_JOB.to_owned(), assignment.job.clone()),
    ]);
    let mut env: Vec<String> = launch.env().iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    Ok(ContainerCreateBody {
        image: Some(task.image.clone()),
        entrypoint: (!task.command.is_empty()).then(|| task.command.clone()),
        cmd: (!task.args.is_empty()).then(|| task.args.clone()),
        env: Some(env),
        working_dir: (!task.working_dir.is_empty()).then(|| task.working_dir.clone()),
        user: (!task.user.is_empty()).then(|| task.user.clone()),
        labels: Some(labels),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host),
        ..Default::default()
    })
}

/// The container name of an attempt.
pub fn container_name(run_id: &str, epoch: u64) -> String {
    format!("rota-{run_id}-{epoch}")
}

/// Pulls (as the policy says), creates and starts the container of `launch`.
pub async fn start(docker: &Docker, launch: &Launch<'_>, out: mpsc::Sender<Output>) -> Result<Started, String> {
    let task = launch.task();
    if task.image.is_empty() {
        return Err("task.image is empty; the docker driver needs an image".into());
    }
    // Before anything is pulled or created.
    launch.policy.check(&task)?;
    ensure_image(docker, &task.image, task.pull(), &out, launch.metrics).await?;
    let creating = std::time::Instant::now();
    let body = container_body(launch, &task)?;
    let name = container_name(&launch.assignment.run_id, launch.assignment.epoch);
    let options = || CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    let created = match docker.create_container(Some(options()), body.clone()).await {
        Ok(created) => created,
        // A leftover of an earlier try of this very attempt: replace it.
        Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {
            remove(docker, &name).await?;
            docker
                .create_container(Some(options()), body)
                .await
                .map_err(|e| format!("creating the container: {e}"))?
        }
        Err(e) => return Err(format!("creating the container: {e}")),
    };
    if let Err(e) = docker.start_container(&created.id, None).await {
        let _ = remove(docker, &created.id).await;
        return Err(format!("starting the container: {e}"));
    }
    launch
        .metrics
        .container_start_seconds
        .observe(creating.elapsed().as_secs_f64());
    Ok(follow(docker.clone(), created.id, 0, out))
}

/// Takes over a container started before the worker restarted: its output
/// from byte `skip` on (what the buffer lacks), its exit and resource use.
pub async fn adopt(docker: &Docker, id: &str, skip: u64, out: mpsc::Sender<Output>) -> Result<Started, String> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| format!("inspecting container {id}: {e}"))?;
    let state = inspect.state.unwrap_or_default();
    if state.started_at.as_deref().is_none_or(|s| s.starts_with("0001-")) {
        return Err(format!("container {id} never started"));
    }
    Ok(follow(docker.clone(), id.to_owned(), skip, out))
}

/// Follows a started container: output (after `skip` bytes) to `out`,
/// resource use sampled, and its exit.
fn follow(docker: Docker, id: String, skip: u64, out: mpsc::Sender<Output>) -> Started {
    let exited = CancellationToken::new();
    let (exit_tx, exit) = oneshot::channel();
    let logs = tokio::spawn(pump_logs(docker.clone(), id.clone(), skip, out));
    let (usage_tx, usage) = watch::channel((0u64, 0u64));
    let sampler = tokio::spawn(sample_stats(docker.clone(), id.clone(), usage_tx));
    let done = exited.clone();
    let waited = id.clone();
    let stop_docker = docker.clone();
    tokio::spawn(async move {
        let mut wait = docker.wait_container(&waited, None);
        // The engine answers once the container is not running; an error
        // for a non-zero exit is still an answer.
        let _ = wait.next().await;
        done.cancel();
        let _ = tokio::time::timeout(DRAIN, logs).await;
        sampler.abort();
        let (peak_memory_bytes, cpu_time_ms) = *usage.borrow();
        let exit = match docker.inspect_container(&waited, None).await {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                let engine_error = state.error.filter(|e| !e.is_empty());
                Exit {
                    exit_code: state.exit_code.and_then(|c| i32::try_from(c).ok()),
                    oom_killed: state.oom_killed.unwrap_or(false),
                    peak_memory_bytes,
                    cpu_time_ms,
                    error: engine_error,
                }
            }
            Err(e) => Exit {
                error: Some(format!("inspecting the exited container: {e}")),
                ..Exit::default()
            },
        };
        let _ = exit_tx.send(exit);
    });
    Started {
        id: TaskId::Container(id.clone()),
        exit,
        stopper: Stopper {
            kind: StopperKind::Docker {
                docker: stop_docker,
                id,
            },
            exited,
        },
    }
}

async fn pump_logs(docker: Docker, id: String, mut skip: u64, out: mpsc::Sender<Output>) {
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut logs = docker.logs(&id, Some(options));
    while let Some(item) = logs.next().await {
        let (stream, bytes) = match item {
            Ok(bollard::container::LogOutput::StdOut { message }) => (pb::LogStream::Stdout, message),
            Ok(bollard::container::LogOutput::StdErr { message }) => (pb::LogStream::Stderr, message),
            Ok(bollard::container::LogOutput::Console { message }) => (pb::LogStream::Stdout, message),
            Ok(bollard::container::LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "reading container output failed");
                return;
            }
        };
        let mut data: &[u8] = &bytes;
        if skip > 0 {
            let cut = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
            data = &data[cut..];
            skip -= cut as u64;
        }
        if !data.is_empty()
            && out
                .send(Output {
                    stream,
                    data: data.to_vec(),
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Samples the container's stats until it ends: peak memory (bytes) and CPU
/// time (milliseconds).
async fn sample_stats(docker: Docker, id: String, usage: watch::Sender<(u64, u64)>) {
    let options = StatsOptions {
        stream: true,
        one_shot: false,
    };
    let mut stats = docker.stats(&id, Some(options));
    while let Some(Ok(sample)) = stats.next().await {
        let memory = sample
            .memory_stats
            .map(|m| m.max_usage.unwrap_or(0).max(m.usage.unwrap_or(0)))
            .unwrap_or(0);
        let cpu_ms = sample
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .map_or(0, |ns| ns / 1_000_000);
        usage.send_modify(|(peak, cpu)| {
            *peak = (*peak).max(memory);
            *cpu = (*cpu).max(cpu_ms);
        });
    }
}

/// Removes `image` unless a container uses it (the engine refuses then).
pub async fn remove_image(docker: &Docker, image: &str) -> Result<bool, String> {
    let options = RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    match docker.remove_image(image, Some(options), None).await {
        Ok(_) => Ok(true),
        Err(e) if not_found(&e) => Ok(true),
        Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(false),
        Err(e) => Err(format!("removing image {image}: {e}")),
    }
}
