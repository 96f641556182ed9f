//! The output of an attempt, buffered on disk until the cluster has it.
//!
//! Each attempt's output is appended to `DATA_DIR/logs/<run>-<epoch>.log` as
//! records `[stream u8][length u32 LE][bytes]` as it arrives, so a slow or
//! broken connection costs disk, not memory, and a worker restart loses
//! nothing. Offsets count output bytes from 0 (what the server deduplicates
//! on); the cluster's acknowledgements say up to which offset it is stored.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rota_proto::v1::LogStream;

/// Where one record of the buffer lies.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Offset of its first output byte.
    offset: u64,
    /// Position of its bytes in the file.
    position: u64,
    len: u32,
    stream: LogStream,
}

/// An attempt's output buffer.
#[derive(Debug)]
pub struct LogBuffer {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
    /// Output bytes buffered in all.
    len: u64,
}

fn stream_code(stream: LogStream) -> u8 {
    match stream {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
        LogStream::System | LogStream::Unspecified => 0,
    }
}

fn stream_from(code: u8) -> LogStream {
    match code {
        1 => LogStream::Stdout,
        2 => LogStream::Stderr,
        _ => LogStream::System,
    }
}

impl LogBuffer {
    /// Opens (or creates) the buffer at `path`, reading what it holds. A
    /// record torn by a crash is cut off.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let (mut position, mut offset) = (0usize, 0u64);
        while let Some(header) = bytes.get(position..position + 5) {
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
            if bytes.len() < position + 5 + len as usize {
                break;
            }
            records.push(Record {
                offset,
                position: (position + 5) as u64,
                len,
                stream: stream_from(header[0]),
            });
            offset += u64::from(len);
            position += 5 + len as usize;
        }
        if position < bytes.len() {
            file.set_len(position as u64)?;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            records,
            len: offset,
        })
    }

    /// Output bytes buffered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes of the task's own output (stdout and stderr, not the worker's
    /// notes on the system stream): where an adopted container's output
    /// resumes.
    pub fn task_output_len(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| r.stream != LogStream::System)
            .map(|r| u64::from(r.len))
            .sum()
    }

    /// Whether nothing was buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends output.
    pub fn append(&mut self, stream: LogStream, data: &[u8]) -> io::Result<()> {
        for piece in data.chunks(u32::MAX as usize) {
            let position = self.file.seek(SeekFrom::End(0))? + 5;
            let len = piece.len() as u32;
            let mut record = Vec::with_capacity(5 + piece.len());
            record.push(stream_code(stream));
            record.extend_from_slice(&len.to_le_bytes());
            record.extend_from_slice(piece);
            self.file.write_all(&record)?;
            self.records.push(Record {
                offset: self.len,
                position,
                len,
                stream,
            });
            self.len += u64::from(len);
        }
        Ok(())
    }

    /// Output from `from` on, as (offset, stream, bytes) pieces of at most
    /// `max_piece` bytes, `max_total` bytes in all.
    pub fn read_from(
        &mut self,
        from: u64,
        max_piece: usize,
        max_total: usize,
    ) -> io::Result<Vec<(u64, LogStream, Vec<u8>)>> {
        let mut pieces = Vec::new();
        let mut total = 0usize;
        let first = self.records.partition_point(|r| r.offset + u64::from(r.len) <= from);
        for record in self.records[first..].iter().copied() {
            let skip = from.saturating_sub(record.offset);
            let mut at = skip;
            while at < u64::from(record.len) && total < max_total {
                let take = (u64::from(record.len) - at)
                    .min(max_piece as u64)
                    .min((max_total - total) as u64);
                let mut buf = vec![0u8; take as usize];
                self.file.seek(SeekFrom::Start(record.position + at))?;
                self.file.read_exact(&mut buf)?;
                pieces.push((record.offset + at, record.stream, buf));
                total += take as usize;
                at += take;
            }
            if total >= max_total {
                break;
            }
        }
        Ok(pieces)
    }

    /// Deletes the buffer file.
    pub fn remove(self) -> io::Result<()> {
        drop(self.file);
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_read_back_by_offset_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("logs/r-1.log");
        let mut buffer = LogBuffer::open(&path).expect("opens");
        buffer.append(LogStream::Stdout, b"hello ").expect("appends");
        buffer.append(LogStream::Stderr, b"world\n").expect("appends");
        assert_eq!(buffer.len(), 12);
        let pieces = buffer.read_from(3, 4, 100).expect("reads");
        let flat: Vec<(u64, LogStream, &[u8])> = pieces.iter().map(|(o, s, d)| (*o, *s, d.as_slice())).collect();
        assert_eq!(
            flat,
            [
                (3, LogStream::Stdout, b"lo ".as_slice()),
                (6, LogStream::Stderr, b"worl".as_slice()),
                (10, LogStream::Stderr, b"d\n".as_slice()),
            ]
        );
        assert_eq!(buffer.read_from(0, 100, 5).expect("reads")[0].2, b"hello");
        drop(buffer);

        // A crash mid-record leaves a torn tail; it is cut off on open.
        let mut file = OpenOptions::new().append(true).open(&path).expect("opens");
        file.write_all(&[1, 50, 0, 0, 0, b'x']).expect("writes");
        let mut buffer = LogBuffer::open(&path).expect("reopens");
        assert_eq!(buffer.len(), 12);
        buffer.append(LogStream::Stdout, b"!").expect("appends");
        assert_eq!(buffer.read_from(12, 10, 10).expect("reads")[0].2, b"!");
        buffer.remove().expect("removes");
        assert!(!path.exists());
    }
}
