//! Snapshot encoding and the durable snapshot file.
//!
//! Snapshot *data* (what travels to another server) is the state's rows:
//! `MAGIC`, then per row a little-endian `u32` key length, the key, a `u32`
//! value length and the value, then a CRC-32 of everything before it. A
//! torn or corrupted snapshot is detected, never half-installed.
//!
//! The snapshot *file* (`snapshots/current.snap`) holds the metadata as a
//! length-prefixed JSON document followed by the data. It is written to a
//! temporary file, fsynced, renamed over the old one and the directory is
//! fsynced: a reader sees the old snapshot or the new one, and once
//! [`SnapshotFile::store`] returns the new one survives power loss. Only
//! then may openraft purge the log entries it covers.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

use crate::raft::{LogId, SnapshotMeta};

const MAGIC: &[u8; 8] = b"ROTASNP1";
const FILE_NAME: &str = "current.snap";

/// Appends `part` preceded by its length as a little-endian `u32`.
fn push_prefixed(out: &mut Vec<u8>, part: &[u8]) -> io::Result<()> {
    let len = u32::try_from(part.len()).map_err(|_| io::Error::other("snapshot part larger than 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(part);
    Ok(())
}

/// Splits a part written by [`push_prefixed`] off the front of `bytes`.
fn split_prefixed<'a>(bytes: &'a [u8], what: &str) -> io::Result<(&'a [u8], &'a [u8])> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid(format!("truncated {what}")))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(invalid(format!("truncated {what}")));
    }
    Ok(rest.split_at(len))
}

/// Encodes rows as snapshot data.
pub fn encode_rows<I>(rows: I) -> io::Result<Vec<u8>>
where
    I: IntoIterator<Item = (String, Vec<u8>)>,
{
    let mut out = MAGIC.to_vec();
    for (key, value) in rows {
        push_prefixed(&mut out, key.as_bytes())?;
        push_prefixed(&mut out, &value)?;
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Decodes snapshot data into rows, checking its framing and checksum.
pub fn decode_rows(data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let body_len = data
        .len()
        .checked_sub(4)
        .filter(|&len| len >= MAGIC.len())
        .ok_or_else(|| invalid("snapshot data too short"))?;
    let (body, crc) = data.split_at(body_len);
    let expected = u32::from_le_bytes(crc.try_into().map_err(|_| invalid("snapshot checksum missing"))?);
    if crc32fast::hash(body) != expected {
        return Err(invalid("snapshot checksum mismatch"));
    }
    let mut rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("not rota snapshot data"))?;
    let mut rows = Vec::new();
    while !rest.is_empty() {
        let (key, tail) = split_prefixed(rest, "snapshot row")?;
        let (value, tail) = split_prefixed(tail, "snapshot row")?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| invalid("snapshot key is not UTF-8"))?;
        rows.push((key, value.to_vec()));
        rest = tail;
    }
    Ok(rows)
}

/// The durable copy of this server's latest snapshot.
#[derive(Debug)]
pub struct SnapshotFile {
    dir: PathBuf,
    /// Metadata of the stored snapshot; the lock also serializes writers so
    /// an older snapshot never replaces a newer one.
    current: Mutex<Option<SnapshotMeta>>,
    /// The last log id covered by the snapshot on disk, published after the
    /// fsync: the Raft log may be purged up to it (see [`SnapshotFile::durable`]).
    durable: watch::Sender<Option<LogId>>,
}

impl SnapshotFile {
    /// Opens the snapshot directory, reading the stored snapshot's metadata.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let current = match Self::read_at(&dir.join(FILE_NAME)) {
            Ok((meta, _)) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        // A crash between write and rename leaves a temporary file behind.
        let _ = fs::remove_file(dir.join(format!("{FILE_NAME}.tmp")));
        let durable = current.as_ref().and_then(|meta| meta.last_log_id);
        Ok(Self {
            dir: dir.to_owned(),
            current: Mutex::new(current),
            durable: watch::Sender::new(durable),
        })
    }

    /// Follows the last log id covered by a snapshot on disk. It only grows.
    pub fn durable(&self) -> watch::Receiver<Option<LogId>> {
        self.durable.subscribe()
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Option<SnapshotMeta>>> {
        self.current
            .lock()
            .map_err(|_| io::Error::other("snapshot file lock poisoned"))
    }

    /// Metadata of the stored snapshot.
    pub fn meta(&self) -> io::Result<Option<SnapshotMeta>> {
        Ok(self.lock()?.clone())
    }

    /// Stores a snapshot durably unless a newer one is already stored.
    /// Returns whether it was stored.
    pub fn store(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<bool> {
        let mut current = self.lock()?;
        if let Some(stored) = current.as_ref()
            && stored.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        let mut header = Vec::new();
        push_prefixed(&mut header, &serde_json::to_vec(meta).map_err(io::Error::other)?)?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&header)?;
            file.write_all(data)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        File::open(&self.dir)?.sync_all()?;
        *current = Some(meta.clone());
        self.durable.send_if_modified(|durable| {
            let newer = meta.last_log_id > *durable;
            if newer {
                *durable = meta.last_log_id;
            }
            newer
        });
        Ok(true)
    }

    /// Reads the stored snapshot, if any.
    pub fn read(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let _guard = self.lock()?;
        match Self::read_at(&self.dir.join(FILE_NAME)) {
            Ok(snapshot) => Ok(Some(snapshot)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(path: &Path) -> io::Result<(SnapshotMeta, Vec<u8>)> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let (meta, data) = split_prefixed(&bytes, "snapshot file")?;
        let meta = serde_json::from_slice(meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Verify the data now, so a corrupt file is reported where it is read.
        decode_rows(data)?;
        Ok((meta, data.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_detected() {
        let rows = vec![("job/a".to_owned(), b"{}".to_vec()), ("job/b".to_owned(), vec![])];
        let data = encode_rows(rows.clone()).expect("encodes");
        assert_eq!(decode_rows(&data).expect("decodes"), rows);
        assert_eq!(
            decode_rows(&encode_rows(vec![]).expect("encodes")).expect("decodes"),
            vec![]
        );

        for cut in [0, 3, 8, data.len() - 1] {
            assert!(decode_rows(&data[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = data.clone();
        flipped[10] ^= 1;
        assert!(decode_rows(&flipped).is_err());
    }
}
