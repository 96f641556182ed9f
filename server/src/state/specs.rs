//! The specs runs execute, stored once per job generation.
//!
//! A run executes its job's spec as it was when the run was created: the
//! spec of the job's generation then. Every run of a generation has the same
//! one, and it is most of what a run is (about 740 of the 1,160 bytes of a
//! run's row when it was stored inline), so runs are stored without it and
//! the spec once, under `gen/<job uid>/<generation>`, for as long as a run
//! of that generation is kept. Jobs keep theirs inline: there is one row per
//! job, and its generation may have no run.
//!
//! Rows of runs written before the spec was stored apart hold it inline;
//! loading them stores it apart (see [`Specs::adopt`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::HashMap;

use super::job::JobSpec;
use super::run::Run;
use super::table::Table;

/// Prefix of a generation's spec row; the rest of the key is
/// `<job uid>/<generation>`.
pub const GEN_PREFIX: &str = "gen/";

/// The key (after [`GEN_PREFIX`]) of the spec of job `uid`'s `generation`.
fn key(uid: &str, generation: u64) -> String {
    format!("{uid}/{generation}")
}

/// The job uid and generation a spec row's key names, if it is one
/// [`key`] makes.
fn parse_key(key: &str) -> Option<(&str, u64)> {
    let (uid, generation) = key.rsplit_once('/')?;
    let generation = generation.parse().ok()?;
    (self::key(uid, generation) == key).then_some((uid, generation))
}

/// One generation's spec and how many runs use it.
#[derive(Debug, Clone)]
struct Entry {
    spec: Arc<JobSpec>,
    runs: u64,
}

/// The stored specs, with how many runs use each: a spec row exists exactly
/// while a run of its generation does.
#[derive(Debug, Clone, Default)]
pub struct Specs {
    /// The rows, as persisted (keys after [`GEN_PREFIX`]).
    table: Table<JobSpec>,
    /// The same specs by job uid and generation, with their users.
    by_job: HashMap<String, BTreeMap<u64, Entry>>,
}

impl Specs {
    /// The rows, for persistence and snapshots.
    pub fn table(&self) -> &Table<JobSpec> {
        &self.table
    }

    /// The rows, to take their changes.
    pub fn table_mut(&mut self) -> &mut Table<JobSpec> {
        &mut self.table
    }

    /// The stored spec of job `uid`'s `generation`.
    pub fn get(&self, uid: &str, generation: u64) -> Option<&Arc<JobSpec>> {
        Some(&self.by_job.get(uid)?.get(&generation)?.spec)
    }

    /// Loads a stored row (`key` after [`GEN_PREFIX`]), used by no run until
    /// one is counted ([`Specs::attach`]). `None` if the key names no generation. A
    /// generation already known (adopted from a run's row read earlier)
    /// stays as it is: a generation's spec never changes.
    pub fn load(&mut self, key: &str, spec: JobSpec) -> Option<()> {
        let (uid, generation) = parse_key(key)?;
        let generations = self.by_job.entry(uid.to_owned()).or_default();
        if let std::collections::btree_map::Entry::Vacant(vacant) = generations.entry(generation) {
            let spec = Arc::new(spec);
            vacant.insert(Entry {
                spec: spec.clone(),
                runs: 0,
            });
            self.table.load_shared(key.to_owned(), spec);
        }
        Some(())
    }

    /// Stores apart a spec read inline from a run's row (rows written before
    /// specs were stored apart), for a generation with no stored spec yet:
    /// a changed row, written with the next changes.
    ///
    /// The run being loaded is counted as its user, as by [`Specs::attach`].
    pub fn adopt(&mut self, uid: &str, generation: u64, spec: JobSpec) -> Arc<JobSpec> {
        let spec = Arc::new(spec);
        self.insert(uid, generation, spec.clone());
        spec
    }

    /// Counts a run (being loaded, or new) as a user of job `uid`'s
    /// `generation`, and gives that generation's spec; `None`, and nothing
    /// counted, if it is not stored (yet).
    pub fn attach(&mut self, uid: &str, generation: u64) -> Option<Arc<JobSpec>> {
        let entry = self.by_job.get_mut(uid)?.get_mut(&generation)?;
        entry.runs += 1;
        Some(entry.spec.clone())
    }

    /// Counts a new run as a user of its spec, storing the spec if it is
    /// the generation's first.
    pub fn acquire(&mut self, run: &Run) {
        if self.attach(&run.job_uid, run.generation).is_none() {
            self.insert(&run.job_uid, run.generation, run.spec.clone());
        }
    }

    /// Counts a removed run out, removing its spec with the generation's
    /// last run.
    pub fn release(&mut self, run: &Run) {
        let Some(generations) = self.by_job.get_mut(&run.job_uid) else {
            return;
        };
        let Some(entry) = generations.get_mut(&run.generation) else {
            return;
        };
        debug_assert!(
            entry.runs > 0,
            "a run of {}/{} counted out twice",
            run.job_uid,
            run.generation
        );
        entry.runs = entry.runs.saturating_sub(1);
        if entry.runs == 0 {
            generations.remove(&run.generation);
            if generations.is_empty() {
                self.by_job.remove(&run.job_uid);
            }
            self.table.remove(&key(&run.job_uid, run.generation));
        }
    }

    /// Removes the specs no run uses (after loading: rows of generations
    /// whose runs are gone cannot be, but a damaged store might hold some).
    pub fn drop_unused(&mut self) {
        let mut unused = Vec::new();
        for (uid, generations) in &mut self.by_job {
            generations.retain(|generation, entry| {
                let used = entry.runs > 0;
                if !used {
                    unused.push(key(uid, *generation));
                }
                used
            });
        }
        self.by_job.retain(|_, generations| !generations.is_empty());
        for key in unused {
            self.table.remove(&key);
        }
    }

    /// The users of every stored spec, by job uid and generation, to compare
    /// a state with one rebuilt from its rows.
    #[cfg(test)]
    pub fn counts(&self) -> BTreeMap<(String, u64), u64> {
        self.by_job
            .iter()
            .flat_map(|(uid, generations)| {
                generations
                    .iter()
                    .map(move |(generation, entry)| ((uid.clone(), *generation), entry.runs))
            })
            .collect()
    }

    /// Stores a generation's spec with the one run that brings it.
    fn insert(&mut self, uid: &str, generation: u64, spec: Arc<JobSpec>) {
        self.by_job.entry(uid.to_owned()).or_default().insert(
            generation,
            Entry {
                spec: spec.clone(),
                runs: 1,
            },
        );
        self.table.insert_shared(key(uid, generation), spec);
    }
}
