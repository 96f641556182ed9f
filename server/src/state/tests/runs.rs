//! The run state machine: slots and catch-up, concurrency, triggers,
//! attempts and epochs, retries, timeouts, workers, logs, history, and
//! determinism properties over random command logs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::super::job::*;
use super::super::logs::{LOG_CAP_BYTES, LogStream, MAX_CHUNK_BYTES};
use super::super::run::*;
use super::super::runs::{retry_delay, scheduled_run_id};
use super::super::*;
use super::sample_spec;

const T0: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z, a minute boundary

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(T0 + secs, 0).single().expect("valid time")
}

/// A state machine driven by hand: each `apply` is the next log index.
#[derive(Clone)]
struct Sim {
    state: State,
    index: LogIndex,
    now: DateTime<Utc>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            state: State::default(),
            index: 0,
            now: at(0),
        }
    }

    fn apply(&mut self, op: Op) -> ApplyResult {
        self.index += 1;
        let result = self.state.apply(self.index, &Command { now: self.now, op });
        self.check_index();
        result
    }

    fn ok(&mut self, op: Op) -> Response {
        let what = format!("{op:?}");
        self.apply(op).unwrap_or_else(|e| panic!("{what} refused: {e}"))
    }

    /// The incrementally maintained index equals one rebuilt from scratch.
    fn check_index(&self) {
        let mut rebuilt = self.state.clone();
        rebuilt.reindex();
        assert_eq!(
            rebuilt.index, self.state.index,
            "index drifted at log index {}",
            self.index
        );
        let mut users = BTreeMap::new();
        for (_, run) in self.state.runs.iter() {
            *users.entry((run.job_uid.clone(), run.generation)).or_default() += 1;
        }
        assert_eq!(self.state.specs.counts(), users, "spec users drifted");
        let stored: Vec<String> = self.state.specs.table().iter().map(|(k, _)| k.to_string()).collect();
        let used: BTreeSet<String> = users
            .keys()
            .map(|(uid, generation)| format!("{uid}/{generation}"))
            .collect();
        assert_eq!(
            stored.into_iter().collect::<BTreeSet<_>>(),
            used,
            "a spec row exists while runs use it"
        );
    }

    fn advance(&mut self, secs: i64) {
        self.now += chrono::Duration::seconds(secs);
    }

    fn tick(&mut self) -> TickSummary {
        match self.ok(Op::Tick) {
            Response::Ticked(summary) => summary,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn job(&mut self, spec: JobSpec) -> Job {
        match self.ok(Op::CreateJob {
            uid: format!("uid-{}", spec.name),
            spec,
        }) {
            Response::Job(job) => job,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn worker(&mut self, id: &str, slots: u32) {
        self.ok(Op::RegisterWorker {
            worker: id.to_owned(),
            info: WorkerInfo {
                labels: BTreeMap::from([("arch".to_owned(), "amd64".to_owned())]),
                capacity: Capacity {
                    slots,
                    ..Capacity::default()
                },
                drivers: BTreeSet::from([Driver::Docker, Driver::Exec]),
            },
            held: vec![],
        });
    }

    /// Places `run` on `worker`; returns the attempt's epoch.
    fn assign(&mut self, run: &str, worker: &str) -> LogIndex {
        match self.ok(Op::Assign {
            placements: vec![Placement {
                run: run.into(),
                worker: worker.to_owned(),
            }],
        }) {
            Response::Assigned { placed, refused } => {
                assert!(refused.is_empty(), "refused: {refused:?}");
                assert_eq!(placed.len(), 1);
                self.index
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn refused(&mut self, run: &str, worker: &str) -> String {
        match self.ok(Op::Assign {
            placements: vec![Placement {
                run: run.into(),
                worker: worker.to_owned(),
            }],
        }) {
            Response::Assigned { refused, .. } => refused.first().map(|(_, why)| why.clone()).expect("refused"),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn finish(&mut self, worker: &str, run: &str, epoch: LogIndex, exit_code: i32) -> ApplyResult {
        self.apply(Op::AttemptFinished {
            worker: worker.to_owned(),
            run: run.into(),
            epoch,
            report: AttemptReport {
                exit_code: Some(exit_code),
                oom_killed: false,
                resources: None,
                error: None,
            },
        })
    }

    fn run(&self, id: &str) -> Run {
        self.state.run(id).cloned().unwrap_or_else(|| panic!("no run {id}"))
    }

    fn runs(&self, job: &Job) -> Vec<Run> {
        self.state.runs_of_job(&job.uid).cloned().collect()
    }

    fn trigger(&mut self, job: &str, request_id: &str, force: bool) -> ApplyResult {
        self.apply(Op::TriggerRun {
            job: job.to_owned(),
            request_id: request_id.to_owned(),
            params: BTreeMap::from([("TARGET".to_owned(), "x".to_owned())]),
            force,
            trace: None,
        })
    }
}

fn every(name: &str, secs: u64) -> JobSpec {
    let mut spec = sample_spec(name);
    spec.schedule.trigger = Some(Trigger::Every(Duration::from_secs(secs)));
    spec.schedule.starting_deadline = None;
    spec.concurrency = Concurrency::Allow;
    spec.retry.max_attempts = 1;
    spec.timeout = None;
    spec
}

fn hourly(name: &str) -> JobSpec {
    let mut spec = every(name, 3600);
    spec.schedule.trigger = Some(Trigger::Cron("0 * * * *".to_owned()));
    spec.schedule.timezone = chrono_tz::UTC;
    spec
}

/// Every slot in `(after, until]` is covered by exactly one record.
fn assert_each_slot_once(sim: &Sim, job: &Job, after: DateTime<Utc>, until: DateTime<Utc>) {
    let trigger = job.spec.schedule.trigger.clone().expect("scheduled");
    let (slots, _) = schedule::fires_between(&trigger, job.spec.schedule.timezone, job.anchor, after, until, 100_000);
    let runs = sim.runs(job);
    for slot in &slots {
        let covering: Vec<_> = runs
            .iter()
            .filter(|r| match (r.nominal_time, r.last_nominal_time) {
                (Some(first), Some(last)) => first <= *slot && *slot <= last,
                _ => false,
            })
            .collect();
        let claimed: u64 = covering
            .iter()
            .map(|r| if r.slot_count > 1 { 1 } else { r.slot_count })
            .sum();
        assert_eq!(
            claimed,
            1,
            "slot {slot} covered by {:?}",
            covering.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
    }
    let counted: u64 = runs
        .iter()
        .filter(|r| r.cause == Cause::Scheduled)
        .map(|r| r.slot_count)
        .sum();
    assert_eq!(counted, slots.len() as u64, "records count every slot exactly once");
}

#[test]
fn each_slot_yields_one_run_with_a_deterministic_id() {
    let mut sim = Sim::new();
    let job = sim.job(every("tick", 10));
    sim.advance(35);
    let summary = sim.tick();
    assert_eq!(summary.runs_created, 3);
    let runs = sim.runs(&job);
    assert_eq!(
        runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [10, 20, 30].map(|s| scheduled_run_id(&job.uid, at(s)))
    );
    assert!(
        runs.iter()
            .all(|r| r.state == RunState::Pending && r.cause == Cause::Scheduled)
    );
    assert_eq!(sim.tick(), TickSummary::default(), "nothing is due twice");
    assert_eq!(sim.state.job("tick").map(|j| j.cursor), Some(at(30)));
    assert_eq!(sim.state.index().next_fire.first(), Some(&(at(40), "tick".to_owned())));
    assert_each_slot_once(&sim, &job, at(0), at(35));
}

#[test]
fn catch_up_policies_after_an_outage_of_five_slots() {
    // Hourly job; the cluster is down from 00:00 until 05:02.
    let cases = [
        (CatchUp::None, None, 0, ReasonCode::CatchUpNone),
        (CatchUp::Latest, None, 1, ReasonCode::Superseded),
        (CatchUp::All, None, 2, ReasonCode::BeyondMaxCatchUp),
        // The 05:00 slot is 2 min late, within the 30 min starting deadline.
        (
            CatchUp::All,
            Some(Duration::from_secs(1800)),
            1,
            ReasonCode::StartingDeadline,
        ),
    ];
    for (catch_up, deadline, runs_expected, code) in cases {
        let mut sim = Sim::new();
        let mut spec = hourly("nightly");
        spec.schedule.catch_up = catch_up;
        spec.schedule.max_catch_up = 2;
        spec.schedule.starting_deadline = deadline;
        let job = sim.job(spec);
        sim.advance(5 * 3600 + 120);
        sim.tick();
        let runs = sim.runs(&job);
        let missed: Vec<_> = runs.iter().filter(|r| r.state == RunState::Missed).collect();
        let pending: Vec<_> = runs.iter().filter(|r| r.state == RunState::Pending).collect();
        assert_eq!(pending.len(), runs_expected, "{catch_up:?}/{deadline:?}: {runs:#?}");
        assert_eq!(missed.len(), 1, "one record for the missed range ({catch_up:?})");
        assert_eq!(missed[0].slot_count, 5 - runs_expected as u64);
        let reason = missed[0].reason.as_ref().expect("reason");
        assert_eq!(reason.code, code);
        assert!(reason.message.contains("slot(s)"), "{}", reason.message);
        // The runs kept are the latest slots.
        if let Some(last) = pending.last() {
            assert_eq!(last.nominal_time, Some(at(5 * 3600)));
        }
        assert_each_slot_once(&sim, &job, at(0), at(5 * 3600 + 120));
    }
}

#[test]
fn the_brief_example_catches_up_the_latest_slot_within_its_starting_deadline() {
    // A minutely job, catch_up: latest, starting_deadline: 10m; the cluster
    // is down for 15 minutes.
    let mut sim = Sim::new();
    let mut spec = hourly("brief");
    spec.schedule.trigger = Some(Trigger::Cron("* * * * *".to_owned()));
    spec.schedule.catch_up = CatchUp::Latest;
    spec.schedule.starting_deadline = Some(Duration::from_secs(600));
    let job = sim.job(spec);
    sim.advance(15 * 60 + 30);
    sim.tick();
    let runs = sim.runs(&job);
    let missed: Vec<_> = runs.iter().filter(|r| r.state == RunState::Missed).collect();
    let pending: Vec<_> = runs.iter().filter(|r| r.state == RunState::Pending).collect();
    // 15 slots: 5 older than the deadline, 9 late within it (superseded by
    // the latest), and the latest, 30 s old and so on time, runs.
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].nominal_time, Some(at(15 * 60)));
    let codes: Vec<_> = missed
        .iter()
        .map(|r| (r.reason.as_ref().map(|x| x.code), r.slot_count))
        .collect();
    assert_eq!(
        codes,
        [
            (Some(ReasonCode::StartingDeadline), 5),
            (Some(ReasonCode::Superseded), 9)
        ]
    );
    assert_each_slot_once(&sim, &job, at(0), at(15 * 60 + 30));
}

#[test]
fn on_time_slots_supersede_missed_ones_under_latest() {
    let mut sim = Sim::new();
    let job = sim.job(every("fast", 10)); // catch_up: latest
    sim.advance(600);
    sim.tick();
    let runs = sim.runs(&job);
    let missed: Vec<_> = runs.iter().filter(|r| r.state == RunState::Missed).collect();
    // Slots within 60 s of the tick are on time: 540..=600.
    assert_eq!(runs.iter().filter(|r| r.state == RunState::Pending).count(), 7);
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].slot_count, 53);
    assert_eq!(
        (missed[0].nominal_time, missed[0].last_nominal_time),
        (Some(at(10)), Some(at(530)))
    );
    assert_each_slot_once(&sim, &job, at(0), at(600));
}

#[test]
fn forbid_skips_while_a_run_is_active() {
    let mut sim = Sim::new();
    let mut spec = every("ci", 10);
    spec.concurrency = Concurrency::Forbid;
    let job = sim.job(spec);
    sim.worker("w1", 4);
    sim.advance(10);
    sim.tick();
    let first = scheduled_run_id(&job.uid, at(10));
    let epoch = sim.assign(&first, "w1");
    sim.advance(10);
    sim.tick();
    let second = sim.run(&scheduled_run_id(&job.uid, at(20)));
    assert_eq!(second.state, RunState::Skipped);
    assert_eq!(
        second.reason.as_ref().map(|r| r.code),
        Some(ReasonCode::ConcurrencyForbid)
    );
    sim.finish("w1", &first, epoch, 0).expect("finished");
    sim.advance(10);
    sim.tick();
    assert_eq!(sim.run(&scheduled_run_id(&job.uid, at(30))).state, RunState::Pending);
}

#[test]
fn replace_cancels_the_active_run_and_waits_for_its_attempt_to_stop() {
    let mut sim = Sim::new();
    let mut spec = every("deploy", 10);
    spec.concurrency = Concurrency::Replace;
    let job = sim.job(spec);
    sim.worker("w1", 4);
    sim.advance(10);
    sim.tick();
    let first = scheduled_run_id(&job.uid, at(10));
    let epoch = sim.assign(&first, "w1");
    sim.advance(10);
    sim.tick();
    let old = sim.run(&first);
    assert_eq!(old.state, RunState::Cancelled);
    assert_eq!(old.reason.as_ref().map(|r| r.code), Some(ReasonCode::Replaced));
    assert_eq!(old.attempts[0].stop, Some(StopReason::Cancel));
    let second = scheduled_run_id(&job.uid, at(20));
    let why = sim.refused(&second, "w1");
    assert!(why.contains("still running"), "{why}");
    sim.finish("w1", &first, epoch, 143).expect("stopped");
    assert_eq!(sim.run(&first).attempts[0].outcome, Some(AttemptOutcome::Cancelled));
    sim.assign(&second, "w1");
}

#[test]
fn queue_is_bounded_and_first_in_first_out() {
    let mut sim = Sim::new();
    let mut spec = every("q", 10);
    spec.concurrency = Concurrency::Queue;
    spec.max_queued = 1;
    let job = sim.job(spec);
    sim.worker("w1", 4);
    sim.advance(10);
    sim.tick();
    let first = scheduled_run_id(&job.uid, at(10));
    let epoch = sim.assign(&first, "w1");
    sim.advance(10);
    sim.tick(); // queued
    sim.advance(10);
    sim.tick(); // queue full
    let (second, third) = (scheduled_run_id(&job.uid, at(20)), scheduled_run_id(&job.uid, at(30)));
    assert_eq!(sim.run(&second).state, RunState::Pending);
    assert_eq!(sim.run(&third).state, RunState::Skipped);
    assert_eq!(
        sim.run(&third).reason.as_ref().map(|r| r.code),
        Some(ReasonCode::QueueFull)
    );
    assert!(sim.refused(&second, "w1").contains("still running"));
    sim.finish("w1", &first, epoch, 0).expect("finished");
    sim.assign(&second, "w1");
}

#[test]
fn a_triggered_run_keeps_the_callers_trace_and_a_retry_does_not_replace_it() {
    let mut sim = Sim::new();
    let mut spec = every("traced", 3600);
    spec.schedule.trigger = None;
    sim.job(spec);
    let traced = |trace: &str| Op::TriggerRun {
        job: "traced".to_owned(),
        request_id: "req".to_owned(),
        params: BTreeMap::new(),
        force: false,
        trace: Some(trace.to_owned()),
    };
    let first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let Ok(Response::Triggered { run, existing: false }) = sim.apply(traced(first)) else {
        panic!("trigger refused")
    };
    assert_eq!(run.trace.as_deref(), Some(first));
    assert_eq!(sim.run(&run.id).trace.as_deref(), Some(first), "stored with the run");
    let Ok(Response::Triggered {
        run: again,
        existing: true,
    }) = sim.apply(traced("00-11111111111111111111111111111111-2222222222222222-01"))
    else {
        panic!("retry not idempotent")
    };
    assert_eq!(again.trace.as_deref(), Some(first), "a retry keeps the first trace");
}

#[test]
fn manual_triggers_are_idempotent_and_obey_concurrency_unless_forced() {
    let mut sim = Sim::new();
    let mut spec = every("release", 3600);
    spec.schedule.trigger = None;
    spec.concurrency = Concurrency::Forbid;
    sim.job(spec);
    let Ok(Response::Triggered { run, existing: false }) = sim.trigger("release", "req-1", false) else {
        panic!("trigger refused")
    };
    assert_eq!(run.params.get("TARGET").map(String::as_str), Some("x"));
    let Ok(Response::Triggered {
        run: again,
        existing: true,
    }) = sim.trigger("release", "req-1", false)
    else {
        panic!("retry not idempotent")
    };
    assert_eq!(again.id, run.id, "a retried request gets the same run");
    let refused = sim.trigger("release", "req-2", false).expect_err("forbid");
    assert_eq!(refused.kind, RejectionKind::FailedPrecondition);
    assert!(refused.message.contains("force"), "{}", refused.message);
    let Ok(Response::Triggered { run: forced, .. }) = sim.trigger("release", "req-3", true) else {
        panic!("forced trigger refused")
    };
    assert_ne!(forced.id, run.id);
    assert_eq!(
        sim.trigger("nope", "r", false).expect_err("no job").kind,
        RejectionKind::NotFound
    );
}

#[test]
fn attempts_are_fenced_by_epoch_and_illegal_transitions_change_nothing() {
    let mut sim = Sim::new();
    let mut spec = every("build", 3600);
    spec.schedule.trigger = None;
    sim.job(spec);
    sim.worker("w1", 1);
    sim.worker("w2", 1);
    let Ok(Response::Triggered { run, .. }) = sim.trigger("build", "r1", false) else {
        panic!()
    };
    let epoch = sim.assign(&run.id, "w1");
    assert_eq!(sim.run(&run.id).state, RunState::Assigned);
    assert!(
        sim.refused(&run.id, "w2").contains("is assigned"),
        "a placed run is not placed again"
    );

    let before = sim.run(&run.id);
    for (worker, epoch, what) in [
        ("w1", epoch + 7, "stale epoch"),
        ("w2", epoch, "not assigned to worker w2"),
    ] {
        let err = sim
            .apply(Op::AttemptStarted {
                worker: worker.into(),
                run: run.id.clone(),
                epoch,
            })
            .expect_err("refused");
        assert!(err.message.contains(what), "{}", err.message);
        assert_eq!(err.kind, RejectionKind::FailedPrecondition);
    }
    let err = sim.finish("w1", "no-such-run", epoch, 0).expect_err("unknown run");
    assert_eq!(err.kind, RejectionKind::NotFound);
    assert_eq!(sim.run(&run.id), before, "refused reports change nothing");

    sim.ok(Op::AttemptStarted {
        worker: "w1".into(),
        run: run.id.clone(),
        epoch,
    });
    assert_eq!(sim.run(&run.id).state, RunState::Running);
    sim.finish("w1", &run.id, epoch, 0).expect("finished");
    let done = sim.run(&run.id);
    assert_eq!(
        (done.state, done.attempts[0].outcome),
        (RunState::Succeeded, Some(AttemptOutcome::Succeeded))
    );
    // A repeated finish report is accepted and changes nothing.
    sim.finish("w1", &run.id, epoch, 1).expect("repeat");
    assert_eq!(sim.run(&run.id).state, RunState::Succeeded);
    let err = sim
        .apply(Op::AttemptStarted {
            worker: "w1".into(),
            run: run.id.clone(),
            epoch,
        })
        .expect_err("start after finish");
    assert_eq!(err.kind, RejectionKind::FailedPrecondition);
    let err = sim
        .apply(Op::CancelRun { run: run.id.clone() })
        .expect_err("cancel finished");
    assert!(err.message.contains("already ended"), "{}", err.message);
}

#[test]
fn failed_attempts_retry_with_capped_exponential_backoff() {
    assert_eq!(
        retry_delay(Duration::from_secs(10), Duration::from_secs(15), 1),
        Duration::from_secs(10)
    );
    assert_eq!(
        retry_delay(Duration::from_secs(10), Duration::from_secs(15), 2),
        Duration::from_secs(15)
    );
    assert_eq!(
        retry_delay(Duration::from_secs(10), Duration::from_secs(600), 40),
        Duration::from_secs(600)
    );

    let mut sim = Sim::new();
    let mut spec = every("flaky", 3600);
    spec.schedule.trigger = None;
    spec.retry = RetryPolicy {
        max_attempts: 3,
        backoff: Duration::from_secs(10),
        max_backoff: Duration::from_secs(15),
        on: BTreeSet::from([RetryOn::Failed]),
    };
    sim.job(spec);
    sim.worker("w1", 1);
    let Ok(Response::Triggered { run, .. }) = sim.trigger("flaky", "r", false) else {
        panic!()
    };
    let epoch = sim.assign(&run.id, "w1");
    sim.finish("w1", &run.id, epoch, 2).expect("failed");
    let retrying = sim.run(&run.id);
    assert_eq!((retrying.state, retrying.not_before), (RunState::Pending, Some(at(10))));
    assert_eq!(retrying.reason.as_ref().map(|r| r.code), Some(ReasonCode::Retrying));
    assert!(sim.refused(&run.id, "w1").contains("waits to retry"));
    sim.advance(10);
    let epoch = sim.assign(&run.id, "w1");
    sim.finish("w1", &run.id, epoch, 2).expect("failed again");
    assert_eq!(sim.run(&run.id).not_before, Some(at(25)), "doubled, capped at 15 s");
    sim.advance(15);
    let epoch = sim.assign(&run.id, "w1");
    sim.finish("w1", &run.id, epoch, 2).expect("failed a third time");
    let failed = sim.run(&run.id);
    assert_eq!((failed.state, failed.attempts.len()), (RunState::Failed, 3));
    assert_eq!(failed.reason.as_ref().map(|r| r.code), Some(ReasonCode::AttemptFailed));
    assert!(
        failed
            .reason
            .as_ref()
            .is_some_and(|r| r.message.contains("exited with code 2"))
    );
}

#[test]
fn a_timed_out_attempt_is_stopped_and_retried_only_after_it_ended() {
    let mut sim = Sim::new();
    let mut spec = every("slow", 3600);
    spec.schedule.trigger = None;
    spec.timeout = Some(Duration::from_secs(30));
    spec.retry = RetryPolicy {
        max_attempts: 2,
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(1),
        on: BTreeSet::from([RetryOn::TimedOut]),
    };
    sim.job(spec);
    sim.worker("w1", 2);
    let Ok(Response::Triggered { run, .. }) = sim.trigger("slow", "r", false) else {
        panic!()
    };
    let epoch = sim.assign(&run.id, "w1");
    sim.advance(29);
    assert_eq!(sim.tick().timed_out, 0);
    sim.advance(1);
    assert_eq!(sim.tick().timed_out, 1);
    let run_now = sim.run(&run.id);
    assert_eq!(run_now.attempts[0].stop, Some(StopReason::Timeout));
    assert_eq!(run_now.state, RunState::Pending, "retry decided");
    sim.advance(5);
    assert!(sim.refused(&run.id, "w1").contains("still being stopped"));
    sim.finish("w1", &run.id, epoch, 137).expect("killed");
    assert_eq!(sim.run(&run.id).attempts[0].outcome, Some(AttemptOutcome::TimedOut));
    let epoch = sim.assign(&run.id, "w1");
    sim.advance(31);
    sim.tick();
    let timed_out = sim.run(&run.id);
    assert_eq!(timed_out.state, RunState::TimedOut, "no attempt left");
    assert_eq!(timed_out.reason.as_ref().map(|r| r.code), Some(ReasonCode::Timeout));
    sim.finish("w1", &run.id, epoch, 137).expect("killed");
    assert!(!sim.run(&run.id).is_active());
}

#[test]
fn a_lost_worker_loses_its_attempts_which_are_retried_elsewhere() {
    let mut sim = Sim::new();
    let mut spec = every("nightly", 3600);
    spec.schedule.trigger = None;
    spec.retry.max_attempts = 2;
    spec.retry.on = BTreeSet::from([RetryOn::Lost]);
    spec.retry.backoff = Duration::from_secs(1);
    sim.job(spec);
    sim.worker("w1", 1);
    sim.worker("w2", 1);
    let Ok(Response::Triggered { run, .. }) = sim.trigger("nightly", "r", false) else {
        panic!()
    };
    sim.assign(&run.id, "w1");
    let session = sim.state.worker("w1").map(|w| w.session).expect("registered");
    let err = sim
        .apply(Op::WorkerLost {
            worker: "w1".into(),
            session: session - 1,
        })
        .expect_err("an older session");
    assert!(err.message.contains("registered again"), "{}", err.message);
    sim.ok(Op::WorkerLost {
        worker: "w1".into(),
        session,
    });
    let lost = sim.run(&run.id);
    assert_eq!(lost.attempts[0].outcome, Some(AttemptOutcome::Lost));
    assert_eq!(lost.state, RunState::Pending);
    assert!(sim.refused(&run.id, "w1").contains("waits to retry") || sim.refused(&run.id, "w1").contains("lost"));
    sim.advance(1);
    assert!(sim.refused(&run.id, "w1").contains("lost"));
    let epoch = sim.assign(&run.id, "w2");
    // The old worker's late report is stale.
    let err = sim.finish("w1", &run.id, lost.attempts[0].epoch, 0).expect_err("stale");
    assert_eq!(err.kind, RejectionKind::FailedPrecondition);
    sim.finish("w2", &run.id, epoch, 0).expect("finished");
    assert_eq!(sim.run(&run.id).state, RunState::Succeeded);
    assert_eq!(
        sim.apply(Op::WorkerLost {
            worker: "ghost".into(),
            session: 1
        })
        .expect_err("unknown")
        .kind,
        RejectionKind::NotFound
    );
}

#[test]
fn registering_reconciles_what_the_worker_holds() {
    let mut sim = Sim::new();
    let mut spec = every("a", 3600);
    spec.schedule.trigger = None;
    spec.concurrency = Concurrency::Allow;
    sim.job(spec);
    sim.worker("w1", 4);
    let Ok(Response::Triggered { run: kept, .. }) = sim.trigger("a", "r1", false) else {
        panic!()
    };
    let Ok(Response::Triggered { run: dropped, .. }) = sim.trigger("a", "r2", false) else {
        panic!()
    };
    let Ok(Response::Triggered { run: unsent, .. }) = sim.trigger("a", "r3", false) else {
        panic!()
    };
    let kept_epoch = sim.assign(&kept.id, "w1");
    let dropped_epoch = sim.assign(&dropped.id, "w1");
    sim.ok(Op::AttemptStarted {
        worker: "w1".into(),
        run: dropped.id.clone(),
        epoch: dropped_epoch,
    });
    sim.assign(&unsent.id, "w1");
    let response = sim.ok(Op::RegisterWorker {
        worker: "w1".into(),
        info: WorkerInfo {
            labels: BTreeMap::from([("arch".into(), "amd64".into())]),
            capacity: Capacity {
                slots: 4,
                ..Capacity::default()
            },
            drivers: BTreeSet::from([Driver::Docker]),
        },
        held: vec![
            HeldAttempt {
                run: kept.id.clone(),
                epoch: kept_epoch,
            },
            HeldAttempt {
                run: "stale-run".into(),
                epoch: 3,
            },
        ],
    });
    let Response::Registered { stop, lost } = response else {
        panic!()
    };
    assert_eq!(
        stop,
        [HeldAttempt {
            run: "stale-run".into(),
            epoch: 3
        }]
    );
    assert_eq!(lost, std::slice::from_ref(&dropped.id));
    assert_eq!(sim.run(&kept.id).state, RunState::Assigned);
    assert_eq!(
        sim.run(&dropped.id).state,
        RunState::Lost,
        "started, then not held: lost"
    );
    assert_eq!(
        sim.run(&unsent.id).state,
        RunState::Assigned,
        "never started: kept, to be sent again"
    );
}

#[test]
fn a_draining_worker_gets_nothing_new_and_hands_back_what_it_runs_at_the_deadline() {
    let mut sim = Sim::new();
    let mut spec = every("nightly", 3600);
    spec.schedule.trigger = None;
    spec.concurrency = Concurrency::Allow;
    // One attempt allowed: a hand-back must not use it up.
    spec.retry.max_attempts = 1;
    sim.job(spec);
    sim.worker("w1", 2);
    sim.worker("w2", 2);
    let trigger = |sim: &mut Sim, r: &str| match sim.trigger("nightly", r, false) {
        Ok(Response::Triggered { run, .. }) => run.record.id,
        other => panic!("{other:?}"),
    };
    let (kept, handed) = (trigger(&mut sim, "a"), trigger(&mut sim, "b"));
    let kept_epoch = sim.assign(&kept, "w1");
    let handed_epoch = sim.assign(&handed, "w1");
    let third = trigger(&mut sim, "c");

    let drain = |within: Option<u64>| Op::DrainWorker {
        worker: "w1".into(),
        within: within.map(Duration::from_secs),
        by_operator: true,
    };
    let Response::Worker(worker) = sim.ok(drain(Some(60))) else {
        panic!("expected the worker")
    };
    assert!(worker.drain.is_some_and(|d| d.by_operator && d.deadline == at(60)));
    assert!(sim.refused(&third, "w1").contains("draining"));
    // Before the deadline, attempts finish normally.
    sim.finish("w1", &kept, kept_epoch, 0).expect("finished");
    assert_eq!(sim.run(&kept).state, RunState::Succeeded);
    sim.advance(30);
    assert_eq!(sim.tick().handed_back, 0);
    sim.advance(30);
    assert_eq!(sim.tick().handed_back, 1);
    assert_eq!(sim.run(&handed).attempts[0].stop, Some(StopReason::Drain));
    // Still running until the worker reports it stopped.
    assert_eq!(sim.run(&handed).state, RunState::Assigned);
    sim.finish("w1", &handed, handed_epoch, 143).expect("stopped");
    let run = sim.run(&handed);
    assert_eq!(run.attempts[0].outcome, Some(AttemptOutcome::HandedBack));
    assert_eq!(run.state, RunState::Pending, "{run:?}");
    assert_eq!(run.reason.as_ref().map(|r| r.code), Some(ReasonCode::HandedBack));
    // Placed again elsewhere, as attempt 2, though max_attempts is 1.
    let epoch = sim.assign(&handed, "w2");
    sim.finish("w2", &handed, epoch, 0).expect("finished");
    assert_eq!(sim.run(&handed).state, RunState::Succeeded);

    // The operator's drain survives a reconnection; ending it restores w1.
    sim.worker("w1", 2);
    assert!(sim.refused(&third, "w1").contains("draining"));
    sim.ok(drain(None));
    sim.assign(&third, "w1");
    let err = sim
        .apply(Op::DrainWorker {
            worker: "ghost".into(),
            within: None,
            by_operator: true,
        })
        .expect_err("unknown worker");
    assert_eq!(err.kind, RejectionKind::NotFound);

    // A worker's own drain (shutting down) ends when it registers again, and
    // one due at once is handled at once.
    sim.ok(Op::DrainWorker {
        worker: "w2".into(),
        within: Some(Duration::ZERO),
        by_operator: false,
    });
    assert!(
        sim.state
            .worker("w2")
            .is_some_and(|w| w.drain.is_some_and(|d| d.handled))
    );
    sim.worker("w2", 2);
    assert!(sim.state.worker("w2").is_some_and(|w| w.drain.is_none()));
}

#[test]
fn placement_respects_capacity_labels_and_drivers() {
    let mut sim = Sim::new();
    let mut spec = every("p", 3600);
    spec.schedule.trigger = None;
    sim.job(spec);
    sim.worker("w1", 1);
    sim.ok(Op::RegisterWorker {
        worker: "arm".into(),
        info: WorkerInfo {
            labels: BTreeMap::from([("arch".into(), "arm64".into())]),
            capacity: Capacity {
                slots: 4,
                ..Capacity::default()
            },
            drivers: BTreeSet::from([Driver::Docker]),
        },
        held: vec![],
    });
    let Ok(Response::Triggered { run: one, .. }) = sim.trigger("p", "1", false) else {
        panic!()
    };
    let Ok(Response::Triggered { run: two, .. }) = sim.trigger("p", "2", false) else {
        panic!()
    };
    assert!(sim.refused(&one.id, "arm").contains("lacks label arch=amd64"));
    assert!(sim.refused(&one.id, "nobody").contains("not registered"));
    sim.assign(&one.id, "w1");
    assert!(sim.refused(&two.id, "w1").contains("no free slot"));
}

#[test]
fn a_pending_run_says_why_no_worker_has_it() {
    let mut sim = Sim::new();
    let mut spec = every("why", 3600);
    spec.schedule.trigger = None;
    sim.job(spec);
    let Ok(Response::Triggered { run: first, .. }) = sim.trigger("why", "1", false) else {
        panic!()
    };
    let waiting = |sim: &Sim, id: &str| {
        let run = sim.state.run(id).expect("run exists");
        sim.state.waiting_reason(run, sim.now)
    };
    assert_eq!(waiting(&sim, &first.id).as_deref(), Some("no worker is connected"));
    let register = |sim: &mut Sim, id: &str, arch: &str, drivers: &[Driver]| {
        sim.ok(Op::RegisterWorker {
            worker: id.into(),
            info: WorkerInfo {
                labels: BTreeMap::from([("arch".into(), arch.into())]),
                capacity: Capacity {
                    slots: 1,
                    ..Capacity::default()
                },
                drivers: drivers.iter().copied().collect(),
            },
            held: vec![],
        });
    };
    register(&mut sim, "hosts", "amd64", &[Driver::Exec]);
    assert_eq!(
        waiting(&sim, &first.id).as_deref(),
        Some("no alive worker offers the docker driver (alive: hosts [exec])")
    );
    register(&mut sim, "arm", "arm64", &[Driver::Docker]);
    assert_eq!(
        waiting(&sim, &first.id).as_deref(),
        Some("no alive worker with the docker driver has the labels arch=amd64")
    );
    sim.worker("w1", 1);
    assert_eq!(waiting(&sim, &first.id), None, "it can be placed");
    let Ok(Response::Triggered { run: second, .. }) = sim.trigger("why", "2", false) else {
        panic!()
    };
    sim.assign(&first.id, "w1");
    assert_eq!(waiting(&sim, &first.id), None, "not pending");
    assert_eq!(
        waiting(&sim, &second.id).as_deref(),
        Some("every worker that fits is busy (no free slot)")
    );
}

#[test]
fn logs_are_deduplicated_by_offset_capped_at_the_tail_and_refused_when_huge() {
    let mut sim = Sim::new();
    let mut spec = every("logs", 3600);
    spec.schedule.trigger = None;
    sim.job(spec);
    sim.worker("w1", 1);
    let Ok(Response::Triggered { run, .. }) = sim.trigger("logs", "r", false) else {
        panic!()
    };
    let epoch = sim.assign(&run.id, "w1");
    let chunk = |offset: u64, data: &[u8]| LogAppend {
        offset,
        stream: LogStream::Stdout,
        data: data.to_vec(),
    };
    let append = |sim: &mut Sim, chunks: Vec<LogAppend>| {
        sim.apply(Op::AppendLogs {
            worker: "w1".into(),
            run: run.id.clone(),
            epoch,
            chunks,
        })
    };
    append(&mut sim, vec![chunk(0, b"hello "), chunk(6, b"world")]).expect("appended");
    append(&mut sim, vec![chunk(6, b"world"), chunk(11, b"!\n")]).expect("duplicate part skipped");
    assert_eq!(sim.run(&run.id).log.next_offset, 13);
    assert_eq!(sim.run(&run.id).log.kept_bytes, 13);
    let err = append(&mut sim, vec![chunk(20, b"x")]).expect_err("gap");
    assert!(err.message.contains("expected offset 13"), "{}", err.message);
    let err = append(&mut sim, vec![chunk(13, &vec![b'x'; MAX_CHUNK_BYTES + 1])]).expect_err("huge");
    assert_eq!(err.kind, RejectionKind::InvalidArgument);
    assert_eq!(sim.run(&run.id).log.kept_bytes, 13, "refused chunks change nothing");

    let big = vec![b'y'; 200 << 10];
    let mut offset = 13;
    for _ in 0..8 {
        append(&mut sim, vec![chunk(offset, &big)]).expect("appended");
        offset += big.len() as u64;
    }
    let log = sim.run(&run.id).record.log;
    assert!(log.kept_bytes <= LOG_CAP_BYTES, "{log:?}");
    assert_eq!(log.kept_bytes + log.dropped_bytes, offset);
    assert!(log.first_seq > 0);
    let changes = sim.state.take_changes().expect("encodes");
    let deleted = changes
        .iter()
        .filter(|(k, v)| k.starts_with("log/") && v.is_none())
        .count() as u64;
    assert_eq!(deleted, log.first_seq, "dropped chunks are deleted from storage");

    let err = sim
        .apply(Op::AppendLogs {
            worker: "w1".into(),
            run: run.id.clone(),
            epoch: epoch + 1,
            chunks: vec![chunk(offset, b"z")],
        })
        .expect_err("stale epoch");
    assert!(err.message.contains("stale epoch"), "{}", err.message);
}

#[test]
fn history_is_kept_by_count_and_by_age() {
    let mut sim = Sim::new();
    let mut spec = every("hist", 3600);
    spec.schedule.trigger = None;
    spec.history = HistoryPolicy {
        keep_succeeded: 2,
        keep_failed: 1,
        max_age: Duration::from_secs(3600),
    };
    let job = sim.job(spec);
    sim.worker("w1", 1);
    for (i, code) in [0, 0, 1, 0, 1].into_iter().enumerate() {
        let Ok(Response::Triggered { run, .. }) = sim.trigger("hist", &format!("r{i}"), false) else {
            panic!()
        };
        let epoch = sim.assign(&run.id, "w1");
        sim.finish("w1", &run.id, epoch, code).expect("finished");
        sim.advance(1);
    }
    let states: Vec<RunState> = sim.runs(&job).iter().map(|r| r.state).collect();
    assert_eq!(states, [RunState::Succeeded, RunState::Succeeded, RunState::Failed]);
    sim.advance(3600);
    assert_eq!(sim.tick().expired, 3);
    assert_eq!(sim.state.run_count(), 0);
}

#[test]
fn deleting_a_job_cancels_its_active_runs_and_removes_history_once_they_stop() {
    let mut sim = Sim::new();
    let mut spec = every("gone", 3600);
    spec.schedule.trigger = None;
    spec.concurrency = Concurrency::Allow;
    let job = sim.job(spec);
    sim.worker("w1", 2);
    let Ok(Response::Triggered { run: done, .. }) = sim.trigger("gone", "1", false) else {
        panic!()
    };
    let epoch = sim.assign(&done.id, "w1");
    sim.finish("w1", &done.id, epoch, 0).expect("finished");
    let Ok(Response::Triggered { run: running, .. }) = sim.trigger("gone", "2", false) else {
        panic!()
    };
    let epoch = sim.assign(&running.id, "w1");
    sim.ok(Op::DeleteJob {
        name: "gone".into(),
        expected_uid: None,
    });
    assert!(sim.state.run(&done.id).is_none(), "finished history goes with the job");
    let stopping = sim.run(&running.id);
    assert_eq!(stopping.state, RunState::Cancelled);
    assert_eq!(stopping.reason.as_ref().map(|r| r.code), Some(ReasonCode::JobDeleted));
    assert_eq!(stopping.attempts[0].stop, Some(StopReason::Cancel));
    sim.finish("w1", &running.id, epoch, 143).expect("stopped");
    assert!(sim.state.run(&running.id).is_none());
    assert_eq!(sim.runs(&job).len(), 0);
}

#[test]
fn starting_deadline_misses_runs_nobody_could_start() {
    let mut sim = Sim::new();
    let mut spec = every("deadline", 60);
    spec.schedule.starting_deadline = Some(Duration::from_secs(30));
    let job = sim.job(spec);
    sim.advance(60);
    sim.tick();
    let id = scheduled_run_id(&job.uid, at(60));
    assert_eq!(sim.run(&id).state, RunState::Pending);
    sim.advance(30);
    assert_eq!(sim.tick().deadline_missed, 1);
    let missed = sim.run(&id);
    assert_eq!(missed.state, RunState::Missed);
    assert_eq!(
        missed.reason.as_ref().map(|r| r.code),
        Some(ReasonCode::StartingDeadline)
    );
}

#[test]
fn suspended_jobs_do_not_fire_and_resume_from_now() {
    let mut sim = Sim::new();
    let job = sim.job(every("s", 10));
    sim.ok(Op::SetJobSuspended {
        name: "s".into(),
        suspended: true,
    });
    sim.advance(100);
    assert_eq!(sim.tick(), TickSummary::default());
    sim.ok(Op::SetJobSuspended {
        name: "s".into(),
        suspended: false,
    });
    sim.advance(10);
    assert_eq!(sim.tick().runs_created, 1);
    assert_eq!(sim.runs(&job)[0].nominal_time, Some(at(110)));
}

/// A step of a random command log.
#[derive(Debug, Clone)]
enum Step {
    Advance(i64),
    Tick,
    Trigger(usize, u8, bool),
    Cancel(usize),
    Register(u8),
    Lost(u8),
    Assign(usize, u8),
    Start(usize),
    Finish(usize, i32),
    Log(usize),
    Suspend(usize, bool),
    Drain(u8, Option<u64>, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..400).prop_map(Step::Advance),
        Just(Step::Tick),
        (0usize..3, 0u8..4, any::<bool>()).prop_map(|(j, r, f)| Step::Trigger(j, r, f)),
        (0usize..50).prop_map(Step::Cancel),
        (0u8..3).prop_map(Step::Register),
        (0u8..3).prop_map(Step::Lost),
        (0usize..50, 0u8..3).prop_map(|(r, w)| Step::Assign(r, w)),
        (0usize..50).prop_map(Step::Start),
        (0usize..50, 0i32..3).prop_map(|(r, c)| Step::Finish(r, c)),
        (0usize..50).prop_map(Step::Log),
        (0usize..3, any::<bool>()).prop_map(|(j, s)| Step::Suspend(j, s)),
        (0u8..3, proptest::option::of(0u64..200), any::<bool>()).prop_map(|(w, s, o)| Step::Drain(w, s, o)),
    ]
}

/// Turns steps into commands against the state as it evolves, so most of
/// them are plausible (runs and epochs that exist).
fn commands(steps: &[Step]) -> Vec<Command> {
    let mut sim = Sim::new();
    let specs = [
        {
            let mut s = every("a", 30);
            s.concurrency = Concurrency::Forbid;
            s.timeout = Some(Duration::from_secs(90));
            s.retry.max_attempts = 3;
            s.retry.on = BTreeSet::from([RetryOn::Failed, RetryOn::Lost, RetryOn::TimedOut]);
            s.history.keep_succeeded = 3;
            s.history.keep_failed = 3;
            s
        },
        {
            let mut s = hourly("b");
            s.concurrency = Concurrency::Queue;
            s.max_queued = 2;
            s.schedule.catch_up = CatchUp::All;
            s.schedule.max_catch_up = 2;
            s
        },
        {
            let mut s = every("c", 45);
            s.concurrency = Concurrency::Replace;
            s.schedule.starting_deadline = Some(Duration::from_secs(60));
            s
        },
    ];
    let mut out = Vec::new();
    let push = |sim: &mut Sim, op: Op, out: &mut Vec<Command>| {
        out.push(Command {
            now: sim.now,
            op: op.clone(),
        });
        let _ = sim.apply(op);
        assert_forbid_holds(&sim.state);
    };
    for spec in specs {
        push(
            &mut sim,
            Op::CreateJob {
                uid: format!("u-{}", spec.name),
                spec,
            },
            &mut out,
        );
    }
    for step in steps {
        let runs: Vec<Run> = sim.state.runs_after(None).cloned().collect();
        let pick = |i: &usize| runs.get(i % runs.len().max(1)).cloned();
        let op = match step {
            Step::Advance(s) => {
                sim.advance(*s);
                continue;
            }
            Step::Tick => Op::Tick,
            Step::Trigger(j, r, f) => Op::TriggerRun {
                job: ["a", "b", "c"][*j].into(),
                request_id: format!("req-{r}"),
                params: BTreeMap::new(),
                force: *f,
                trace: None,
            },
            Step::Cancel(i) => match pick(i) {
                Some(run) => Op::CancelRun { run: run.record.id },
                None => continue,
            },
            Step::Register(w) => Op::RegisterWorker {
                worker: format!("w{w}"),
                info: WorkerInfo {
                    labels: BTreeMap::from([("arch".into(), "amd64".into())]),
                    capacity: Capacity {
                        slots: 2,
                        ..Capacity::default()
                    },
                    drivers: BTreeSet::from([Driver::Docker]),
                },
                held: runs
                    .iter()
                    .filter_map(|r| r.live_attempt().filter(|a| a.worker == format!("w{w}")).map(|a| (r, a)))
                    .take(1)
                    .map(|(r, a)| HeldAttempt {
                        run: r.id.clone(),
                        epoch: a.epoch,
                    })
                    .collect(),
            },
            Step::Lost(w) => Op::WorkerLost {
                worker: format!("w{w}"),
                session: sim.state.worker(&format!("w{w}")).map_or(0, |x| x.session),
            },
            Step::Assign(i, w) => match pick(i) {
                Some(run) => Op::Assign {
                    placements: vec![Placement {
                        run: run.record.id,
                        worker: format!("w{w}"),
                    }],
                },
                None => continue,
            },
            Step::Start(i) | Step::Finish(i, _) | Step::Log(i) => {
                let Some(run) = pick(i) else { continue };
                let Some(attempt) = run.current_attempt() else { continue };
                let (worker, epoch) = (attempt.worker.clone(), attempt.epoch);
                match step {
                    Step::Start(_) => Op::AttemptStarted {
                        worker,
                        run: run.record.id,
                        epoch,
                    },
                    Step::Finish(_, code) => Op::AttemptFinished {
                        worker,
                        run: run.record.id,
                        epoch,
                        report: AttemptReport {
                            exit_code: Some(*code),
                            oom_killed: false,
                            resources: None,
                            error: None,
                        },
                    },
                    _ => Op::AppendLogs {
                        worker,
                        run: run.id.clone(),
                        epoch,
                        chunks: vec![LogAppend {
                            offset: if run.log.epoch == epoch { run.log.next_offset } else { 0 },
                            stream: LogStream::Stdout,
                            data: vec![b'l'; 100],
                        }],
                    },
                }
            }
            Step::Suspend(j, s) => Op::SetJobSuspended {
                name: ["a", "b", "c"][*j].into(),
                suspended: *s,
            },
            Step::Drain(w, secs, by_operator) => Op::DrainWorker {
                worker: format!("w{w}"),
                within: secs.map(Duration::from_secs),
                by_operator: *by_operator,
            },
        };
        push(&mut sim, op, &mut out);
    }
    out
}

/// G3 in the state: a `forbid` job never has two live attempts, forced
/// manual runs aside (forcing is asking for overlap).
fn assert_forbid_holds(state: &State) {
    for (uid, active) in &state.index.active_of_job {
        let live: Vec<&Run> = active
            .iter()
            .filter_map(|(_, id)| state.run(id))
            .filter(|r| r.spec.concurrency == Concurrency::Forbid)
            .filter(|r| !matches!(r.cause, Cause::Manual { forced: true, .. }))
            .filter(|r| r.live_attempt().is_some())
            .collect();
        assert!(
            live.len() <= 1,
            "job {uid} has {} live attempts: {:?}",
            live.len(),
            live.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
    }
}

/// Applies a command log to a state, from log index `first`.
fn replay(mut state: State, first: LogIndex, log: &[Command]) -> (State, Vec<ApplyResult>) {
    let answers = log
        .iter()
        .enumerate()
        .map(|(i, c)| state.apply(first + i as u64, c))
        .collect();
    (state, answers)
}

fn rows(state: &State) -> Vec<(String, Vec<u8>)> {
    state.rows().collect::<Result<_, _>>().expect("encodes")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_same_log_from_the_same_snapshot_gives_the_same_state(steps in prop::collection::vec(step(), 1..120), cut in 0usize..1000) {
        let log = commands(&steps);
        let cut = cut % (log.len() + 1);
        // A "snapshot" after the first `cut` commands, restored from its rows.
        let (prefix, _) = replay(State::default(), 1, &log[..cut]);
        let restored = State::from_rows(rows(&prefix)).expect("decodes");
        prop_assert_eq!(&restored.index, &prefix.index, "a restored state indexes the same");
        prop_assert_eq!(restored.specs.counts(), prefix.specs.counts(), "and counts the same spec users");

        let (first, first_answers) = replay(restored.clone(), cut as u64 + 1, &log[cut..]);
        let (second, second_answers) = replay(restored, cut as u64 + 1, &log[cut..]);
        prop_assert_eq!(rows(&first), rows(&second));
        prop_assert_eq!(first_answers, second_answers);

        // And equal to never having snapshotted at all.
        let (straight, _) = replay(State::default(), 1, &log);
        prop_assert_eq!(rows(&straight), rows(&first));

    }
}
