//! What the worker must not forget across its own restart: the attempts it
//! holds, how they ended, and how much of their output the cluster has.
//!
//! Stored as `DATA_DIR/attempts.json`, replaced atomically (write, fsync,
//! rename, fsync the directory) after changes that must survive a crash (an
//! attempt accepted, started (its container or process group), ended) and
//! before the worker acts on them: once per turn of the worker's event
//! loop, for every attempt that changed in it (an attempt is never started
//! before the journal holds it; a failed save is tried again next turn).
//! Acknowledgements and the removal of an attempt whose end the cluster
//! recorded are kept in memory until the next save: losing them only makes
//! the worker repeat what the cluster ignores. After a crash the worker
//! registers with these attempts, adopts what still runs, and reports what
//! ended while it was down.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An attempt's identity: (run id, epoch).
pub type AttemptKey = (String, u64);

/// How an attempt ended on this worker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Exit {
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Peak memory use in bytes (0: unknown).
    pub peak_memory_bytes: u64,
    /// CPU time in milliseconds (0: unknown).
    pub cpu_time_ms: u64,
    /// Why it could not run, if so.
    pub error: Option<String>,
}

/// Which driver runs an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// A container.
    Docker,
    /// A host process group.
    Exec,
}

impl DriverKind {
    /// Its name in the worker protocol.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Docker => "docker",
            DriverKind::Exec => "exec",
        }
    }
}

/// One attempt this worker holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The run.
    pub run_id: String,
    /// The attempt's epoch (its fence).
    pub epoch: u64,
    /// The job's name (for logs).
    pub job: String,
    /// Its driver.
    pub driver: DriverKind,
    /// The image, for the docker driver.
    #[serde(default)]
    pub image: Option<String>,
    /// The container, once created.
    pub container: Option<String>,
    /// The process group, once spawned.
    pub pgid: Option<i32>,
    /// How long a stop waits between SIGTERM and SIGKILL, milliseconds.
    pub kill_grace_ms: u64,
    /// Whether it started (the cluster may not know yet).
    pub started: bool,
    /// Whether the cluster acknowledged that it started.
    #[serde(default)]
    pub started_reported: bool,
    /// How it ended, once it did.
    pub exit: Option<Exit>,
    /// Output bytes the cluster has stored.
    pub logs_acked: u64,
}

impl AttemptRecord {
    /// Its key.
    pub fn key(&self) -> AttemptKey {
        (self.run_id.clone(), self.epoch)
    }
}

/// The journal file and its content.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    attempts: BTreeMap<String, AttemptRecord>,
    /// Whether an attempt was put since the last save.
    dirty: bool,
}

fn name(key: &AttemptKey) -> String {
    format!("{}@{}", key.0, key.1)
}

impl Journal {
    /// Loads the journal of `dir` (empty if there is none).
    pub fn load(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let attempts = match fs::read(dir.join("attempts.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("attempts.json: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: dir.to_owned(),
            attempts,
            dirty: false,
        })
    }

    /// Every attempt held, in key order.
    pub fn attempts(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.attempts.values()
    }

    /// The attempt `key`.
    pub fn get(&self, key: &AttemptKey) -> Option<&AttemptRecord> {
        self.attempts.get(&name(key))
    }

    /// Stores (or replaces) an attempt that must reach the disk before the
    /// worker acts on it: the next [`Journal::save`] writes it. One save
    /// covers every attempt put since the last (group commit).
    pub fn put(&mut self, record: AttemptRecord) {
        self.attempts.insert(name(&record.key()), record);
        self.dirty = true;
    }

    /// Stores an attempt without saving: for what a restart may lose
    /// because the cluster repeats or ignores it (that it acknowledged a
    /// start or output). It reaches the disk with the next save.
    pub fn put_unsaved(&mut self, record: AttemptRecord) {
        self.attempts.insert(name(&record.key()), record);
    }

    /// Forgets an attempt without saving: for an attempt whose end the
    /// cluster has recorded (after a restart the worker would report it
    /// again, and the cluster would tell it to drop it). It reaches the
    /// disk with the next save.
    pub fn remove_unsaved(&mut self, key: &AttemptKey) {
        self.attempts.remove(&name(key));
    }

    /// Writes the journal if anything was [`put`](Journal::put) since the
    /// last save; after an error the next call tries again.
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.write()?;
        self.dirty = false;
        Ok(())
    }

    fn write(&self) -> io::Result<()> {
        let tmp = self.dir.join("attempts.json.tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&self.attempts).map_err(io::Error::other)?)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join("attempts.json"))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_survive_reloading() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut journal = Journal::load(dir.path()).expect("loads");
        let record = AttemptRecord {
            run_id: "r".into(),
            epoch: 7,
            job: "j".into(),
            driver: DriverKind::Docker,
            image: Some("busybox".into()),
            container: Some("c".into()),
            pgid: None,
            kill_grace_ms: 10_000,
            started: true,
            started_reported: false,
            exit: None,
            logs_acked: 0,
        };
        journal.put(record.clone());
        // Not on disk until saved.
        assert_eq!(Journal::load(dir.path()).expect("reloads").attempts().count(), 0);
        journal.save().expect("saves");
        journal.put_unsaved(AttemptRecord {
            logs_acked: 42,
            ..record.clone()
        });
        // Saved only with the next put.
        journal.save().expect("nothing to save");
        assert_eq!(
            Journal::load(dir.path())
                .expect("reloads")
                .get(&record.key())
                .expect("held")
                .logs_acked,
            0
        );
        journal.put(AttemptRecord {
            started_reported: true,
            logs_acked: 42,
            ..record.clone()
        });
        journal.save().expect("saves");
        let mut reloaded = Journal::load(dir.path()).expect("reloads");
        let got = reloaded.get(&("r".into(), 7)).expect("held");
        assert_eq!(got.logs_acked, 42);
        assert_eq!(got.container.as_deref(), Some("c"));
        reloaded.remove_unsaved(&record.key());
        reloaded.put(AttemptRecord {
            run_id: "s".into(),
            ..record
        });
        reloaded.save().expect("saves");
        let last = Journal::load(dir.path()).expect("reloads");
        assert_eq!(last.attempts().map(|a| a.run_id.as_str()).collect::<Vec<_>>(), ["s"]);
    }
}
