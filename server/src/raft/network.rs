//! The sending side of Raft traffic: openraft's `RaftNetwork` over the
//! internal `rota.v1.RaftService`.
//!
//! Payloads are openraft's own (serde) messages encoded as JSON inside a
//! protobuf `bytes` field; the reply carries `Result<reply, RaftError>` so a
//! remote Raft error reaches openraft as `RemoteError`. Transport failures
//! map to `Unreachable` (openraft backs off), a too-large message to
//! `PayloadTooLarge` (openraft splits the batch), and an expired deadline to
//! `Timeout`. Snapshots are streamed: a header with the vote and metadata,
//! then the data in chunks.

use std::future::Future;
use std::time::Duration;

use openraft::OptionalSend;
use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use rota_proto::v1 as pb;
use rota_proto::v1::raft_service_client::RaftServiceClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::peers::Peers;
use super::{Node, NodeId, Snapshot, TypeConfig, Vote};

/// Largest Raft message a server accepts; larger append batches are split.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// Bytes of snapshot data per streamed chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Creates a [`PeerClient`] per target; never connects by itself.
#[derive(Debug, Clone)]
pub struct Network {
    id: NodeId,
    peers: Peers,
}

impl Network {
    /// A network for node `id` that dials through `peers`.
    pub fn new(id: NodeId, peers: Peers) -> Self {
        Self { id, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            id: self.id,
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// Raft RPCs to one peer.
#[derive(Debug)]
pub struct PeerClient {
    id: NodeId,
    target: NodeId,
    addr: String,
    peers: Peers,
}

/// How a call failed, before it is shaped into openraft's error types.
enum CallError {
    Unreachable(Unreachable),
    Network(NetworkError),
    TooLarge,
    Timeout(Duration),
}

fn encode<T: Serialize>(value: &T) -> Result<pb::RaftPayload, CallError> {
    serde_json::to_vec(value)
        .map(|data| pb::RaftPayload { data })
        .map_err(|e| CallError::Network(NetworkError::new(&e)))
}

fn decode<T: DeserializeOwned>(payload: &pb::RaftPayload) -> Result<T, CallError> {
    serde_json::from_slice(&payload.data).map_err(|e| CallError::Network(NetworkError::new(&e)))
}

fn status_error(status: tonic::Status) -> CallError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            CallError::Unreachable(Unreachable::new(&status))
        }
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => CallError::TooLarge,
        _ => CallError::Network(NetworkError::new(&status)),
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftServiceClient<tonic::transport::Channel>, CallError> {
        let channel = self
            .peers
            .channel(&self.addr)
            .map_err(|e| CallError::Unreachable(Unreachable::new(&e)))?;
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }

    /// Runs one unary call under the deadline openraft gave it.
    async fn unary<Req, Reply, F, Fut>(&self, option: &RPCOption, request: &Req, call: F) -> Result<Reply, CallError>
    where
        Req: Serialize,
        Reply: DeserializeOwned,
        F: FnOnce(RaftServiceClient<tonic::transport::Channel>, tonic::Request<pb::RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::RaftPayload>, tonic::Status>>,
    {
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(encode(request)?);
        request.set_timeout(ttl);
        let response = tokio::time::timeout(ttl, call(self.client()?, request))
            .await
            .map_err(|_| CallError::Timeout(ttl))?
            .map_err(status_error)?;
        decode(response.get_ref())
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        error: CallError,
        entries: u64,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
        match error {
            CallError::Unreachable(e) => RPCError::Unreachable(e),
            CallError::Network(e) => RPCError::Network(e),
            CallError::TooLarge => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1))),
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
        }
    }

    fn remote<T, E: std::error::Error>(
        &self,
        result: Result<T, RaftError<NodeId, E>>,
    ) -> Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>> {
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        let reply: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = self
            .unary(&option, &rpc, |mut client, request| async move {
                client.append_entries(request).await
            })
            .await
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, e, entries))?;
        self.remote(reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let reply: Result<VoteResponse<NodeId>, RaftError<NodeId>> = self
            .unary(&option, &rpc, |mut client, request| async move {
                client.vote(request).await
            })
            .await
            .map_err(|e| self.rpc_error(RPCTypes::Vote, e, 0))?;
        self.remote(reply)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let to_streaming = |e: CallError| -> StreamingError<TypeConfig, Fatal<NodeId>> {
            match e {
                CallError::Unreachable(e) => StreamingError::Unreachable(e),
                CallError::Network(e) => StreamingError::Network(e),
                CallError::TooLarge => StreamingError::Network(NetworkError::new(&std::io::Error::other(
                    "snapshot chunk refused as too large",
                ))),
                CallError::Timeout(timeout) => StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.id,
                    target: self.target,
                    timeout,
                }),
            }
        };
        let header = encode(&(vote, &snapshot.meta)).map_err(to_streaming)?.data;
        tokio::pin!(cancel);
        let data = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            data = snapshot.snapshot.read() => data.map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    // A newer snapshot replaced it: openraft asks for that one.
                    StreamingError::Network(NetworkError::new(&e))
                } else {
                    // Damaged or unreadable: openraft backs off before it
                    // asks again (it would otherwise re-read it at once).
                    tracing::error!(error = %e, "the stored snapshot cannot be read to send it");
                    StreamingError::Unreachable(Unreachable::new(&e))
                }
            })?,
        };
        tracing::info!(
            target_node = self.target,
            bytes = data.len(),
            last_log_id = ?snapshot.meta.last_log_id,
            "streaming snapshot"
        );
        // Each chunk is copied out of the data as the call sends it, not
        // all at once: a copy of the whole snapshot would double the memory
        // it takes to send one.
        let count = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES);
        let chunks = std::iter::once(pb::snapshot_chunk::Chunk::Header(header))
            .chain((0..count).map(move |i| {
                let start = i * SNAPSHOT_CHUNK_BYTES;
                let end = data.len().min(start + SNAPSHOT_CHUNK_BYTES);
                pb::snapshot_chunk::Chunk::Data(data[start..end].to_vec())
            }))
            .map(|chunk| pb::SnapshotChunk { chunk: Some(chunk) });
        let mut client = self.client().map_err(to_streaming)?;
        let ttl = option.hard_ttl();
        let call = async {
            tokio::time::timeout(ttl, client.install_snapshot(futures::stream::iter(chunks)))
                .await
                .map_err(|_| CallError::Timeout(ttl))?
                .map_err(status_error)
        };
        let response = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            response = call => response.map_err(to_streaming)?,
        };
        let reply: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            decode(response.get_ref()).map_err(to_streaming)?;
        reply.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
