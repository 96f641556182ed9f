//! The oracle: what a scenario did, and whether the cluster kept its
//! promises while it did (BRIEF §3, G1–G8).
//!
//! A scenario records a [`History`] — every client operation with its
//! outcome (`Ok`, `Failed`, or `Unknown` when the answer never came: an
//! unknown write may or may not have happened and is never treated as
//! absent), the run records the cluster holds at the end, what each server
//! says once everything is healed, the lives of containers as the Docker
//! engine saw them, and the slots each scheduled job must have produced.
//! [`check`] returns every violation with an account precise enough to find
//! the bug from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rota_client::proto as pb;

/// How a client operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Refused or failed before the cluster could act.
    Failed,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// A write a client made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A job created (or applied) under `name`.
    CreateJob {
        /// The job's name.
        name: String,
        /// The generation the answer named, if one came.
        generation: Option<u64>,
    },
    /// A job deleted.
    DeleteJob {
        /// The job's name.
        name: String,
    },
    /// A manual trigger with a request id; `run` is the run id the answer
    /// named, if one came.
    Trigger {
        /// The job.
        job: String,
        /// The idempotency key.
        request_id: String,
        /// The run the answer named.
        run: Option<String>,
    },
}

/// One recorded client operation, in the order the client issued them.
#[derive(Debug, Clone)]
pub struct ClientOp {
    /// What was asked.
    pub op: Op,
    /// How it ended.
    pub outcome: Outcome,
}

/// A container's life as the engine reported it (nanoseconds since the
/// epoch; `stopped` is `None` if it was still running at the end).
#[derive(Debug, Clone)]
pub struct ContainerLife {
    /// The engine's container id.
    pub id: String,
    /// The `rota.run` label.
    pub run: String,
    /// The `rota.epoch` label.
    pub epoch: u64,
    /// The `rota.job` label.
    pub job: String,
    /// When it started.
    pub started: i128,
    /// When it stopped.
    pub stopped: Option<i128>,
}

/// What one server holds once the scenario has healed every fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerView {
    /// Job name → generation.
    pub jobs: BTreeMap<String, u64>,
    /// Run id → (state, number of attempts).
    pub runs: BTreeMap<String, (i32, usize)>,
}

/// Everything a scenario observed.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Client writes, in issue order.
    pub ops: Vec<ClientOp>,
    /// The jobs the cluster holds at the end, with their generations (a
    /// linearizable read).
    pub jobs_at_end: BTreeMap<String, u64>,
    /// The run records at the end (a linearizable read).
    pub runs: Vec<pb::Run>,
    /// Each finished run's log as read back.
    pub logs: BTreeMap<String, Vec<u8>>,
    /// Per server, what it holds after healing (stale reads of each).
    pub servers: BTreeMap<u64, ServerView>,
    /// Per job, the slots (unix nanoseconds) between the scenario's start
    /// and end that must each have exactly one record.
    pub expected_slots: BTreeMap<String, Vec<i128>>,
    /// Jobs with `concurrency: forbid`.
    pub forbid: BTreeSet<String>,
    /// Container lives from the engine's events.
    pub containers: Vec<ContainerLife>,
    /// rota-labelled containers still present at the end, by id.
    pub leftover_containers: Vec<String>,
    /// Workers killed for good, with when (unix nanoseconds).
    pub dead_workers: BTreeMap<String, i128>,
    /// When the scenario ended (unix nanoseconds).
    pub end: i128,
    /// The worker lease plus the cluster's grace.
    pub lease_and_grace: Duration,
}

/// A broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee, e.g. `G2`.
    pub guarantee: &'static str,
    /// What happened, with the ids involved.
    pub account: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.guarantee, self.account)
    }
}

/// Nanoseconds since the epoch of a protobuf timestamp.
pub fn nanos(ts: &Option<prost_types::Timestamp>) -> Option<i128> {
    ts.as_ref()
        .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

fn is_terminal(run: &pb::Run) -> bool {
    !matches!(
        run.state(),
        pb::RunState::Pending | pb::RunState::Assigned | pb::RunState::Running | pb::RunState::Unspecified
    )
}

/// Every violation of G1–G8 in `history`, in guarantee order.
pub fn check(history: &History) -> Vec<Violation> {
    let mut found = Vec::new();
    acknowledged_writes(history, &mut found);
    one_record_per_slot(history, &mut found);
    scheduled_records_are_unique(history, &mut found);
    no_overlap_when_forbidden(history, &mut found);
    dead_workers_release_runs(history, &mut found);
    no_orphans(history, &mut found);
    idempotent_triggers(history, &mut found);
    logs_outlive_workers(history, &mut found);
    servers_converge(history, &mut found);
    found
}

/// G1: what was acknowledged is there (unless a later write, acknowledged
/// or unknown, may have undone it).
fn acknowledged_writes(history: &History, found: &mut Vec<Violation>) {
    let runs: BTreeSet<&str> = history.runs.iter().map(|r| r.id.as_str()).collect();
    for (i, op) in history.ops.iter().enumerate() {
        if op.outcome != Outcome::Ok {
            continue;
        }
        let later = &history.ops[i + 1..];
        let may_have_happened =
            |wanted: &dyn Fn(&Op) -> bool| later.iter().any(|o| o.outcome != Outcome::Failed && wanted(&o.op));
        match &op.op {
            Op::CreateJob { name, generation } => {
                let deleted = may_have_happened(&|o| matches!(o, Op::DeleteJob { name: n } if n == name));
                if deleted {
                    continue;
                }
                match (history.jobs_at_end.get(name), generation) {
                    (None, _) => found.push(Violation {
                        guarantee: "G1",
                        account: format!(
                            "job {name} was created (acknowledged, op #{i}) and is gone; nothing deleted it"
                        ),
                    }),
                    (Some(end), Some(acknowledged)) if end < acknowledged => found.push(Violation {
                        guarantee: "G1",
                        account: format!(
                            "job {name} was written at generation {acknowledged} (acknowledged, op #{i}) and is back at generation {end}"
                        ),
                    }),
                    _ => {}
                }
            }
            Op::DeleteJob { name } => {
                let recreated = may_have_happened(&|o| matches!(o, Op::CreateJob { name: n, .. } if n == name));
                if !recreated && history.jobs_at_end.contains_key(name) {
                    found.push(Violation {
                        guarantee: "G1",
                        account: format!(
                            "job {name} was deleted (acknowledged, op #{i}) and is back; nothing created it"
                        ),
                    });
                }
            }
            Op::Trigger {
                job, run: Some(run), ..
            } => {
                let deleted = may_have_happened(&|o| matches!(o, Op::DeleteJob { name } if name == job));
                if !deleted && !runs.contains(run.as_str()) {
                    found.push(Violation {
                        guarantee: "G1",
                        account: format!("run {run} of job {job} was triggered (acknowledged, op #{i}) and is gone"),
                    });
                }
            }
            Op::Trigger { run: None, .. } => {}
        }
    }
}

/// The slots a scheduled record covers: `(first, last)` in nanoseconds.
fn covered(record: &pb::Run) -> (i128, i128) {
    let from = nanos(&record.nominal_time).unwrap_or(i128::MIN);
    let to = nanos(&record.last_nominal_time)
        .filter(|_| record.slot_count > 1)
        .unwrap_or(from);
    (from, to)
}

/// G2, over every scheduled record (not only the slots a scenario
/// expected): its id follows the rule (`JOBUID-SLOTMS`, the uid without
/// dashes), and no two records of one job cover a common slot.
fn scheduled_records_are_unique(history: &History, found: &mut Vec<Violation>) {
    let mut by_job: BTreeMap<&str, Vec<&pb::Run>> = BTreeMap::new();
    for record in history.runs.iter().filter(|r| r.cause == "scheduled") {
        let (first, _) = covered(record);
        let expected = format!("{}-{}", record.job_uid.replace('-', ""), first.div_euclid(1_000_000));
        if record.id != expected {
            found.push(Violation {
                guarantee: "G2",
                account: format!(
                    "record {} of job {} should have the deterministic id {expected}",
                    record.id, record.job
                ),
            });
        }
        by_job.entry(record.job_uid.as_str()).or_default().push(record);
    }
    for records in by_job.values_mut() {
        records.sort_by_key(|r| covered(r));
        for pair in records.windows(2) {
            let (earlier, later) = (covered(pair[0]), covered(pair[1]));
            if later.0 <= earlier.1 {
                found.push(Violation {
                    guarantee: "G2",
                    account: format!(
                        "job {}: records {} and {} both cover slot {}",
                        pair[1].job, pair[0].id, pair[1].id, later.0
                    ),
                });
            }
        }
    }
}

/// G2: every expected slot has exactly one record, and no record names a
/// slot that was not expected.
fn one_record_per_slot(history: &History, found: &mut Vec<Violation>) {
    for (job, slots) in &history.expected_slots {
        let records: Vec<&pb::Run> = history
            .runs
            .iter()
            .filter(|r| &r.job == job && r.cause == "scheduled")
            .collect();
        let (Some(&first), Some(&last)) = (slots.first(), slots.last()) else {
            found.push(Violation {
                guarantee: "G2",
                account: format!("job {job}: no slot was expected at all (the scenario spans none; it checks nothing)"),
            });
            continue;
        };
        for slot in slots {
            let covering: Vec<&str> = records
                .iter()
                .filter(|r| {
                    let (from, to) = covered(r);
                    from <= *slot && *slot <= to
                })
                .map(|r| r.id.as_str())
                .collect();
            if covering.len() != 1 {
                found.push(Violation {
                    guarantee: "G2",
                    account: format!(
                        "job {job}: slot {slot} has {} records {covering:?} instead of one",
                        covering.len()
                    ),
                });
            }
        }
        for record in &records {
            let Some(at) = nanos(&record.nominal_time) else {
                continue;
            };
            if (first..=last).contains(&at) && !slots.contains(&at) {
                found.push(Violation {
                    guarantee: "G2",
                    account: format!(
                        "job {job}: record {} is for {at}, which is no slot of the job",
                        record.id
                    ),
                });
            }
        }
    }
}

/// One execution in time, for G3.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Execution {
    /// An attempt as the cluster recorded it.
    Attempt { run: String, epoch: u64 },
    /// A container as the engine saw it.
    Container { id: String, run: String, epoch: u64 },
}

impl Execution {
    /// A container and the attempt it belongs to are one execution; two
    /// containers of one attempt are two.
    fn same(&self, other: &Execution) -> bool {
        match (self, other) {
            (Execution::Attempt { run, epoch }, Execution::Container { run: r, epoch: e, .. })
            | (Execution::Container { run: r, epoch: e, .. }, Execution::Attempt { run, epoch }) => {
                run == r && epoch == e
            }
            _ => false,
        }
    }
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Execution::Attempt { run, epoch } => write!(f, "attempt {epoch} of run {run}"),
            Execution::Container { id, run, epoch } => {
                write!(f, "container {} of run {run} epoch {epoch}", &id[..id.len().min(12)])
            }
        }
    }
}

/// G3: no two attempts (nor two containers, even of one attempt) of a
/// `forbid` job at once.
fn no_overlap_when_forbidden(history: &History, found: &mut Vec<Violation>) {
    for job in &history.forbid {
        let mut spans: Vec<(i128, i128, Execution)> = Vec::new();
        for run in history.runs.iter().filter(|r| &r.job == job) {
            for attempt in &run.attempts {
                // From its assignment: a second attempt assigned while the
                // first is live is the violation, started or not.
                let Some(from) = nanos(&attempt.assigned_at).or(nanos(&attempt.started_at)) else {
                    found.push(Violation {
                        guarantee: "G3",
                        account: format!("attempt {} of run {} has no assignment time", attempt.epoch, run.id),
                    });
                    continue;
                };
                let to = nanos(&attempt.ended_at).unwrap_or(history.end);
                let execution = Execution::Attempt {
                    run: run.id.clone(),
                    epoch: attempt.epoch,
                };
                spans.push((from, to, execution));
            }
        }
        for life in history.containers.iter().filter(|c| &c.job == job) {
            let execution = Execution::Container {
                id: life.id.clone(),
                run: life.run.clone(),
                epoch: life.epoch,
            };
            spans.push((life.started, life.stopped.unwrap_or(history.end), execution));
        }
        spans.sort();
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if b.0 >= a.1 {
                    break;
                }
                if a.2.same(&b.2) {
                    continue;
                }
                found.push(Violation {
                    guarantee: "G3",
                    account: format!(
                        "job {job} (forbid): {} [{}, {}) overlaps {} [{}, {})",
                        a.2, a.0, a.1, b.2, b.0, b.1
                    ),
                });
            }
        }
    }
}

/// How late past lease + grace the cluster may notice a dead worker: the
/// lease watcher's tick and a loaded machine's scheduling.
const G4_SLACK: i128 = 3_000_000_000;

/// G4: a run on a worker that died ends (or is retried) within lease +
/// grace: no run is still held by a dead worker at the end, and every
/// attempt the dead worker held ended no later than lease + grace after it
/// died.
fn dead_workers_release_runs(history: &History, found: &mut Vec<Violation>) {
    let limit = i128::try_from(history.lease_and_grace.as_nanos()).unwrap_or(i128::MAX);
    for run in &history.runs {
        for attempt in &run.attempts {
            let Some(&died) = history.dead_workers.get(&attempt.worker) else {
                continue;
            };
            let assigned = nanos(&attempt.assigned_at).unwrap_or(i128::MAX);
            match nanos(&attempt.ended_at) {
                Some(ended) if assigned < died && ended - died > limit + G4_SLACK => found.push(Violation {
                    guarantee: "G4",
                    account: format!(
                        "run {} attempt of epoch {} on worker {} ended {} ms after the worker died (lease + grace: {} ms)",
                        run.id,
                        attempt.epoch,
                        attempt.worker,
                        (ended - died) / 1_000_000,
                        limit / 1_000_000
                    ),
                }),
                None if !is_terminal(run) && history.end - died > limit => found.push(Violation {
                    guarantee: "G4",
                    account: format!(
                        "run {} is still {:?} on worker {}, dead for {} ms (lease + grace: {} ms)",
                        run.id,
                        run.state(),
                        attempt.worker,
                        (history.end - died) / 1_000_000,
                        limit / 1_000_000
                    ),
                }),
                _ => {}
            }
        }
    }
}

/// G5: no rota container outlives its run.
fn no_orphans(history: &History, found: &mut Vec<Violation>) {
    if !history.leftover_containers.is_empty() {
        found.push(Violation {
            guarantee: "G5",
            account: format!("rota-labelled containers left: {:?}", history.leftover_containers),
        });
    }
}

/// G6: triggers with one request id made one run.
fn idempotent_triggers(history: &History, found: &mut Vec<Violation>) {
    let mut answers: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for op in &history.ops {
        if let Op::Trigger { job, request_id, run } = &op.op {
            let entry = answers.entry((job.as_str(), request_id.as_str())).or_default();
            if let Some(run) = run {
                entry.insert(run.as_str());
            }
        }
    }
    for ((job, request_id), named) in answers {
        let records: Vec<&str> = history
            .runs
            .iter()
            .filter(|r| r.job == job && r.request_id == request_id)
            .map(|r| r.id.as_str())
            .collect();
        let unknown_named = named.iter().any(|run| !records.contains(run));
        if named.len() > 1 || records.len() > 1 || unknown_named {
            found.push(Violation {
                guarantee: "G6",
                account: format!(
                    "job {job}, request id {request_id}: answers named runs {named:?}, the cluster holds {records:?}"
                ),
            });
        }
    }
}

/// G7: a finished run's log is all there (as many bytes as the run says it
/// kept).
fn logs_outlive_workers(history: &History, found: &mut Vec<Violation>) {
    for run in history.runs.iter().filter(|r| is_terminal(r)) {
        let Some(log) = history.logs.get(&run.id) else { continue };
        if log.len() as u64 != run.log_bytes {
            found.push(Violation {
                guarantee: "G7",
                account: format!(
                    "run {}: {} log bytes read back, the run records {}",
                    run.id,
                    log.len(),
                    run.log_bytes
                ),
            });
        }
    }
}

/// G8: once healed, every server holds the same jobs and runs.
fn servers_converge(history: &History, found: &mut Vec<Violation>) {
    let mut views = history.servers.iter();
    let Some((first_id, first)) = views.next() else { return };
    for (id, view) in views {
        if view != first {
            let jobs: BTreeSet<_> = view.jobs.iter().collect();
            let first_jobs: BTreeSet<_> = first.jobs.iter().collect();
            let runs: BTreeSet<_> = view.runs.iter().collect();
            let first_runs: BTreeSet<_> = first.runs.iter().collect();
            found.push(Violation {
                guarantee: "G8",
                account: format!(
                    "server {id} differs from server {first_id}: jobs only on {id}: {:?}, only on {first_id}: {:?}; \
                     runs only on {id}: {:?}, only on {first_id}: {:?}",
                    jobs.difference(&first_jobs).collect::<Vec<_>>(),
                    first_jobs.difference(&jobs).collect::<Vec<_>>(),
                    runs.difference(&first_runs).collect::<Vec<_>>(),
                    first_runs.difference(&runs).collect::<Vec<_>>(),
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    fn ts(nanos: i128) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: i64::try_from(nanos / S).unwrap_or_default(),
            nanos: i32::try_from(nanos % S).unwrap_or_default(),
        })
    }

    fn scheduled(job: &str, slot: i128) -> pb::Run {
        pb::Run {
            id: format!("{job}uid-{}", slot / 1_000_000),
            job: job.into(),
            job_uid: format!("{job}-uid"),
            cause: "scheduled".into(),
            nominal_time: ts(slot),
            slot_count: 1,
            state: pb::RunState::Succeeded as i32,
            ..Default::default()
        }
    }

    fn attempt(epoch: u64, from: i128, to: Option<i128>) -> pb::Attempt {
        pb::Attempt {
            epoch,
            worker: "w1".into(),
            assigned_at: ts(from),
            started_at: ts(from),
            ended_at: to.and_then(ts),
            ..Default::default()
        }
    }

    /// A history that keeps every promise: three slots, three records, one
    /// trigger, two converged servers.
    fn clean() -> History {
        let mut history = History {
            end: 100 * S,
            lease_and_grace: Duration::from_secs(20),
            ..History::default()
        };
        history
            .expected_slots
            .insert("nightly".into(), vec![10 * S, 20 * S, 30 * S]);
        history.forbid.insert("nightly".into());
        for (i, slot) in [10 * S, 20 * S, 30 * S].into_iter().enumerate() {
            let mut run = scheduled("nightly", slot);
            run.attempts.push(attempt(i as u64 + 1, slot, Some(slot + 5 * S)));
            history.runs.push(run);
        }
        history.ops.push(ClientOp {
            op: Op::CreateJob {
                name: "nightly".into(),
                generation: Some(2),
            },
            outcome: Outcome::Ok,
        });
        history.jobs_at_end.insert("nightly".into(), 2);
        let view = ServerView {
            jobs: BTreeMap::from([("nightly".into(), 1)]),
            runs: history.runs.iter().map(|r| (r.id.clone(), (r.state, 1))).collect(),
        };
        history.servers.insert(1, view.clone());
        history.servers.insert(2, view);
        history
    }

    #[test]
    fn a_history_that_keeps_every_promise_passes() {
        assert_eq!(check(&clean()), vec![]);
    }

    #[test]
    fn a_doubled_slot_and_a_missing_one_are_caught() {
        let mut history = clean();
        let mut twin = scheduled("nightly", 20 * S);
        twin.id.push_str("-twin");
        history.runs.push(twin);
        history.runs.retain(|r| nanos(&r.nominal_time) != Some(30 * S));
        let found = check(&history);
        assert!(
            found
                .iter()
                .any(|v| v.guarantee == "G2" && v.account.contains("slot 20000000000 has 2 records"))
        );
        assert!(
            found
                .iter()
                .any(|v| v.guarantee == "G2" && v.account.contains("slot 30000000000 has 0 records"))
        );
    }

    #[test]
    fn a_slot_covered_twice_outside_the_window_and_an_irregular_id_are_caught() {
        let mut history = clean();
        // A job the scenario expected nothing of: a range record and a run
        // both cover its slot at 50 s.
        let mut range = scheduled("other", 40 * S);
        range.slot_count = 2;
        range.last_nominal_time = ts(50 * S);
        history.runs.push(range);
        history.runs.push(scheduled("other", 50 * S));
        let mut odd = scheduled("other", 90 * S);
        odd.id = "other-random".into();
        history.runs.push(odd);
        history.servers.clear();
        let found: Vec<String> = check(&history).iter().map(ToString::to_string).collect();
        assert!(
            found.iter().any(|v| v.contains("both cover slot 50000000000")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|v| v.contains("other-random of job other should have the deterministic id otheruid-90000")),
            "{found:?}"
        );
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn a_range_record_covers_its_slots_once() {
        let mut history = clean();
        history.runs.retain(|r| nanos(&r.nominal_time) == Some(10 * S));
        let mut missed = scheduled("nightly", 20 * S);
        missed.state = pb::RunState::Missed as i32;
        missed.slot_count = 2;
        missed.last_nominal_time = ts(30 * S);
        history.runs.push(missed);
        history.servers.clear();
        assert_eq!(check(&history), vec![]);
    }

    #[test]
    fn overlapping_attempts_of_a_forbid_job_are_caught() {
        let mut history = clean();
        // The second slot's attempt starts while the first still runs.
        history.runs[1].attempts[0] = attempt(2, 12 * S, Some(18 * S));
        history.runs[0].attempts[0] = attempt(1, 10 * S, Some(15 * S));
        let found = check(&history);
        assert!(found.iter().any(|v| v.guarantee == "G3"), "{found:?}");
        // A container of an attempt does not overlap its own attempt.
        let mut history = clean();
        let life = ContainerLife {
            id: "c0ffee".into(),
            run: history.runs[0].id.clone(),
            epoch: 1,
            job: "nightly".into(),
            started: 10 * S + 1,
            stopped: Some(15 * S - 1),
        };
        history.containers.push(life.clone());
        assert_eq!(check(&history), vec![]);
        // A second container of the same attempt at the same time is not.
        history.containers.push(ContainerLife {
            id: "decaf".into(),
            started: 12 * S,
            ..life
        });
        let found = check(&history);
        assert!(
            found.iter().any(|v| v.guarantee == "G3"
                && v.account.contains("container c0ffee")
                && v.account.contains("container decaf")),
            "{found:?}"
        );
    }

    #[test]
    fn lost_writes_duplicate_triggers_stuck_runs_orphans_short_logs_and_divergence_are_caught() {
        let mut history = clean();
        history.jobs_at_end.clear();
        history.ops.push(ClientOp {
            op: Op::Trigger {
                job: "nightly".into(),
                request_id: "r1".into(),
                run: Some("a".into()),
            },
            outcome: Outcome::Ok,
        });
        history.ops.push(ClientOp {
            op: Op::Trigger {
                job: "nightly".into(),
                request_id: "r1".into(),
                run: Some("b".into()),
            },
            outcome: Outcome::Ok,
        });
        let mut stuck = scheduled("manual", 0);
        stuck.id = "stuck".into();
        stuck.cause = "manual".into();
        stuck.state = pb::RunState::Running as i32;
        stuck.attempts.push(pb::Attempt {
            worker: "gone".into(),
            ..attempt(9, 40 * S, None)
        });
        history.runs.push(stuck);
        history.dead_workers.insert("gone".into(), 50 * S);
        history.leftover_containers.push("c0ffee".into());
        history.logs.insert(history.runs[0].id.clone(), b"partial".to_vec());
        history.runs[0].log_bytes = 100;
        if let Some(view) = history.servers.get_mut(&2) {
            view.jobs.insert("ghost".into(), 1);
        }
        let found: BTreeSet<&str> = check(&history).iter().map(|v| v.guarantee).collect();
        assert_eq!(found, BTreeSet::from(["G1", "G4", "G5", "G6", "G7", "G8"]));
    }

    #[test]
    fn a_dead_workers_attempt_released_late_is_caught() {
        let mut history = clean();
        // Worker w1 died at 12 s holding the first slot's attempt, which
        // ended at 15 s: in time.
        history.dead_workers.insert("w1".into(), 12 * S);
        assert_eq!(check(&history), vec![]);
        // Released 40 s after it died (lease + grace: 20 s): late.
        history.runs[0].attempts[0].ended_at = ts(52 * S);
        let found = check(&history);
        assert!(
            found
                .iter()
                .any(|v| v.guarantee == "G4" && v.account.contains("ended 40000 ms after")),
            "{found:?}"
        );
    }

    #[test]
    fn an_acknowledged_update_rolled_back_is_caught() {
        let mut history = clean();
        history.jobs_at_end.insert("nightly".into(), 1);
        let found = check(&history);
        assert!(
            found.iter().any(|v| v.guarantee == "G1"
                && v.account.contains("generation 2")
                && v.account.contains("generation 1")),
            "{found:?}"
        );
    }

    #[test]
    fn an_unknown_delete_may_have_happened() {
        let mut history = clean();
        history.ops.push(ClientOp {
            op: Op::DeleteJob { name: "nightly".into() },
            outcome: Outcome::Unknown,
        });
        history.jobs_at_end.clear();
        history.servers.clear();
        assert_eq!(check(&history), vec![]);
    }
}
