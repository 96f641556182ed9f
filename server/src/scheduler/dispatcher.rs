//! Places pending runs on workers: for each run the state says may be placed
//! now (in creation order), the connected, alive worker with the most free
//! slots among those whose labels and drivers fit — spreading load — and
//! proposes the placements in one `Assign`. The state machine checks every
//! placement again when it applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::RETRY_PAUSE;
use super::leases::Leases;
use crate::node::NodeHandle;
use crate::state::job::Concurrency;
use crate::state::run::{Cause, WorkerState};
use crate::state::{Op, Placement, Response, State, WorkerId};

/// Placements per `Assign` command.
const MAX_BATCH: usize = 256;

/// Wakes at least this often even without a change, as a safety net.
const IDLE: Duration = Duration::from_secs(5);

/// Placements for the pending runs, and when a retry backoff ends next.
pub fn plan(state: &State, leases: &Leases, now: DateTime<Utc>) -> (Vec<Placement>, Option<DateTime<Utc>>) {
    let mut free: BTreeMap<&WorkerId, i64> = state
        .workers()
        .filter(|w| w.state == WorkerState::Alive && w.drain.is_none() && leases.is_live(&w.id))
        .map(|w| {
            let busy = state.index().on_worker.get(&w.id).map_or(0, |runs| runs.len());
            (&w.id, i64::from(w.capacity.slots) - busy as i64)
        })
        .collect();
    let next_wake = state
        .index()
        .retry_wakeups
        .iter()
        .map(|(at, _)| *at)
        .find(|at| *at > now);
    let mut placements = Vec::new();
    let mut exclusive_jobs = BTreeSet::new();
    for (_, id) in &state.index().pending {
        if placements.len() == MAX_BATCH || free.values().all(|n| *n <= 0) {
            break;
        }
        let Ok(run) = state.dispatchable(id, now) else { continue };
        let forced = matches!(run.cause, Cause::Manual { forced: true, .. });
        let exclusive = run.spec.concurrency != Concurrency::Allow && !forced;
        if exclusive && !exclusive_jobs.insert(run.job_uid.clone()) {
            continue; // one placement per non-overlapping job per batch
        }
        let best = free
            .iter()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(id, n)| state.worker(id).map(|w| (w, *n)))
            .filter(|(w, _)| w.drivers.contains(&run.spec.task.driver))
            .filter(|(w, _)| run.spec.constraints.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .max_by(|(a, n), (b, m)| n.cmp(m).then_with(|| b.id.cmp(&a.id)))
            .map(|(w, _)| w.id.clone());
        if let Some(worker) = best {
            if let Some(n) = free.get_mut(&worker) {
                *n -= 1;
            }
            placements.push(Placement {
                run: run.id.clone(),
                worker,
            });
        } else if exclusive {
            exclusive_jobs.remove(&run.job_uid);
        }
    }
    (placements, next_wake)
}

/// Runs until `cancel`.
pub async fn run(node: NodeHandle, leases: Arc<Leases>, cancel: CancellationToken) {
    let mut changes = node.state.subscribe();
    let mut workers = leases.subscribe();
    loop {
        let now = Utc::now();
        let (placements, next_wake) = {
            let applied = node.state.read();
            plan(&applied.state, &leases, now)
        };
        if !placements.is_empty() {
            let count = placements.len();
            let span = tracing::info_span!("dispatch", node = node.id, term = node.term(), placements = count);
            match tracing::Instrument::instrument(node.propose(Op::Assign { placements }), span).await {
                Ok(Response::Assigned { placed, refused }) => {
                    tracing::debug!(
                        proposed = count,
                        placed = placed.len(),
                        refused = refused.len(),
                        "assigned"
                    );
                    for (placement, why) in refused {
                        tracing::debug!(run = %placement.run, worker = %placement.worker, why, "placement refused");
                    }
                    if !placed.is_empty() {
                        continue;
                    }
                    // Nothing placed: wait for a change rather than plan the same again.
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "assignment not committed");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(RETRY_PAUSE) => continue,
                    }
                }
            }
        }
        let wait = next_wake
            .and_then(|at| (at - now).to_std().ok())
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { return },
            changed = workers.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::state::job::Driver;
    use crate::state::run::Capacity;
    use crate::state::tests::sample_spec;
    use crate::state::{Command, WorkerInfo};

    fn command(op: Op) -> Command {
        Command {
            now: Utc.timestamp_opt(1_800_000_000, 0).single().expect("time"),
            op,
        }
    }

    fn worker(state: &mut State, index: u64, id: &str, slots: u32, arch: &str) {
        let op = Op::RegisterWorker {
            worker: id.into(),
            info: WorkerInfo {
                labels: BTreeMap::from([("arch".into(), arch.into())]),
                capacity: Capacity {
                    slots,
                    ..Capacity::default()
                },
                drivers: BTreeSet::from([Driver::Docker]),
            },
            held: vec![],
        };
        state.apply(index, &command(op)).expect("registered");
    }

    #[test]
    fn placements_spread_over_connected_fitting_workers() {
        let mut state = State::default();
        let mut spec = sample_spec("spread");
        spec.schedule.trigger = None;
        spec.concurrency = Concurrency::Allow;
        state
            .apply(1, &command(Op::CreateJob { uid: "u".into(), spec }))
            .expect("created");
        worker(&mut state, 2, "a", 2, "amd64");
        worker(&mut state, 3, "b", 2, "amd64");
        worker(&mut state, 4, "arm", 8, "arm64");
        worker(&mut state, 5, "offline", 8, "amd64");
        for i in 0..5 {
            let op = Op::TriggerRun {
                job: "spread".into(),
                request_id: format!("r{i}"),
                params: BTreeMap::new(),
                force: false,
                trace: None,
            };
            state.apply(10 + i, &command(op)).expect("triggered");
        }
        let leases = Leases::new(Duration::from_secs(10), Duration::from_secs(5), []);
        for id in ["a", "b", "arm"] {
            leases.connect(id);
        }
        let now = Utc.timestamp_opt(1_800_000_001, 0).single().expect("time");
        let (placements, _) = plan(&state, &leases, now);
        let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &placements {
            *per_worker.entry(p.worker.as_str()).or_default() += 1;
        }
        // 4 slots fit (a and b, 2 each); the arm64 and the disconnected
        // workers get nothing; the fifth run waits.
        assert_eq!(per_worker, BTreeMap::from([("a", 2), ("b", 2)]));
        // Alternating: the emptiest worker first.
        assert_ne!(placements[0].worker, placements[1].worker);
    }
}
