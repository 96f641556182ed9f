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
use std::sync::{Arc, Mutex};

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

/// Decodes snapshot data into rows (borrowed from `data`, not copied),
/// checking its framing and checksum.
pub fn decode_rows(data: &[u8]) -> io::Result<Vec<(&str, &[u8])>> {
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
        let key = std::str::from_utf8(key).map_err(|_| invalid("snapshot key is not UTF-8"))?;
        rows.push((key, value));
        rest = tail;
    }
    Ok(rows)
}

/// Snapshot data as openraft hands it around: bytes in memory (built,
/// received), or the stored snapshot file, read only when the bytes are
/// needed (openraft asks for the current snapshot at every start, only for
/// its metadata; reading it there was 14% of a restart with 1M runs).
#[derive(Debug)]
pub enum SnapshotData {
    /// The data.
    Bytes(Vec<u8>),
    /// The stored snapshot with this metadata.
    Stored {
        /// Where it is stored.
        file: Arc<SnapshotFile>,
        /// Which snapshot it is.
        meta: SnapshotMeta,
    },
}

impl SnapshotData {
    /// The bytes. A stored snapshot is read (and checked) now, and must
    /// still be the one named: if a newer snapshot replaced it, this fails
    /// with [`io::ErrorKind::NotFound`], and openraft asks for the current
    /// one again.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        match self {
            SnapshotData::Bytes(bytes) => Ok(bytes),
            SnapshotData::Stored { file, meta } => match file.open_stored()? {
                Some((stored, opened))
                    if stored.snapshot_id == meta.snapshot_id && stored.last_log_id == meta.last_log_id =>
                {
                    read_data(opened)
                }
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "snapshot {} is no longer the stored one; ask for the current snapshot again",
                        meta.snapshot_id
                    ),
                )),
            },
        }
    }

    /// [`SnapshotData::into_bytes`] on a blocking thread.
    pub async fn read(self) -> io::Result<Vec<u8>> {
        match self {
            SnapshotData::Bytes(bytes) => Ok(bytes),
            stored => tokio::task::spawn_blocking(move || stored.into_bytes())
                .await
                .map_err(io::Error::other)?,
        }
    }
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
    /// Opens the snapshot directory, reading the stored snapshot's metadata
    /// (its data is read, and checked, when it is needed).
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let current = match File::open(dir.join(FILE_NAME)).and_then(|mut file| read_meta(&mut file)) {
            Ok(meta) => Some(meta),
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
        let Some((meta, file)) = self.open_stored()? else {
            return Ok(None);
        };
        Ok(Some((meta, read_data(file)?)))
    }

    /// The stored snapshot's metadata and its file, open at its data. The
    /// lock is held only to open it: its data is read after, from the open
    /// file, which a newer snapshot renamed over it does not change.
    fn open_stored(&self) -> io::Result<Option<(SnapshotMeta, File)>> {
        let _guard = self.lock()?;
        match File::open(self.dir.join(FILE_NAME)) {
            Ok(mut file) => Ok(Some((read_meta(&mut file)?, file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Reads the metadata at the start of a snapshot file, leaving `file` at
/// its data.
fn read_meta(file: &mut File) -> io::Result<SnapshotMeta> {
    let mut len = [0; 4];
    file.read_exact(&mut len)
        .map_err(|_| invalid("truncated snapshot file"))?;
    let len = u32::from_le_bytes(len);
    let mut meta = Vec::new();
    file.take(u64::from(len)).read_to_end(&mut meta)?;
    if meta.len() != len as usize {
        return Err(invalid("truncated snapshot file"));
    }
    serde_json::from_slice(&meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads the rest of a snapshot file from its data on, checked (so a
/// corrupt file is reported where it is read).
fn read_data(mut file: File) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    decode_rows(&data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_detected() {
        let rows = vec![("job/a".to_owned(), b"{}".to_vec()), ("job/b".to_owned(), vec![])];
        let data = encode_rows(rows.clone()).expect("encodes");
        let decoded: Vec<_> = decode_rows(&data)
            .expect("decodes")
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_vec()))
            .collect();
        assert_eq!(decoded, rows);
        assert!(
            decode_rows(&encode_rows(vec![]).expect("encodes"))
                .expect("decodes")
                .is_empty()
        );

        for cut in [0, 3, 8, data.len() - 1] {
            assert!(decode_rows(&data[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = data.clone();
        flipped[10] ^= 1;
        assert!(decode_rows(&flipped).is_err());
    }

    #[test]
    fn the_file_opens_on_its_metadata_and_its_data_is_checked_when_read() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "s-1".into(),
        };
        let data = encode_rows(vec![("job/a".to_owned(), b"{}".to_vec())]).expect("encodes");
        let file = SnapshotFile::open(dir.path()).expect("opens");
        assert!(file.store(&meta, &data).expect("stores"));
        let (read_meta, read_data) = SnapshotFile::open(dir.path())
            .expect("reopens")
            .read()
            .expect("reads")
            .expect("a snapshot");
        assert_eq!((read_meta.snapshot_id.as_str(), read_data), ("s-1", data));

        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).expect("reads");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).expect("writes");
        let file = SnapshotFile::open(dir.path()).expect("the metadata is intact");
        assert_eq!(file.meta().expect("meta").expect("some").snapshot_id, "s-1");
        let damaged = file.read().expect_err("the data is damaged");
        assert!(damaged.to_string().contains("checksum"), "{damaged}");

        fs::write(&path, &bytes[..3]).expect("writes");
        let truncated = SnapshotFile::open(dir.path()).expect_err("truncated");
        assert!(truncated.to_string().contains("truncated"), "{truncated}");
    }
}
