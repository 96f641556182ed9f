//! Log chunks of runs: stored as their own rows, kept out of memory.
//!
//! A run's output can be large, so the state machine keeps only its
//! bookkeeping ([`LogMeta`](super::run::LogMeta)) in memory; the chunks are
//! written as rows (`log/<run id>/<seq>`) through the same atomic batches as
//! everything else, read from storage when a client asks, and included in
//! snapshots. Each run keeps at most [`LOG_CAP_BYTES`], dropping whole chunks
//! from the head (the tail of a build log is what people read).

use serde::{Deserialize, Serialize};

use super::LogIndex;

/// Bytes of log kept per run.
pub const LOG_CAP_BYTES: u64 = 1 << 20;

/// Largest chunk accepted in one report.
pub const MAX_CHUNK_BYTES: usize = 256 << 10;

/// Key prefix of log chunk rows.
pub const LOG_PREFIX: &str = "log/";

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Messages of rota itself (image pulls, kills).
    System,
    /// The task's standard output.
    Stdout,
    /// The task's standard error.
    Stderr,
}

impl LogStream {
    fn code(self) -> u8 {
        match self {
            LogStream::System => 0,
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(LogStream::System),
            1 => Some(LogStream::Stdout),
            2 => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Its place in the run's log.
    pub seq: u64,
    /// The attempt that wrote it.
    pub epoch: LogIndex,
    /// Which output.
    pub stream: LogStream,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Key prefix of one run's chunks.
pub fn run_prefix(run_id: &str) -> String {
    format!("{LOG_PREFIX}{run_id}/")
}

/// Key of a chunk; sequence numbers sort as text.
pub fn chunk_key(run_id: &str, seq: u64) -> String {
    format!("{LOG_PREFIX}{run_id}/{seq:016x}")
}

/// Encodes a chunk row: epoch (u64 LE), stream (u8), bytes.
pub fn encode_chunk(epoch: LogIndex, stream: LogStream, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + data.len());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.push(stream.code());
    out.extend_from_slice(data);
    out
}

/// Decodes a chunk row read under `key`; `None` if either is malformed.
pub fn decode_chunk(key: &str, value: &[u8]) -> Option<LogChunk> {
    let seq = u64::from_str_radix(key.rsplit('/').next()?, 16).ok()?;
    let (epoch, rest) = value.split_first_chunk::<8>()?;
    let (stream, data) = rest.split_first()?;
    Some(LogChunk {
        seq,
        epoch: u64::from_le_bytes(*epoch),
        stream: LogStream::from_code(*stream)?,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_keys_sort_by_sequence() {
        let key = chunk_key("r1", 10);
        let row = encode_chunk(7, LogStream::Stderr, b"boom\n");
        let chunk = decode_chunk(&key, &row).expect("decodes");
        assert_eq!((chunk.seq, chunk.epoch, chunk.stream), (10, 7, LogStream::Stderr));
        assert_eq!(chunk.data, b"boom\n");
        assert!(chunk_key("r1", 9) < chunk_key("r1", 10));
        assert!(chunk_key("r1", 255) < chunk_key("r1", 256));
        assert!(key.starts_with(&run_prefix("r1")));
        assert_eq!(decode_chunk(&key, &[1, 2]), None);
        assert_eq!(decode_chunk("log/r1/zz", &row), None);
    }
}
