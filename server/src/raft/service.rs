//! The receiving side of Raft traffic: `rota.v1.RaftService`.
//!
//! Every payload is decoded defensively: bytes that are not a valid openraft
//! message get `INVALID_ARGUMENT` and change nothing. A snapshot is collected
//! from its chunks (bounded in size) and installed only when complete.

use crate::store::snapshot::SnapshotData;
use std::pin::Pin;

use futures::StreamExt;
use openraft::Snapshot;
use rota_proto::v1 as pb;
use rota_proto::v1::raft_service_server::RaftService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use super::failover::{LeaderContact, position};
use super::{NodeId, Raft, SnapshotMeta, Vote};
use crate::store::LogStore;

/// Largest snapshot a server accepts.
pub const MAX_SNAPSHOT_BYTES: usize = 8 << 30;

/// Serves Raft RPCs to the local Raft node.
#[derive(Clone)]
pub struct RaftGrpc {
    id: NodeId,
    raft: Raft,
    log: LogStore,
    contact: LeaderContact,
}

impl RaftGrpc {
    /// Serves `raft` of node `id`, whose log is `log`; notes every
    /// AppendEntries in `contact`.
    pub fn new(id: NodeId, raft: Raft, log: LogStore, contact: LeaderContact) -> Self {
        Self { id, raft, log, contact }
    }
}

fn decode<T: DeserializeOwned>(what: &str, data: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(data).map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|data| Response::new(pb::RaftPayload { data }))
        .map_err(|e| Status::internal(format!("encoding raft reply: {e}")))
}

type BoxStream<T> = Pin<Box<dyn futures::Stream<Item = T> + Send>>;

/// Reads a streamed snapshot: the header, then data chunks.
async fn collect_snapshot(
    mut chunks: BoxStream<Result<pb::SnapshotChunk, Status>>,
) -> Result<(Vote, SnapshotMeta, Vec<u8>), Status> {
    let header = match chunks.next().await {
        Some(Ok(pb::SnapshotChunk {
            chunk: Some(pb::snapshot_chunk::Chunk::Header(header)),
        })) => header,
        Some(Err(status)) => return Err(status),
        _ => {
            return Err(Status::invalid_argument(
                "snapshot stream must start with a header chunk",
            ));
        }
    };
    let (vote, meta): (Vote, SnapshotMeta) = decode("snapshot header", &header)?;
    let mut data = Vec::new();
    while let Some(chunk) = chunks.next().await {
        match chunk?.chunk {
            Some(pb::snapshot_chunk::Chunk::Data(bytes)) => {
                if data.len() + bytes.len() > MAX_SNAPSHOT_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "snapshot exceeds the limit of {MAX_SNAPSHOT_BYTES} bytes"
                    )));
                }
                data.extend_from_slice(&bytes);
            }
            _ => {
                return Err(Status::invalid_argument(
                    "snapshot stream: only data chunks may follow the header",
                ));
            }
        }
    }
    Ok((vote, meta, data))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode("append-entries request", &request.get_ref().data)?;
        let answer = self.raft.append_entries(rpc).await;
        // A leader was heard, unless the sender is a deposed one.
        if matches!(&answer, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.contact.touch();
        }
        reply(&answer)
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc = decode("vote request", &request.get_ref().data)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let (vote, meta, data) = collect_snapshot(request.into_inner().boxed()).await?;
        tracing::info!(bytes = data.len(), last_log_id = ?meta.last_log_id, "received snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Bytes(data)),
        };
        reply(&self.raft.install_full_snapshot(vote, snapshot).await)
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        let leader_term = request.get_ref().term;
        let current_term = self.raft.metrics().borrow().current_term;
        if current_term > leader_term {
            return Err(Status::failed_precondition(format!(
                "stale leadership transfer from term {leader_term}; this node is in term {current_term}"
            )));
        }
        tracing::info!(leader_term, "leadership transfer: starting an election");
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
        Ok(Response::new(pb::TimeoutNowResponse {}))
    }

    async fn log_position(
        &self,
        _request: Request<pb::LogPositionRequest>,
    ) -> Result<Response<pb::LogPositionResponse>, Status> {
        Ok(Response::new(position(self.id, &self.raft, &self.log, &self.contact)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(items: Vec<Result<pb::SnapshotChunk, Status>>) -> BoxStream<Result<pb::SnapshotChunk, Status>> {
        futures::stream::iter(items).boxed()
    }

    fn chunk(chunk: pb::snapshot_chunk::Chunk) -> Result<pb::SnapshotChunk, Status> {
        Ok(pb::SnapshotChunk { chunk: Some(chunk) })
    }

    #[tokio::test]
    async fn malformed_snapshot_streams_are_refused() {
        use pb::snapshot_chunk::Chunk;
        let err = collect_snapshot(stream(vec![])).await.expect_err("empty");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = collect_snapshot(stream(vec![chunk(Chunk::Data(vec![1]))]))
            .await
            .expect_err("no header");
        assert!(err.message().contains("must start with a header"), "{err}");
        let err = collect_snapshot(stream(vec![chunk(Chunk::Header(b"garbage".to_vec()))]))
            .await
            .expect_err("bad header");
        assert!(err.message().contains("malformed snapshot header"), "{err}");
    }

    #[tokio::test]
    async fn a_snapshot_is_reassembled_from_its_chunks() {
        use pb::snapshot_chunk::Chunk;
        let vote = Vote::new_committed(2, 1);
        let meta = SnapshotMeta::default();
        let header = serde_json::to_vec(&(vote, &meta)).expect("encodes");
        let (got_vote, got_meta, data) = collect_snapshot(stream(vec![
            chunk(Chunk::Header(header.clone())),
            chunk(Chunk::Data(vec![1, 2])),
            chunk(Chunk::Data(vec![3])),
        ]))
        .await
        .expect("collects");
        assert_eq!((got_vote, got_meta, data), (vote, meta, vec![1, 2, 3]));
        let err = collect_snapshot(stream(vec![
            chunk(Chunk::Header(header.clone())),
            chunk(Chunk::Header(header)),
        ]))
        .await
        .expect_err("second header");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
