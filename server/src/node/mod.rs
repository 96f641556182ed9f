//! A running server: configuration ([`config`]), wiring of store, Raft and
//! gRPC services, cluster formation, and graceful shutdown.
//!
//! Startup: check that the data directory belongs to this node id, open the
//! store, start Raft, bind the gRPC port, and — only on a pristine data
//! directory given `--initial-cluster` — initialize the cluster. A data
//! directory that already holds Raft state is resumed, never initialized
//! again. Shutdown: stop accepting requests, let those in flight finish
//! (bounded by `shutdown_timeout`), stop Raft, flush the state database.

mod batch;
pub mod config;
mod handle;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use openraft::error::{InitializeError, RaftError};
use rota_proto::tls::{Connector, Incoming, Role, Tls};
use rota_proto::v1::cluster_service_server::ClusterServiceServer;
use rota_proto::v1::job_service_server::JobServiceServer;
use rota_proto::v1::raft_service_server::RaftServiceServer;
use rota_proto::v1::run_service_server::RunServiceServer;
use rota_proto::v1::worker_service_server::WorkerServiceServer;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, RaftSettings};
pub use handle::{LeaderHint, NodeHandle, Proposal, Route};

use crate::api::cluster::ClusterApi;
use crate::api::job::JobApi;
use crate::api::run::RunApi;
use crate::api::worker::WorkerApi;
use crate::auth::{AuthLayer, AuthSettings};
use crate::raft::network::{MAX_RAFT_MESSAGE_BYTES, Network};
use crate::raft::peers::Peers;
use crate::raft::service::RaftGrpc;
use crate::raft::{Node, NodeId, Raft};
use crate::scheduler::{LeaseSettings, Scheduler};
use crate::store::{self, StoreOptions};

/// Largest client request accepted (job specs are further limited to 64 KiB).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1 << 20;

/// Largest worker message accepted: a log batch of a few chunks of at most
/// 256 KiB each.
pub const MAX_WORKER_MESSAGE_BYTES: usize = 4 << 20;

/// What a data directory records about its owner.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
}

/// Refuses a data directory that belongs to another node id; claims a new one.
fn check_identity(data_dir: &Path, id: NodeId) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let path = data_dir.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let identity: Identity =
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
            if identity.node_id != id {
                bail!(
                    "data dir {} belongs to node {}, not node {id}; use the right --data-dir or --node-id",
                    data_dir.display(),
                    identity.node_id
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = data_dir.join("node.json.tmp");
            {
                let file = std::fs::File::create(&tmp)?;
                serde_json::to_writer(&file, &Identity { node_id: id })?;
                file.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn raft_config(settings: &RaftSettings) -> anyhow::Result<openraft::Config> {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = openraft::Config {
        cluster_name: "rota".into(),
        heartbeat_interval: millis(settings.heartbeat_interval),
        election_timeout_min: millis(settings.election_timeout_min),
        election_timeout_max: millis(settings.election_timeout_max),
        install_snapshot_timeout: millis(settings.install_snapshot_timeout),
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_every_logs),
        max_in_snapshot_log_to_keep: settings.keep_logs_after_snapshot,
        ..Default::default()
    };
    config.validate().context("invalid raft settings")
}

/// Runs a server until `shutdown` completes, then stops it gracefully.
/// `on_listening` receives the bound address (useful with port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let Some(id) = config.node_id else {
        bail!("node_id is required");
    };
    let Some(data_dir) = config.data_dir.clone() else {
        bail!("data_dir is required");
    };
    check_identity(&data_dir, id)?;
    store::crash::arm_from_env().map_err(anyhow::Error::msg)?;
    let (mut log, mut state_machine) = store::open(&data_dir, &StoreOptions::default())?;
    if let Some(backup) = &config.restore_from {
        restore_backup(
            &mut log,
            &mut state_machine,
            backup,
            id,
            config.initial_cluster.as_deref(),
        )
        .await?;
    }
    let state = state_machine.reader();
    let flush_handle = state_machine.flush_handle();

    let tls = match &config.tls {
        Some(files) => Some(Tls::load(files.clone(), Role::Server).context("loading the TLS files ([tls])")?),
        None => None,
    };
    let presets = config.preset_tokens()?;
    let secrets = match &config.secrets.key_file {
        Some(path) => Some(Arc::new(crate::secrets::Keyring::load(path)?)),
        None => None,
    };
    if !config.auth.enabled {
        tracing::warn!("auth is off: anyone who can reach this server can use it (set [auth] enabled = true)");
    }
    let peers = match std::env::var(crate::raft::peers::ROUTES_VAR) {
        Ok(value) => {
            let routes = crate::raft::peers::parse_routes(&value).map_err(anyhow::Error::msg)?;
            tracing::warn!(?routes, "test hook: peer links are routed through other addresses");
            Peers::with_routes(routes)
        }
        Err(_) => Peers::default(),
    }
    .with_connector(Connector::new(tls.as_ref()));
    let raft = Raft::new(
        id,
        Arc::new(raft_config(&config.raft)?),
        Network::new(id, peers.clone()),
        log.clone(),
        state_machine,
    )
    .await
    .context("starting raft")?;
    let contact = crate::raft::failover::LeaderContact::default();
    let advertise = config.advertise_addr();
    let node = NodeHandle::new(
        id,
        advertise.clone(),
        raft.clone(),
        state,
        log,
        peers,
        config.raft.clone(),
    );
    let tasks = TaskTracker::new();
    let stopping = CancellationToken::new();
    let scheduler = Scheduler::spawn(
        node.clone(),
        LeaseSettings {
            lease: config.worker_lease,
            grace: config.worker_lease_grace,
        },
        &tasks,
        stopping.clone(),
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(node = id, listen = %local_addr, %advertise, data_dir = %data_dir.display(), "serving");

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobServiceServer<JobApi>>().await;
    health.set_serving::<ClusterServiceServer<ClusterApi>>().await;
    health.set_serving::<RunServiceServer<RunApi>>().await;
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rota_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rota_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let stop = CancellationToken::new();
    let metrics =
        Arc::new(crate::metrics::Metrics::new(config.raft.election_timeout_max).context("registering metrics")?);
    metrics.baseline(&node);
    let server = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .layer(metrics.api_layer())
        // Raft traffic between servers is not traced (heartbeats would drown
        // the traces of calls).
        .layer(rota_proto::trace::GrpcSpans::new(
            id.to_string(),
            "/rota.v1.RaftService/",
        ))
        .layer(AuthLayer::new(
            AuthSettings {
                enabled: config.auth.enabled,
                tls: tls.is_some(),
                presets: presets.clone(),
                rate: crate::auth::RateLimit {
                    per_second: config.auth.requests_per_second,
                    burst: config.auth.burst,
                },
            },
            node.state.clone(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            JobServiceServer::new(JobApi::new(node.clone(), secrets.clone()))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
        .add_service(
            ClusterServiceServer::new(ClusterApi::new(node.clone()))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
        .add_service(
            RunServiceServer::new(RunApi::new(node.clone())).max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
        )
        .add_service(
            WorkerServiceServer::new(WorkerApi::new(node.clone(), scheduler, secrets))
                .max_decoding_message_size(MAX_WORKER_MESSAGE_BYTES),
        )
        .add_service(
            RaftServiceServer::new(RaftGrpc::new(id, raft.clone(), node.log.clone(), contact.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(Incoming::new(listener, tls.clone()), stop.clone().cancelled_owned());
    let mut server = tokio::spawn(server);
    on_listening(local_addr);

    tasks.spawn(metrics.clone().follow_leadership(raft.clone(), stopping.clone()));
    tasks.spawn(crate::raft::failover::watch(
        crate::raft::failover::Settings {
            id,
            lease: config.raft.election_timeout_max,
            every: FAILOVER_CHECK,
        },
        raft.clone(),
        node.log.clone(),
        node.peers.clone(),
        contact,
        stopping.clone(),
    ));
    if let Some(tls) = &tls {
        let watch = tls.clone().watch(TLS_RELOAD_CHECK);
        let stopping = stopping.clone();
        tasks.spawn(async move { stopping.run_until_cancelled(watch).await });
    }
    if !presets.is_empty() {
        tasks.spawn(record_preset_tokens(node.clone(), presets, stopping.clone()));
    }
    let readiness_stop = CancellationToken::new();
    let readiness = tokio::spawn(follow_readiness(
        metrics.clone(),
        node.clone(),
        health.clone(),
        readiness_stop.clone(),
    ));
    if let Some(addr) = config.http_listen {
        let endpoint = Arc::new(crate::metrics::Http {
            metrics,
            node: node.clone(),
        });
        let (http, _task) = rota_proto::telemetry::serve(addr, endpoint, stop.clone().cancelled_owned()).await?;
        tracing::info!(%http, "serving /metrics, /healthz and /readyz");
    }

    // Formation runs alongside serving: it may wait its turn (see
    // `initialize`), and a shutdown must not wait for it.
    let formation = async {
        match &config.initial_cluster {
            Some(cluster) => initialize(&raft, id, cluster, config.raft.election_timeout_min).await,
            None => Ok(()),
        }
    };
    let raft_stopped = raft_stopped(&raft);
    tokio::pin!(shutdown, formation, raft_stopped);
    let mut formed = false;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            reason = &mut raft_stopped => {
                // Fail-stop: a server whose Raft core died (a storage error:
                // the disk full or failing) must not linger half alive. It
                // exits non-zero for its supervisor to restart it on its data
                // dir once the disk is usable again.
                stop.cancel();
                bail!("raft stopped: {reason}; exiting (restart this server on its data dir once its disk is usable)");
            }
            result = &mut formation, if !formed => {
                result?;
                formed = true;
            }
            result = &mut server => {
                result.context("grpc server task")?.context("grpc server")?;
                bail!("grpc server stopped unexpectedly");
            }
        }
    }

    tracing::info!(node = id, "shutting down: draining requests");
    // The readiness follower ends first, so it cannot set SERVING again.
    readiness_stop.cancel();
    let _ = readiness.await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health.set_not_serving::<JobServiceServer<JobApi>>().await;
    health.set_not_serving::<ClusterServiceServer<ClusterApi>>().await;
    health.set_not_serving::<RunServiceServer<RunApi>>().await;
    health.set_not_serving::<WorkerServiceServer<WorkerApi>>().await;
    // Scheduler loops and worker sessions stop first (workers reconnect to
    // the next leader), then the server drains what is in flight.
    stopping.cancel();
    tasks.close();
    stop.cancel();
    match tokio::time::timeout(config.shutdown_timeout, &mut server).await {
        Ok(result) => result.context("grpc server task")?.context("grpc server")?,
        Err(_) => {
            tracing::warn!(timeout = ?config.shutdown_timeout, "requests still in flight; stopping anyway");
            server.abort();
        }
    }
    if tokio::time::timeout(config.shutdown_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduler loops did not stop in time");
    }
    raft.shutdown().await.context("stopping raft")?;
    flush_handle.flush().await.context("flushing the state database")?;
    tracing::info!(node = id, "stopped");
    Ok(())
}

/// How often the TLS files are checked for a change.
const TLS_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// How often a follower checks whether its leader has gone silent
/// ([`crate::raft::failover`]).
const FAILOVER_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// While this node leads and the state lacks a row of a preset token (the
/// bootstrap token, the workers' token), proposes it; ends once every row
/// exists. Until then the access check accepts the configured tokens by
/// themselves. A row, once there, is never replaced from the file (so a
/// revoked preset stays revoked).
async fn record_preset_tokens(node: NodeHandle, presets: Vec<crate::state::Token>, stopping: CancellationToken) {
    loop {
        let missing: Vec<crate::state::Token> = {
            let applied = node.state.read();
            presets
                .iter()
                .filter(|t| applied.state.token(&t.id).is_none())
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        if node.leader().is_some_and(|leader| leader.id == node.id) {
            for token in missing {
                let id = token.id.clone();
                match node.propose(crate::state::Op::CreateToken { token }).await {
                    Ok(_) => tracing::info!(token = %id, "preset token recorded"),
                    Err(error) => tracing::debug!(token = %id, %error, "recording a preset token; will retry"),
                }
            }
        }
        if stopping
            .run_until_cancelled(tokio::time::sleep(std::time::Duration::from_secs(1)))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Completes when the Raft core has stopped by itself, with why.
async fn raft_stopped(raft: &Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the raft core is gone".to_owned();
        }
    }
}

/// Initializes a pristine node with the founding members; a node that
/// already holds Raft state (or learned the cluster from a peer) is left
/// alone.
///
/// Initializing the same membership on every founder is safe, but founders
/// that all campaign at once disturb each other's first election. So the
/// founders take turns: the k-th lowest id waits k election timeouts and
/// initializes only if no peer has contacted it meanwhile. With every founder
/// up, the first one forms the cluster alone; if it is down, the next one
/// does.
async fn initialize(raft: &Raft, id: NodeId, cluster: &str, turn: std::time::Duration) -> anyhow::Result<()> {
    let members: BTreeMap<NodeId, Node> = config::parse_initial_cluster(cluster)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(id, addr)| (id, Node { addr }))
        .collect();
    if raft.is_initialized().await? {
        tracing::info!("data dir holds a cluster already; resuming, not initializing");
        return Ok(());
    }
    let rank = members.keys().position(|&member| member == id).unwrap_or(0);
    if rank > 0 {
        tokio::time::sleep(turn * u32::try_from(rank).unwrap_or(u32::MAX)).await;
        if raft.is_initialized().await? {
            tracing::info!("a peer formed the cluster; joining it");
            return Ok(());
        }
    }
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(cluster, "initialized a new cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(reason = %e, "cluster already formed by a peer; not initializing");
            Ok(())
        }
        Err(e) => Err(e).context("initializing the cluster"),
    }
}

/// Keeps the gRPC health service's overall status (service `""`, what
/// `grpc_health_probe` and Kubernetes gRPC probes ask) in step with
/// readiness (`/readyz`), checked every second until `stop`.
async fn follow_readiness(
    metrics: Arc<crate::metrics::Metrics>,
    node: NodeHandle,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut last = None;
    loop {
        let ready = tokio::select! {
            () = stop.cancelled() => return,
            ready = metrics.readiness(&node) => ready.is_ok(),
        };
        if last != Some(ready) {
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            last = Some(ready);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Starts a new cluster's member from a backup (`restore_from`): once, into
/// an empty data dir; a data dir that holds a cluster already is resumed.
async fn restore_backup(
    log: &mut store::LogStore,
    state_machine: &mut store::StateMachineStore,
    backup: &std::path::Path,
    id: NodeId,
    initial_cluster: Option<&str>,
) -> anyhow::Result<()> {
    use openraft::storage::RaftLogStorage;
    // The vote is what a restore writes last (and what any member of a
    // cluster has): with it, the data dir holds a cluster.
    if log.read_vote().await?.is_some() {
        tracing::info!(backup = %backup.display(), "data dir holds a cluster already; restore_from ignored");
        return Ok(());
    }
    let Some(cluster) = initial_cluster else {
        bail!("restore_from needs initial_cluster: the members of the new cluster (every one restores the same file)");
    };
    let members: BTreeMap<NodeId, Node> = config::parse_initial_cluster(cluster)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(id, addr)| (id, Node { addr }))
        .collect();
    let file = std::fs::read(backup).with_context(|| format!("restore_from: reading {}", backup.display()))?;
    let restored = store::backup::restore(log, state_machine, file, id, members)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        backup = %backup.display(),
        last_index = restored.last_index,
        last_term = restored.last_term,
        "restored a backup; the new cluster's log continues after it"
    );
    Ok(())
}
