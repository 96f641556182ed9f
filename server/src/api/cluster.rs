//! `rota.v1.ClusterService`: status and membership.

use std::time::Duration;

use openraft::ServerState;
use rota_proto::v1 as pb;
use rota_proto::v1::cluster_service_client::ClusterServiceClient;
use rota_proto::v1::cluster_service_server::ClusterService;
use tonic::{Request, Response, Status};

use super::worker::{MAX_DRAIN, check_worker_id};
use super::{ApiError, convert, forward_if_follower, is_linearizable};
use crate::auth::{hash_secret, new_secret, new_token_id};
use crate::node::NodeHandle;
use crate::raft::NodeId;
use crate::state::{Op, Response as Answer, Token, TokenRole};

/// Longest lifetime of a token with a ttl.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// Checks a token's name: `[a-z0-9][a-z0-9._-]{0,62}`.
fn check_token_name(name: &str) -> Result<(), ApiError> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            format!("{name:?}: accepted 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit"),
        ))
    }
}

fn token_role(role: i32) -> Result<TokenRole, ApiError> {
    match pb::TokenRole::try_from(role) {
        Ok(pb::TokenRole::Admin) => Ok(TokenRole::Admin),
        Ok(pb::TokenRole::Operator) => Ok(TokenRole::Operator),
        Ok(pb::TokenRole::Viewer) => Ok(TokenRole::Viewer),
        Ok(pb::TokenRole::Worker) => Ok(TokenRole::Worker),
        _ => Err(ApiError::invalid(
            "role",
            "required; accepted: admin, operator, viewer, worker",
        )),
    }
}

/// A token as the API shows it (never its hash).
fn api_token(token: &Token) -> pb::ApiToken {
    pb::ApiToken {
        id: token.id.clone(),
        name: token.name.clone(),
        role: match token.role {
            TokenRole::Admin => pb::TokenRole::Admin,
            TokenRole::Operator => pb::TokenRole::Operator,
            TokenRole::Viewer => pb::TokenRole::Viewer,
            TokenRole::Worker => pb::TokenRole::Worker,
        } as i32,
        created_at: Some(convert::timestamp(token.created_at)),
        expires_at: token.expires_at.map(convert::timestamp),
        revoked_at: token.revoked_at.map(convert::timestamp),
    }
}

/// Drain deadline when the request gives none.
const DEFAULT_DRAIN: Duration = Duration::from_secs(3600);

/// How long `AddNode` waits for a new node to catch up before giving up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// Serves `ClusterService` on a node.
#[derive(Clone)]
pub struct ClusterApi {
    node: NodeHandle,
}

impl ClusterApi {
    /// Serves cluster administration of `node`.
    pub fn new(node: NodeHandle) -> Self {
        Self { node }
    }

    /// The members as this node sees them.
    fn members(&self) -> (Vec<pb::Member>, NodeId) {
        let metrics = self.node.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let leader = metrics.current_leader.unwrap_or_default();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                node_id: *id,
                addr: node.addr.clone(),
                role: if *id == leader {
                    pb::Role::Leader
                } else if voters.contains(id) {
                    pb::Role::Follower
                } else {
                    pb::Role::Learner
                } as i32,
            })
            .collect();
        (members, leader)
    }

    fn is_member(&self, id: NodeId) -> bool {
        self.node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    fn member_list(&self) -> String {
        let (members, _) = self.members();
        members
            .iter()
            .map(|m| m.node_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn role(state: ServerState, is_member: bool) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner if is_member => pb::Role::Learner,
        ServerState::Learner | ServerState::Shutdown => pb::Role::Detached,
    }
}

fn check_addr(addr: &str) -> Result<(), ApiError> {
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "addr",
            format!("{addr:?} is not HOST:PORT; accepted: e.g. \"10.0.0.4:7400\""),
        ))
    }
}

/// Size of the chunks a backup is streamed in.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;
/// How long a backup waits for the snapshot it asked for.
const BACKUP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

impl ClusterApi {
    /// A backup file of everything this leader has applied: a snapshot is
    /// built, then read back from disk.
    async fn backup(&self) -> Result<(Vec<u8>, crate::raft::LogId), ApiError> {
        match self.node.leader() {
            Some(leader) if leader.id == self.node.id => {}
            leader => return Err(ApiError::NotLeader { leader }),
        }
        self.node.ensure_linearizable().await?;
        let applied = self.node.state.read().last_applied;
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot build a snapshot: {e}")))?;
        self.node
            .raft
            .wait(Some(BACKUP_SNAPSHOT_TIMEOUT))
            .metrics(|m| m.snapshot >= applied, "a snapshot covering everything applied")
            .await
            .map_err(|e| ApiError::Unavailable(format!("no snapshot was built: {e}")))?;
        let state = self.node.state.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || state.current_snapshot())
            .await
            .map_err(|e| ApiError::Unavailable(format!("reading the snapshot: {e}")))?
            .map_err(|e| ApiError::Unavailable(format!("reading the snapshot: {e}")))?
            .ok_or_else(|| ApiError::Unavailable("no snapshot on disk".into()))?;
        let last = meta
            .last_log_id
            .ok_or_else(|| ApiError::FailedPrecondition("the cluster holds nothing to back up yet".into()))?;
        let file = crate::store::backup::encode(&meta, &data).map_err(ApiError::Unavailable)?;
        Ok((file, last))
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    type SaveSnapshotStream = BackupStream;

    async fn save_snapshot(
        &self,
        _request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let (file, last) = self.backup().await?;
        let total = file.len() as u64;
        let chunks: Vec<Result<pb::BackupChunk, Status>> = file
            .chunks(BACKUP_CHUNK_BYTES)
            .enumerate()
            .map(|(i, data)| {
                let first = i == 0;
                Ok(pb::BackupChunk {
                    data: data.to_vec(),
                    last_index: if first { last.index } else { 0 },
                    last_term: if first { last.leader_id.term } else { 0 },
                    total_bytes: if first { total } else { 0 },
                })
            })
            .collect();
        tracing::info!(last_index = last.index, bytes = total, "streaming a backup");
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let committed = self.node.committed().await;
        // Everything that takes a lock of its own is read before borrowing
        // openraft's metrics: a second borrow (or another lock) while one is
        // held deadlocks against the Raft core waiting to publish new metrics
        // (std's RwLock lets a waiting writer block new readers).
        let leader = self.node.leader();
        let snapshot_index = self.node.state.snapshot_index();
        let job_count = self.node.state.read().state.job_count() as u64;
        let status = {
            let metrics = self.node.raft.metrics();
            let m = metrics.borrow();
            pb::GetStatusResponse {
                node_id: self.node.id,
                advertise_addr: self.node.advertise.clone(),
                role: role(
                    m.state,
                    m.membership_config.membership().get_node(&self.node.id).is_some(),
                ) as i32,
                term: m.current_term,
                leader_id: leader.as_ref().map_or(0, |l| l.id),
                leader_addr: leader.map(|l| l.addr).unwrap_or_default(),
                commit_index: committed.map_or(0, |id| id.index),
                applied_index: m.last_applied.map_or(0, |id| id.index),
                last_log_index: m.last_log_index.unwrap_or_default(),
                snapshot_index,
                purged_index: m.purged.map_or(0, |id| id.index),
                job_count,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }
        };
        Ok(Response::new(status))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        if is_linearizable(request.get_ref().consistency)? {
            forward_if_follower!(self.node, request, ClusterServiceClient::list_members);
            self.node.ensure_linearizable().await?;
        }
        let (members, leader_id) = self.members();
        Ok(Response::new(pb::ListMembersResponse { members, leader_id }))
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Result<Response<pb::AddNodeResponse>, Status> {
        let pb::AddNodeRequest {
            node_id,
            ref addr,
            learner_only,
        } = *request.get_ref();
        if node_id == 0 {
            return Err(ApiError::invalid("node_id", "must be 1 or more").into());
        }
        check_addr(addr)?;
        forward_if_follower!(self.node, request, ClusterServiceClient::add_node);
        let addr = request.into_inner().addr;
        let (members, _) = self.members();
        if let Some(existing) = members.iter().find(|m| m.node_id == node_id) {
            let is_voter = existing.role != pb::Role::Learner as i32;
            if existing.addr != addr {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {node_id} is already a member at {}; remove it first to change its address",
                    existing.addr
                ))
                .into());
            }
            if is_voter || learner_only {
                return Err(ApiError::Rejected(crate::state::Rejection {
                    kind: crate::state::RejectionKind::AlreadyExists,
                    message: format!("node {node_id} is already a member"),
                })
                .into());
            }
        }
        tracing::info!(node_id, %addr, learner_only, "adding node");
        self.node
            .add_node(node_id, addr, learner_only, CATCH_UP_TIMEOUT)
            .await?;
        let (members, _) = self.members();
        Ok(Response::new(pb::AddNodeResponse { members }))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let node_id = request.get_ref().node_id;
        if node_id == 0 {
            return Err(ApiError::invalid("node_id", "must be 1 or more").into());
        }
        forward_if_follower!(self.node, request, ClusterServiceClient::remove_node);
        if !self.is_member(node_id) {
            return Err(ApiError::NotFound(format!(
                "node {node_id} is not a member; members: {}",
                self.member_list()
            ))
            .into());
        }
        tracing::info!(node_id, "removing node");
        self.node.remove_node(node_id).await?;
        let (members, _) = self.members();
        Ok(Response::new(pb::RemoveNodeResponse { members }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        if is_linearizable(request.get_ref().consistency)? {
            forward_if_follower!(self.node, request, ClusterServiceClient::list_workers);
            self.node.ensure_linearizable().await?;
        }
        let applied = self.node.state.read();
        let state = &applied.state;
        let running = |id: &str| state.index().on_worker.get(id).map_or(0, |runs| runs.len());
        let workers = state.workers().map(|w| convert::worker(w, running(&w.id))).collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        let req = request.get_ref();
        check_worker_id("worker_id", &req.worker_id)?;
        let within = match &req.deadline {
            Some(d) => convert::std_duration("deadline", d)?,
            None => DEFAULT_DRAIN,
        };
        if within > MAX_DRAIN {
            return Err(ApiError::invalid("deadline", format!("{within:?} is too long; accepted: 0s to 7d")).into());
        }
        forward_if_follower!(self.node, request, ClusterServiceClient::drain_worker);
        let req = request.into_inner();
        let op = Op::DrainWorker {
            worker: req.worker_id.clone(),
            within: (!req.disable).then_some(within),
            by_operator: true,
        };
        tracing::info!(worker = %req.worker_id, disable = req.disable, ?within, "drain requested");
        let worker = match self.node.propose(op).await? {
            Answer::Worker(worker) => worker,
            other => {
                return Err(ApiError::Unavailable(format!("unexpected state machine answer {other:?}")).into());
            }
        };
        let running = self
            .node
            .state
            .read()
            .state
            .index()
            .on_worker
            .get(&worker.id)
            .map_or(0, |runs| runs.len());
        Ok(Response::new(pb::DrainWorkerResponse {
            worker: Some(convert::worker(&worker, running)),
        }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        forward_if_follower!(self.node, request, ClusterServiceClient::transfer_leadership);
        let requested = request.get_ref().to_node_id;
        let (target, addr) = {
            let metrics = self.node.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let last = m.last_log_index;
            let matched = |id: NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|id| id.index)
            };
            let candidates: Vec<NodeId> = membership.voter_ids().filter(|&v| v != self.node.id).collect();
            let target = if requested == 0 {
                // The most caught-up other voter.
                candidates
                    .iter()
                    .copied()
                    .max_by_key(|&v| matched(v))
                    .ok_or_else(|| ApiError::FailedPrecondition("there is no other voter to transfer to".into()))?
            } else if requested == self.node.id {
                return Ok(Response::new(pb::TransferLeadershipResponse {
                    leader_id: self.node.id,
                }));
            } else if !candidates.contains(&requested) {
                return Err(ApiError::NotFound(format!(
                    "node {requested} is not a voter; voters: {}",
                    membership
                        .voter_ids()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .into());
            } else {
                requested
            };
            if matched(target) != last {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {target} has not caught up with the log (at {:?} of {:?}); retry when it has",
                    matched(target),
                    last
                ))
                .into());
            }
            let addr = membership
                .get_node(&target)
                .map(|n| n.addr.clone())
                .ok_or_else(|| ApiError::NotFound(format!("node {target} has no address")))?;
            (target, addr)
        };
        tracing::info!(target_node = target, "transferring leadership");
        let leader_id = self.node.transfer_leadership(target, &addr).await?;
        Ok(Response::new(pb::TransferLeadershipResponse { leader_id }))
    }
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let req = request.get_ref();
        check_token_name(&req.name)?;
        let role = token_role(req.role)?;
        let ttl = match &req.ttl {
            Some(ttl) => Some(convert::std_duration("ttl", ttl)?),
            None => None,
        };
        let expires_at = match ttl {
            Some(ttl) if ttl.is_zero() || ttl > MAX_TOKEN_TTL => {
                return Err(ApiError::invalid("ttl", format!("{ttl:?}: accepted 1s to 10 years, or unset")).into());
            }
            Some(ttl) => chrono::Duration::from_std(ttl)
                .ok()
                .and_then(|ttl| chrono::Utc::now().checked_add_signed(ttl)),
            None => None,
        };
        forward_if_follower!(self.node, request, ClusterServiceClient::create_token);
        let name = request.into_inner().name;
        let random = |what| ApiError::Unavailable(format!("no randomness for the token {what}; retry"));
        let secret = new_secret().map_err(|_| random("secret"))?;
        let token = Token {
            id: new_token_id().map_err(|_| random("id"))?,
            name,
            role,
            hash: hash_secret(&secret),
            created_at: chrono::Utc::now(),
            expires_at,
            revoked_at: None,
            revision: 0,
        };
        let token = match self.node.propose(Op::CreateToken { token }).await? {
            Answer::Token(token) => token,
            other => return Err(ApiError::Unavailable(format!("unexpected state machine answer {other:?}")).into()),
        };
        tracing::info!(target: "audit", token = %token.id, name = %token.name, role = %token.role, "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(api_token(&token)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        forward_if_follower!(self.node, request, ClusterServiceClient::list_tokens);
        self.node.ensure_linearizable().await?;
        let tokens = self.node.state.read().state.tokens().map(api_token).collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        if request.get_ref().id.is_empty() {
            return Err(ApiError::invalid("id", "required: the id `rotactl token list` shows").into());
        }
        forward_if_follower!(self.node, request, ClusterServiceClient::revoke_token);
        let id = request.into_inner().id;
        let token = match self.node.propose(Op::RevokeToken { id }).await? {
            Answer::Token(token) => token,
            other => return Err(ApiError::Unavailable(format!("unexpected state machine answer {other:?}")).into()),
        };
        tracing::info!(target: "audit", token = %token.id, name = %token.name, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {
            token: Some(api_token(&token)),
        }))
    }
}
