//! What the API needs from the running node: propose commands, read state,
//! find the leader, and change membership.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::batch::Batcher;
use super::config::RaftSettings;
use crate::api::ApiError;
use crate::raft::peers::Peers;
use crate::raft::{LogId, Node, NodeId, Raft};
use crate::state::{Command, Op, Response};
use crate::store::{LogStore, StateReader};

/// Where a request is served.
pub enum Route {
    /// Here: this node is the leader.
    Local,
    /// At the leader, through this channel.
    Leader(Channel),
}

/// The running node, as the API sees it. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    /// This node's id.
    pub id: NodeId,
    /// This node's advertised address.
    pub advertise: String,
    /// The Raft instance.
    pub raft: Raft,
    /// The applied state.
    pub state: StateReader,
    /// The Raft log (for status).
    pub log: LogStore,
    /// Channels to peers.
    pub peers: Peers,
    /// Raft timing, for leadership transfer.
    pub settings: RaftSettings,
    /// Set while this leader hands leadership over; writes wait for the new leader.
    transferring: Arc<AtomicBool>,
    /// Group commit of proposals.
    batcher: Batcher,
}

/// Turns heartbeats back on and lets writes through when a transfer ends,
/// however it ends.
struct TransferGuard {
    raft: Raft,
    transferring: Arc<AtomicBool>,
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.raft.runtime_config().heartbeat(true);
        self.transferring.store(false, Ordering::Release);
    }
}

/// The leader as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// Its id.
    pub id: NodeId,
    /// Its advertised address.
    pub addr: String,
}

fn client_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ApiError::NotLeader {
            leader: f
                .leader_id
                .zip(f.leader_node)
                .map(|(id, node)| LeaderHint { id, addr: node.addr }),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ApiError::FailedPrecondition(e.to_string()),
        RaftError::Fatal(f) => ApiError::Unavailable(format!("raft is not running on this server: {f}")),
    }
}

fn shutting_down() -> ApiError {
    ApiError::Unavailable("this server is shutting down; retry".into())
}

/// An operation queued with [`NodeHandle::submit`].
pub struct Proposal(super::batch::Answer);

impl Proposal {
    /// Waits until it is committed and applied: its response, or why the
    /// state machine refused it or Raft could not commit it.
    pub async fn outcome(self) -> Result<Response, ApiError> {
        let written = self
            .0
            .wait()
            .await
            .ok_or_else(shutting_down)?
            .map_err(client_write_error)?;
        written.map_err(ApiError::Rejected)
    }
}

impl NodeHandle {
    /// Assembles a handle.
    pub fn new(
        id: NodeId,
        advertise: String,
        raft: Raft,
        state: StateReader,
        log: LogStore,
        peers: Peers,
        settings: RaftSettings,
    ) -> Self {
        let batcher = Batcher::start(raft.clone());
        Self {
            id,
            advertise,
            raft,
            state,
            log,
            peers,
            settings,
            transferring: Arc::new(AtomicBool::new(false)),
            batcher,
        }
    }

    /// This node's current Raft term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The current leader, if one is known.
    pub fn leader(&self) -> Option<LeaderHint> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let id = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&id)?.addr.clone();
        Some(LeaderHint { id, addr })
    }

    /// Decides where a request that needs the leader is served. A request
    /// already forwarded once is never forwarded again: it gets the hint.
    pub fn route(&self, metadata: &MetadataMap) -> Result<Route, ApiError> {
        match self.leader() {
            Some(leader) if leader.id == self.id => Ok(Route::Local),
            Some(leader) if metadata.contains_key(rota_proto::FORWARDED_METADATA_KEY) => {
                Err(ApiError::NotLeader { leader: Some(leader) })
            }
            Some(leader) => match self.peers.channel(&leader.addr) {
                Ok(channel) => Ok(Route::Leader(channel)),
                Err(e) => Err(ApiError::Unavailable(e.to_string())),
            },
            None => Err(ApiError::NotLeader { leader: None }),
        }
    }

    /// Proposes an operation, stamped with this leader's clock, and waits
    /// until it is committed and applied here. Operations proposed at the
    /// same time share a log entry (group commit, `node/batch.rs`).
    pub async fn propose(&self, op: Op) -> Result<Response, ApiError> {
        // Traced under its caller (a call, a leader loop); a proposal with
        // none (a worker's report) is not, or every report would be a trace.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "propose",
            otel.name = %format_args!("propose {}", op.name()),
            op = op.name(),
            node = self.id,
                term = self.term(),
            )
        };
        tracing::Instrument::instrument(async { self.submit(op).await?.outcome().await }, span).await
    }

    /// Queues an operation, stamped with this leader's clock, without
    /// waiting for it: the [`Proposal`] answers once it is committed and
    /// applied. Operations one caller submits one after another reach Raft
    /// in that order per object, so a caller may keep several in flight.
    pub async fn submit(&self, op: Op) -> Result<Proposal, ApiError> {
        if self.transferring.load(Ordering::Acquire) {
            return Err(ApiError::Unavailable(
                "leadership is being transferred; retry in a few seconds".into(),
            ));
        }
        let command = Command { now: Utc::now(), op };
        self.batcher
            .submit(command)
            .await
            .map(Proposal)
            .ok_or_else(shutting_down)
    }

    /// Waits until this node, as leader, has applied everything committed
    /// before the call: a read afterwards is linearizable.
    pub async fn ensure_linearizable(&self) -> Result<(), ApiError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(ApiError::NotLeader {
                leader: f
                    .leader_id
                    .zip(f.leader_node)
                    .map(|(id, node)| LeaderHint { id, addr: node.addr }),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Err(ApiError::Unavailable(
                "this leader cannot reach a quorum of voters to confirm a linearizable read; retry, or read \
                 with stale consistency (rotactl --stale)"
                    .into(),
            )),
            Err(RaftError::Fatal(f)) => Err(ApiError::Unavailable(format!(
                "raft is not running on this server: {f}"
            ))),
        }
    }

    /// Adds `id` as a learner, waits (bounded) until it has caught up, then
    /// makes it a voter unless `learner_only`.
    pub async fn add_node(
        &self,
        id: NodeId,
        addr: String,
        learner_only: bool,
        catch_up: Duration,
    ) -> Result<(), ApiError> {
        let node = Node { addr: addr.clone() };
        match tokio::time::timeout(catch_up, self.raft.add_learner(id, node, true)).await {
            Ok(result) => {
                result.map_err(client_write_error)?;
            }
            Err(_) => {
                return Err(ApiError::DeadlineExceeded(format!(
                    "node {id} at {addr} did not catch up within {catch_up:?}; it stays a learner. Is it running and reachable? Remove it with RemoveNode to undo"
                )));
            }
        }
        if !learner_only {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                .await
                .map_err(client_write_error)?;
        }
        Ok(())
    }

    /// Removes `id` from the cluster (voter or learner).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ApiError> {
        let is_voter = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.membership().voter_ids().any(|v| v == id)
        };
        let change = if is_voter {
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(client_write_error)?;
        Ok(())
    }

    /// Hands leadership to `target`: stop heartbeats and writes, wait out the
    /// followers' leader lease, ask the target to campaign, and wait for a
    /// new leader. Heartbeats and writes resume whatever the outcome.
    pub async fn transfer_leadership(&self, target: NodeId, target_addr: &str) -> Result<NodeId, ApiError> {
        if self.transferring.swap(true, Ordering::AcqRel) {
            return Err(ApiError::FailedPrecondition(
                "a leadership transfer is already in progress".into(),
            ));
        }
        // Restores heartbeats and writes on every exit, including when the
        // caller gives up and this future is dropped mid-transfer.
        let _restore = TransferGuard {
            raft: self.raft.clone(),
            transferring: self.transferring.clone(),
        };
        self.run_transfer(target, target_addr).await
    }

    async fn run_transfer(&self, target: NodeId, target_addr: &str) -> Result<NodeId, ApiError> {
        let term = self.raft.metrics().borrow().current_term;
        self.raft.runtime_config().heartbeat(false);
        // Followers refuse to vote while the lease of the leader they last
        // heard from runs (election_timeout_max). This is a protocol timer,
        // not a guess: after it, the target's campaign can win, and it comes
        // well before the followers' own election timers.
        tokio::time::sleep(self.settings.election_timeout_max + self.settings.heartbeat_interval).await;
        let channel = self
            .peers
            .channel(target_addr)
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let deadline = self.settings.election_timeout_min;
        let mut request = tonic::Request::new(rota_proto::v1::TimeoutNowRequest { term });
        request.set_timeout(deadline);
        let sent = tokio::time::timeout(
            deadline,
            rota_proto::v1::raft_service_client::RaftServiceClient::new(channel).timeout_now(request),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {target} did not accept the transfer: {}; {} is still the leader",
                    status.message(),
                    self.id
                )));
            }
            Err(_) => {
                return Err(ApiError::DeadlineExceeded(format!(
                    "node {target} did not answer the transfer within {deadline:?}; {} is still the leader",
                    self.id
                )));
            }
        }
        let mut metrics = self.raft.metrics();
        let deadline = self.settings.election_timeout_max * 2;
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let leader = {
                    let m = metrics.borrow_and_update();
                    (m.current_leader, m.state)
                };
                match leader {
                    (Some(leader), _) if leader != self.id => return Ok(leader),
                    _ => {}
                }
                if metrics.changed().await.is_err() {
                    return Err(ApiError::Unavailable("raft stopped during the transfer".into()));
                }
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(ApiError::DeadlineExceeded(format!(
                "no new leader within {deadline:?}; node {} is {}",
                self.id,
                if self.raft.metrics().borrow().state == ServerState::Leader {
                    "still the leader"
                } else {
                    "no longer leader"
                }
            ))),
        }
    }

    /// Highest committed log id known to this node.
    pub async fn committed(&self) -> Option<LogId> {
        self.raft.with_raft_state(|state| state.committed).await.ok().flatten()
    }
}
