//! Fast failover: the follower best placed to win stands for election as
//! soon as the leader lease has run out.
//!
//! openraft 0.9 lets a follower stand only after the leader lease
//! (`election_timeout_max`) *plus* a random election timeout, and a
//! candidate whose log is shorter than a peer's is refused and then waits
//! twice `election_timeout_max` more; with two survivors whose logs differ
//! (as they do under load) a failover took 11 to 18 s with the old timing
//! (rota-bench failover, 2026-11-29). Votes are refused while the lease
//! runs, so nothing can be won earlier than that; but at that moment each
//! follower that has not heard from its leader asks the other voters
//! and the silent leader
//! ([`LogPosition`](rota_proto::v1::raft_service_server::RaftService::log_position))
//! and starts an election only if
//! - a majority of the voters (itself included) answered, so a follower
//!   cut off from the rest never stands;
//! - none of them leads (a leader that paused its heartbeats to transfer
//!   leadership, or is merely slow, answers that it leads) or still hears
//!   from a leader (so a follower cut off from a healthy leader does not
//!   disturb it);
//! - none of them has a longer log, or the same log and a lower id (so
//!   exactly one stands, and it is one the others will vote for).
//!
//! If the chosen one does not win, openraft's own timers still elect
//! someone, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use rota_proto::v1 as pb;
use rota_proto::v1::raft_service_client::RaftServiceClient;
use tokio_util::sync::CancellationToken;

use super::peers::Peers;
use super::{NodeId, Raft};
use crate::store::LogStore;

/// When this server last received AppendEntries (from any leader).
#[derive(Debug, Clone)]
pub struct LeaderContact {
    base: Instant,
    /// Milliseconds after `base`.
    last: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last: Arc::default(),
        }
    }
}

impl LeaderContact {
    /// Notes a contact now.
    pub fn touch(&self) {
        let millis = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    /// How long since the last contact (since start, if none).
    pub fn silent(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// This server's answer to `LogPosition`.
pub fn position(id: NodeId, raft: &Raft, log: &LogStore, contact: &LeaderContact) -> pb::LogPositionResponse {
    let last = log.summary().ok().and_then(|(purged, last)| last.or(purged));
    pb::LogPositionResponse {
        node_id: id,
        last_log_term: last.map_or(0, |l| l.leader_id.term),
        last_log_index: last.map_or(0, |l| l.index),
        leader_silent_ms: u64::try_from(contact.silent().as_millis()).unwrap_or(u64::MAX),
        leader: raft.metrics().borrow().state == ServerState::Leader,
    }
}

/// Whether `mine` should stand for election given the answers of the
/// other voters (the silent leader included, if it answered), the number of
/// voters and the leader lease: a majority (this server included) must have
/// answered, none may lead or still hear a leader, and none may have a
/// longer log (or the same log and a lower id).
pub fn should_stand(
    mine: &pb::LogPositionResponse,
    peers: &[pb::LogPositionResponse],
    voters: usize,
    lease: Duration,
) -> bool {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let key = |p: &pb::LogPositionResponse| (p.last_log_term, p.last_log_index, std::cmp::Reverse(p.node_id));
    let majority = peers.len() + 1 > voters / 2;
    majority
        && peers
            .iter()
            .all(|p| !p.leader && p.leader_silent_ms > lease_ms && key(p) < key(mine))
}

/// Settings of the watcher.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub id: NodeId,
    /// The leader lease (`election_timeout_max`): no vote is granted earlier.
    pub lease: Duration,
    /// How often to look.
    pub every: Duration,
}

/// Watches for a silent leader until `stop`; see the module docs.
pub async fn watch(
    settings: Settings,
    raft: Raft,
    log: LogStore,
    peers: Peers,
    contact: LeaderContact,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if contact.silent() <= settings.lease {
            continue;
        }
        let (state, leader, voters) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<(NodeId, String)> = membership
                .voter_ids()
                .filter(|v| *v != settings.id)
                .filter_map(|v| membership.get_node(&v).map(|n| (v, n.addr.clone())))
                .collect();
            let is_voter = membership.voter_ids().any(|v| v == settings.id);
            (is_voter.then_some(m.state), m.current_leader, voters)
        };
        // Only a voting follower that knew a leader: candidates and fresh
        // nodes are openraft's business.
        if state != Some(ServerState::Follower) || leader.is_none() {
            continue;
        }
        // The silent leader is asked too: one that is alive but paused its
        // heartbeats (a leadership transfer) or is slow answers that it
        // leads, and nobody stands.
        let count = voters.len() + 1;
        let asked = voters
            .into_iter()
            .map(|(_, addr)| ask(&peers, addr, settings.lease / 2));
        let answers: Vec<_> = futures::future::join_all(asked).await.into_iter().flatten().collect();
        let mine = position(settings.id, &raft, &log, &contact);
        if !should_stand(&mine, &answers, count, settings.lease) {
            continue;
        }
        tracing::info!(
            silent_ms = mine.leader_silent_ms,
            last_log_index = mine.last_log_index,
            peers = answers.len(),
            "the leader is silent past its lease and this server's log is the longest: standing for election"
        );
        if raft.trigger().elect().await.is_err() {
            return;
        }
        // Give the election time to finish before looking again.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.lease) => {}
        }
    }
}

async fn ask(peers: &Peers, addr: String, timeout: Duration) -> Option<pb::LogPositionResponse> {
    let channel = peers.channel(&addr).ok()?;
    let mut request = tonic::Request::new(pb::LogPositionRequest {});
    request.set_timeout(timeout);
    let mut client = RaftServiceClient::new(channel);
    match tokio::time::timeout(timeout, client.log_position(request)).await {
        Ok(Ok(answer)) => Some(answer.into_inner()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node_id: NodeId, term: u64, index: u64, silent_ms: u64) -> pb::LogPositionResponse {
        pb::LogPositionResponse {
            node_id,
            last_log_term: term,
            last_log_index: index,
            leader_silent_ms: silent_ms,
            leader: false,
        }
    }

    #[test]
    fn only_the_longest_log_stands_and_only_when_nobody_hears_a_leader() {
        let lease = Duration::from_millis(800);
        let me = at(2, 3, 100, 900);
        assert!(should_stand(&me, &[], 1, lease), "a single voter");
        assert!(!should_stand(&me, &[], 3, lease), "alone of three: no majority");
        assert!(should_stand(&me, &[at(3, 3, 99, 900)], 3, lease), "a shorter log");
        assert!(!should_stand(&me, &[at(3, 3, 101, 900)], 3, lease), "a longer log");
        assert!(!should_stand(&me, &[at(3, 4, 1, 900)], 3, lease), "a later term wins");
        assert!(
            should_stand(&me, &[at(3, 3, 100, 900)], 3, lease),
            "a tie: the lower id"
        );
        assert!(!should_stand(&at(3, 3, 100, 900), &[at(2, 3, 100, 900)], 3, lease));
        assert!(
            !should_stand(&me, &[at(3, 3, 1, 200)], 3, lease),
            "a peer still hears the leader"
        );
        let leader = pb::LogPositionResponse {
            leader: true,
            ..at(1, 3, 1, 5000)
        };
        assert!(
            !should_stand(&me, &[leader, at(3, 3, 1, 900)], 3, lease),
            "the leader answers: it is alive (a transfer pauses its heartbeats)"
        );
        assert!(!should_stand(&me, &[at(3, 3, 1, 900)], 5, lease), "2 of 5 answered");
    }

    #[test]
    fn contact_measures_silence() {
        let contact = LeaderContact::default();
        contact.touch();
        assert!(contact.silent() < Duration::from_secs(1));
    }
}
