//! Prometheus metrics and health of a server, served over HTTP (`/metrics`,
//! `/healthz`, `/readyz`) when `http_listen` is set.
//!
//! Gauges that describe the node's state (Raft indexes, jobs and runs by
//! state) are read when scraped, so they are never stale; counters (leader
//! changes) are kept by a task that follows openraft's metrics. Names follow
//! Prometheus conventions: the `rota_` prefix, `_total` on counters, no run
//! or job ids in labels (the `state` label has ten values).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rota_proto::telemetry::register;
use tokio_util::sync::CancellationToken;

use crate::node::NodeHandle;
use crate::raft::{Node, NodeId, Raft};
use crate::state::RunId;

/// openraft's metrics of this node.
type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

/// Every run state, for the `state` label (all are always exported, zero
/// or not, so that a query never finds a series missing).
const RUN_STATES: [crate::state::RunState; 10] = {
    use crate::state::RunState as S;
    [
        S::Pending,
        S::Assigned,
        S::Running,
        S::Succeeded,
        S::Failed,
        S::TimedOut,
        S::Cancelled,
        S::Lost,
        S::Skipped,
        S::Missed,
    ]
};

/// The metric families of one server.
pub struct Metrics {
    registry: Registry,
    term: IntGauge,
    is_leader: IntGauge,
    leader_changes: IntCounter,
    last_log_index: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    apply_lag: IntGauge,
    snapshot_index: IntGauge,
    purged_index: IntGauge,
    jobs: IntGauge,
    runs: IntGaugeVec,
    workers: IntGaugeVec,
    slots: IntGaugeVec,
    events: Events,
    api: ApiMetrics,
    snapshots_built: IntCounter,
    snapshot_build_seconds: prometheus::Counter,
    snapshots_installed: IntCounter,
    snapshot_install_seconds: prometheus::Counter,
    ready: IntGauge,
    /// How recently a leader must have heard from a quorum to count as one.
    quorum_timeout: Duration,
    /// One scrape at a time (counters caught up from totals; bounded work).
    render_lock: tokio::sync::Mutex<()>,
    /// The commit index known when a leader was first known; readiness
    /// waits until it is applied, once.
    start_commit: std::sync::OnceLock<u64>,
    caught_up: std::sync::atomic::AtomicBool,
}

/// How long a scrape or readiness check waits for the Raft core.
const RAFT_STATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Brings `counter` up to `total` (counters only go up; the totals are kept
/// by the storage layer).
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// Brings `counter` up to `total` seconds.
fn catch_up_seconds(counter: &prometheus::Counter, total: f64) {
    let delta = total - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}

fn int_counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    register(registry, IntCounter::new(name, help))
}

fn seconds_counter(registry: &Registry, name: &str, help: &str) -> Result<prometheus::Counter, prometheus::Error> {
    register(registry, prometheus::Counter::new(name, help))
}

/// Counters and histograms of what happened to runs, derived from the run
/// records when scraped: each run is counted once when first seen (created)
/// and once when first seen terminal (finished). Every server derives the
/// same numbers from the same replicated records; after a restart the
/// counters start over from the records still kept (Prometheus' `rate`
/// handles the reset).
struct Events {
    created: IntCounterVec,
    not_run: IntCounterVec,
    finished: IntCounterVec,
    attempts_lost: IntCounter,
    retries: IntCounter,
    lateness: Histogram,
    dispatch: Histogram,
    duration: Histogram,
    /// What was counted of the runs that may still change.
    counted: Mutex<Counted>,
}

/// What the event metrics counted: the changes up to a Raft index, and of
/// each run that may still change (an active run), what was counted of it.
/// A run not listed is settled: all it shows was counted. A scrape looks
/// only at the runs changed since, so its cost follows the changes and the
/// active runs, not the history kept (it used to walk, and copy the id of,
/// every run: 9% of a restart with 1M runs, and as much at every scrape).
#[derive(Default)]
struct Counted {
    through: crate::state::LogIndex,
    runs: HashMap<RunId, Seen>,
}

/// What the event metrics already counted of one run.
#[derive(Default)]
struct Seen {
    created: bool,
    not_run: bool,
    finished: bool,
    attempts: usize,
    lost: usize,
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, prometheus::Error> {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

/// Seconds from `from` to `to` (negative clamped to zero).
fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().map_or(0.0, |d| d.as_secs_f64())
}

impl Events {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        const LATENCY: [f64; 14] = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        const DURATION: [f64; 12] = [
            0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
        ];
        let attempts_lost = IntCounter::new("rota_attempts_lost_total", "Attempts whose worker was lost.")?;
        registry.register(Box::new(attempts_lost.clone()))?;
        let retries = IntCounter::new(
            "rota_run_retries_total",
            "Attempts after the first (hand-backs of drained workers not counted).",
        )?;
        registry.register(Box::new(retries.clone()))?;
        Ok(Self {
            created: counter_vec(
                registry,
                "rota_runs_created_total",
                "Runs created, by cause (scheduled or manual).",
                &["cause"],
            )?,
            not_run: counter_vec(
                registry,
                "rota_slots_not_run_total",
                "Slots recorded without a run, by state (missed, skipped) and reason.",
                &["state", "reason"],
            )?,
            finished: counter_vec(
                registry,
                "rota_runs_finished_total",
                "Runs that reached a terminal state, by outcome.",
                &["outcome"],
            )?,
            attempts_lost,
            retries,
            lateness: histogram(
                registry,
                "rota_trigger_lateness_seconds",
                "Scheduled runs: from the nominal slot to the run's creation (committed by the leader).",
                &LATENCY,
            )?,
            dispatch: histogram(
                registry,
                "rota_dispatch_latency_seconds",
                "Runs: from creation to the first assignment to a worker.",
                &LATENCY,
            )?,
            duration: histogram(
                registry,
                "rota_run_duration_seconds",
                "Finished runs: from the first attempt's start to the end.",
                &DURATION,
            )?,
            counted: Mutex::default(),
        })
        .inspect(Events::zeroes)
    }

    /// Every bounded label value at zero, so that the first event is an
    /// increase (`increase()` cannot see the start of a new series).
    fn zeroes(&self) {
        use crate::state::RunState;
        use crate::state::run::ReasonCode;
        for cause in ["scheduled", "manual"] {
            self.created.with_label_values(&[cause]);
        }
        for state in [
            RunState::Succeeded,
            RunState::Failed,
            RunState::TimedOut,
            RunState::Cancelled,
            RunState::Lost,
        ] {
            self.finished.with_label_values(&[state.as_str()]);
        }
        let word = |code: ReasonCode| crate::api::convert::word(&code);
        for (state, reason) in [
            (RunState::Missed, ReasonCode::CatchUpNone),
            (RunState::Missed, ReasonCode::Superseded),
            (RunState::Missed, ReasonCode::BeyondMaxCatchUp),
            (RunState::Missed, ReasonCode::StartingDeadline),
            (RunState::Skipped, ReasonCode::ConcurrencyForbid),
            (RunState::Skipped, ReasonCode::QueueFull),
        ] {
            self.not_run.with_label_values(&[state.as_str(), &word(reason)]);
        }
    }

    /// Notes the runs the state holds at start without counting them (the
    /// counters count what happens while this process runs): only the
    /// active ones are remembered.
    fn baseline(&self, state: &crate::state::State) {
        let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        let index = state.index();
        counted.through = index.updated.last().map_or(0, |(at, _)| *at);
        counted.runs.clear();
        for runs in index.active_of_job.values() {
            for (_, id) in runs {
                if let Some(run) = state.run(id) {
                    let mut seen = Seen::default();
                    self.note(run, &mut seen, false);
                    counted.runs.insert(id.clone(), seen);
                }
            }
        }
    }

    /// Counts what the runs changed since the last call show that was not
    /// counted before.
    fn observe(&self, state: &crate::state::State) {
        let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        let index = state.index();
        let through = counted.through;
        for (_, id) in index.updated.range((through + 1, RunId::from(""))..) {
            let Some(run) = state.run(id) else { continue };
            let (mut seen, count) = match counted.runs.remove(&**id) {
                Some(seen) => (seen, true),
                // Settled before, and changed since: what it shows was counted.
                None if run.created_index <= through => (Seen::default(), false),
                None => (Seen::default(), true),
            };
            self.note(run, &mut seen, count);
            if run.is_active() {
                counted.runs.insert(id.clone(), seen);
            }
        }
        counted.through = index.updated.last().map_or(through, |(at, _)| (*at).max(through));
        // Runs removed while active (their job deleted, say).
        counted.runs.retain(|id, _| state.run(id).is_some());
    }

    /// Counts what `run` shows that `seen` does not (with `count` false,
    /// only notes it), and notes it in `seen`.
    fn note(&self, run: &crate::state::Run, seen: &mut Seen, count: bool) {
        use crate::state::RunState;
        use crate::state::run::{AttemptOutcome, Cause};
        let slot_record = matches!(run.state, RunState::Missed | RunState::Skipped);
        if !seen.created {
            seen.created = true;
            // A slot recorded as missed or skipped from the start is no run.
            if count && !slot_record {
                let cause = match run.cause {
                    Cause::Scheduled => "scheduled",
                    Cause::Manual { .. } => "manual",
                };
                self.created.with_label_values(&[cause]).inc();
                if let (Cause::Scheduled, Some(slot)) = (&run.cause, run.nominal_time) {
                    self.lateness.observe(seconds(slot, run.created_at));
                }
            }
        }
        if slot_record && !seen.not_run {
            // Also a pending run missed later (its starting deadline).
            seen.not_run = true;
            if count {
                let reason = run
                    .reason
                    .as_ref()
                    .map(|r| crate::api::convert::word(&r.code))
                    .unwrap_or_default();
                self.not_run
                    .with_label_values(&[run.state.as_str(), reason.as_str()])
                    .inc_by(run.slot_count.max(1));
            }
        }
        if count {
            for (i, attempt) in run.attempts.iter().enumerate().skip(seen.attempts) {
                if i == 0 {
                    self.dispatch.observe(seconds(run.created_at, attempt.assigned_at));
                } else if run.attempts[i - 1].outcome != Some(AttemptOutcome::HandedBack) {
                    self.retries.inc();
                }
            }
        }
        seen.attempts = run.attempts.len();
        let lost = run
            .attempts
            .iter()
            .filter(|a| a.outcome == Some(AttemptOutcome::Lost))
            .count();
        if count && lost > seen.lost {
            self.attempts_lost.inc_by((lost - seen.lost) as u64);
        }
        seen.lost = seen.lost.max(lost);
        if slot_record || !run.state.is_terminal() || seen.finished {
            return;
        }
        seen.finished = true;
        if count {
            self.finished.with_label_values(&[run.state.as_str()]).inc();
            let started = run.attempts.iter().find_map(|a| a.started_at);
            if let (Some(started), Some(end)) = (started, run.finished_at) {
                self.duration.observe(seconds(started, end));
            }
        }
    }
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    register(registry, IntGauge::new(name, help))
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Registers every family. A leader counts as one (`rota_raft_is_leader`,
    /// readiness) only while a quorum acknowledged it within
    /// `quorum_timeout`.
    pub fn new(quorum_timeout: Duration) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        for latency in [
            &crate::store::stats::LOG_APPEND_SECONDS,
            &crate::store::stats::LOG_SYNC_SECONDS,
            &crate::store::stats::LOG_APPEND_ENTRIES,
            &crate::store::stats::PROPOSALS_PER_ENTRY,
            &crate::store::stats::APPLY_ENTRIES,
            &crate::store::stats::APPLY_SECONDS,
        ] {
            register(&registry, Ok(Histogram::clone(latency)))?;
        }
        let leader_changes = IntCounter::new(
            "rota_raft_leader_changes_total",
            "Times this server saw the cluster's leader change (including to no leader).",
        )?;
        registry.register(Box::new(leader_changes.clone()))?;
        let runs = IntGaugeVec::new(
            Opts::new("rota_runs", "Run records held, by state (slot records included)."),
            &["state"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        Ok(Self {
            term: gauge(&registry, "rota_raft_term", "This server's current Raft term.")?,
            is_leader: gauge(
                &registry,
                "rota_raft_is_leader",
                "1 if this server leads with a quorum that acknowledged it within the election timeout, else 0.",
            )?,
            leader_changes,
            last_log_index: gauge(
                &registry,
                "rota_raft_last_log_index",
                "Index of the last entry in this server's Raft log.",
            )?,
            commit_index: gauge(
                &registry,
                "rota_raft_commit_index",
                "Highest log index this server knows to be committed.",
            )?,
            applied_index: gauge(
                &registry,
                "rota_raft_applied_index",
                "Highest log index applied to this server's state machine.",
            )?,
            apply_lag: gauge(
                &registry,
                "rota_raft_apply_lag",
                "Committed entries not yet applied on this server (commit index - applied index).",
            )?,
            snapshot_index: gauge(
                &registry,
                "rota_raft_snapshot_index",
                "Last log index covered by this server's latest snapshot (0: none).",
            )?,
            purged_index: gauge(
                &registry,
                "rota_raft_purged_index",
                "Log entries up to this index were compacted away (0: none).",
            )?,
            jobs: gauge(&registry, "rota_jobs", "Jobs defined.")?,
            runs,
            workers: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "rota_workers",
                        "Workers the cluster knows, by state: alive (renewing its lease) or lost.",
                    ),
                    &["state"],
                ),
            )?,
            slots: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "rota_cluster_slots",
                        "Slots of alive workers: used (attempts held) and free (a draining worker has none free).",
                    ),
                    &["state"],
                ),
            )?,
            events: Events::new(&registry)?,
            api: ApiMetrics::new(&registry)?,
            snapshots_built: int_counter(
                &registry,
                "rota_raft_snapshots_built_total",
                "Snapshots this server built.",
            )?,
            snapshot_build_seconds: seconds_counter(
                &registry,
                "rota_raft_snapshot_build_seconds_total",
                "Time spent building snapshots.",
            )?,
            snapshots_installed: int_counter(
                &registry,
                "rota_raft_snapshots_installed_total",
                "Snapshots this server received from a leader and installed.",
            )?,
            snapshot_install_seconds: seconds_counter(
                &registry,
                "rota_raft_snapshot_install_seconds_total",
                "Time spent installing received snapshots.",
            )?,
            ready: gauge(
                &registry,
                "rota_ready",
                "1 if this server is ready (as /readyz answers), else 0.",
            )?,
            quorum_timeout,
            render_lock: tokio::sync::Mutex::new(()),
            start_commit: std::sync::OnceLock::new(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
            registry,
        })
    }

    /// Notes the runs `node` holds at start without counting them: the
    /// event counters count what happens while this process runs.
    pub fn baseline(&self, node: &NodeHandle) {
        let applied = node.state.read();
        self.events.baseline(&applied.state);
    }

    /// Whether this server leads with a recent quorum acknowledgement.
    fn leads(&self, node: &NodeHandle, metrics: &RaftMetrics) -> Result<bool, String> {
        if metrics.current_leader != Some(node.id) {
            return Ok(false);
        }
        let limit = u64::try_from(self.quorum_timeout.as_millis()).unwrap_or(u64::MAX);
        match metrics.millis_since_quorum_ack {
            Some(ms) if ms <= limit => Ok(true),
            Some(ms) => Err(format!("leader without a quorum for {ms} ms")),
            None => Err("leader not yet acknowledged by a quorum".to_owned()),
        }
    }

    /// Whether `node` should receive traffic: its Raft core runs, it is a
    /// member, it knows a leader, it has applied the commit index it knew
    /// when it first knew a leader, and — if it leads — a quorum
    /// acknowledged it recently. The error says why not.
    pub async fn readiness(&self, node: &NodeHandle) -> Result<(), String> {
        let committed = tokio::time::timeout(RAFT_STATE_TIMEOUT, node.committed())
            .await
            .map_err(|_| "the raft core does not answer".to_owned())?
            .map_or(0, |id| id.index);
        {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            if let Err(fatal) = &metrics.running_state {
                return Err(format!("raft stopped: {fatal}"));
            }
            if metrics.membership_config.membership().get_node(&node.id).is_none() {
                return Err("not a member of the cluster".to_owned());
            }
            if metrics.current_leader.is_none() {
                return Err("no known leader".to_owned());
            }
            self.leads(node, &metrics)?;
        }
        if self.caught_up.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let target = *self.start_commit.get_or_init(|| committed);
        let applied = node.state.read().last_applied.map_or(0, |id| id.index);
        if applied < target {
            return Err(format!("catching up: applied {applied} of {target} committed"));
        }
        self.caught_up.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The tower layer that counts API calls into these metrics.
    pub fn api_layer(&self) -> ApiMetrics {
        self.api.clone()
    }

    /// Reads the scrape-time gauges from `node`, then renders every family
    /// in the Prometheus text format.
    pub async fn render(&self, node: &NodeHandle) -> String {
        let _one_at_a_time = self.render_lock.lock().await;
        let ready = self.readiness(node).await.is_ok();
        self.ready.set(i64::from(ready));
        let committed = tokio::time::timeout(RAFT_STATE_TIMEOUT, node.committed())
            .await
            .ok()
            .flatten()
            .map_or(0, |id| id.index);
        {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            let applied = metrics.last_applied.map_or(0, |id| id.index);
            self.term.set(as_i64(metrics.current_term));
            self.is_leader
                .set(i64::from(self.leads(node, &metrics).unwrap_or(false)));
            self.last_log_index.set(as_i64(metrics.last_log_index.unwrap_or(0)));
            self.commit_index.set(as_i64(committed));
            self.applied_index.set(as_i64(applied));
            self.apply_lag.set(as_i64(committed.saturating_sub(applied)));
            self.snapshot_index
                .set(as_i64(metrics.snapshot.map_or(0, |id| id.index)));
            self.purged_index.set(as_i64(metrics.purged.map_or(0, |id| id.index)));
        }
        {
            use crate::store::stats::{SNAPSHOTS_BUILT, SNAPSHOTS_INSTALLED};
            catch_up(&self.snapshots_built, SNAPSHOTS_BUILT.count());
            catch_up_seconds(&self.snapshot_build_seconds, SNAPSHOTS_BUILT.seconds());
            catch_up(&self.snapshots_installed, SNAPSHOTS_INSTALLED.count());
            catch_up_seconds(&self.snapshot_install_seconds, SNAPSHOTS_INSTALLED.seconds());
        }
        {
            let applied = node.state.read();
            let state = &applied.state;
            self.jobs.set(as_i64(state.job_count() as u64));
            let (mut alive, mut lost, mut used, mut free) = (0u64, 0u64, 0u64, 0u64);
            for worker in state.workers() {
                if worker.state == crate::state::run::WorkerState::Lost {
                    lost += 1;
                    continue;
                }
                alive += 1;
                let slots = u64::from(worker.capacity.slots);
                let held = state
                    .index()
                    .on_worker
                    .get(&worker.id)
                    .map_or(0, |runs| runs.len() as u64);
                used += held.min(slots);
                if worker.drain.is_none() {
                    free += slots.saturating_sub(held);
                }
            }
            for (label, count) in [("alive", alive), ("lost", lost)] {
                self.workers.with_label_values(&[label]).set(as_i64(count));
            }
            for (label, count) in [("used", used), ("free", free)] {
                self.slots.with_label_values(&[label]).set(as_i64(count));
            }
            let counts = &state.index().runs_in_state;
            for run_state in RUN_STATES {
                let count = counts.get(&run_state).copied().unwrap_or(0);
                self.runs.with_label_values(&[run_state.as_str()]).set(as_i64(count));
            }
            self.events.observe(state);
        }
        rota_proto::telemetry::encode(&self.registry)
    }

    /// Counts leader changes as this server sees them, until `stop`.
    pub async fn follow_leadership(self: Arc<Self>, raft: Raft, stop: CancellationToken) {
        let mut metrics = raft.metrics();
        let mut known = {
            let now = metrics.borrow_and_update();
            now.current_leader.map(|leader| (leader, now.current_term))
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let now = {
                let now = metrics.borrow_and_update();
                now.current_leader.map(|leader| (leader, now.current_term))
            };
            // A new leader (or the same one re-elected in a new term); an
            // interregnum without a leader is not a change by itself.
            if now.is_some() && now != known {
                if known.is_some() {
                    self.leader_changes.inc();
                }
                known = now;
            }
        }
    }
}

/// What the HTTP endpoint of a server reads.
pub struct Http {
    /// The server's metric families.
    pub metrics: Arc<Metrics>,
    /// The node they describe.
    pub node: NodeHandle,
}

impl rota_proto::telemetry::Endpoint for Http {
    async fn metrics(&self) -> String {
        self.metrics.render(&self.node).await
    }

    async fn readiness(&self) -> Result<(), String> {
        self.metrics.readiness(&self.node).await
    }
}

/// Counts and times every gRPC call the server answers, as a tower layer
/// on the tonic server: `rota_api_requests_total{method, code}` and
/// `rota_api_request_duration_seconds{method}`. `method` is the full gRPC
/// method (`/rota.v1.JobService/CreateJob`) when it is one of rota's, else
/// `other` (a path is chosen by the caller; labels stay bounded). `code` is
/// the gRPC status of the answer's headers (`OK` when it comes in the
/// trailers, as for every successful call); for streams, the duration is the
/// time to the response headers.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    duration: prometheus::HistogramVec,
    methods: Arc<HashSet<String>>,
}

impl ApiMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "rota_api_request_duration_seconds",
                "gRPC calls answered: time to the response headers, by method.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            requests: counter_vec(
                registry,
                "rota_api_requests_total",
                "gRPC calls answered, by method and status code.",
                &["method", "code"],
            )?,
            duration,
            methods: Arc::new(rota_methods()),
        })
    }

    fn observe(&self, path: &str, code: &str, elapsed: Duration) {
        // Server-to-server Raft traffic is not API traffic.
        if path.starts_with("/rota.v1.RaftService/") {
            return;
        }
        let method = if self.methods.contains(path) { path } else { "other" };
        self.requests.with_label_values(&[method, code]).inc();
        self.duration
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }
}

/// Every gRPC method of rota's services, `/package.Service/Method`.
fn rota_methods() -> HashSet<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(rota_proto::FILE_DESCRIPTOR_SET) else {
        return HashSet::new();
    };
    let mut methods = HashSet::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                methods.insert(format!("/{package}.{service_name}/{}", method.name.unwrap_or_default()));
            }
        }
    }
    methods
}

impl<S> tower::Layer<S> for ApiMetrics {
    type Service = ApiMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            metrics: self.clone(),
        }
    }
}

/// The service [`ApiMetrics`] wraps around the API.
#[derive(Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
    metrics: ApiMetrics,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for ApiMetricsService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or_else(
                        || "OK".to_owned(),
                        |n| match tonic::Code::from(n) {
                            tonic::Code::Ok => "OK".to_owned(),
                            code => format!("{code:?}"),
                        },
                    ),
                Err(_) => "transport_error".to_owned(),
            };
            metrics.observe(&path, &code, started.elapsed());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::job::Concurrency;
    use crate::state::{Command, Op, Response, State};

    /// Applies `op` as the next command, answering the run it names.
    fn apply(state: &mut State, index: &mut u64, op: Op) -> Option<String> {
        *index += 1;
        let command = Command {
            now: chrono::Utc::now(),
            op,
        };
        match state.apply(*index, &command).expect("applies") {
            Response::Triggered { run, .. } | Response::Run(run) => Some(run.record.id.to_string()),
            _ => None,
        }
    }

    fn trigger(request_id: &str) -> Op {
        Op::TriggerRun {
            job: "build".to_owned(),
            request_id: request_id.to_owned(),
            params: Default::default(),
            force: false,
            trace: None,
        }
    }

    #[test]
    fn run_events_count_what_happens_after_the_baseline_once() {
        let events = Events::new(&Registry::new()).expect("registers");
        let created = || events.created.with_label_values(&["manual"]).get();
        let cancelled = || events.finished.with_label_values(&["cancelled"]).get();
        let mut state = State::default();
        let mut index = 0;
        let mut spec = crate::state::tests::sample_spec("build");
        spec.concurrency = Concurrency::Allow;
        let uid = "u1".to_owned();
        apply(&mut state, &mut index, Op::CreateJob { uid, spec });
        let settled = apply(&mut state, &mut index, trigger("a")).expect("a run");
        apply(&mut state, &mut index, Op::CancelRun { run: settled.into() });
        let active = apply(&mut state, &mut index, trigger("b")).expect("a run");

        events.baseline(&state);
        events.observe(&state);
        assert_eq!(
            (created(), cancelled()),
            (0, 0),
            "what was there at start is not counted"
        );
        assert_eq!(
            events.counted.lock().expect("lock").runs.len(),
            1,
            "only the active run is kept"
        );

        apply(&mut state, &mut index, Op::CancelRun { run: active.into() });
        events.observe(&state);
        assert_eq!(
            (created(), cancelled()),
            (0, 1),
            "a run active at start finishing is counted"
        );

        let new = apply(&mut state, &mut index, trigger("c")).expect("a run");
        events.observe(&state);
        events.observe(&state);
        assert_eq!(created(), 1, "a new run, once");
        apply(&mut state, &mut index, Op::CancelRun { run: new.into() });
        events.observe(&state);
        events.observe(&state);
        assert_eq!((created(), cancelled()), (1, 2));
        assert!(
            events.counted.lock().expect("lock").runs.is_empty(),
            "settled runs are not kept"
        );

        // Created and finished between two scrapes: counted both ways.
        let quick = apply(&mut state, &mut index, trigger("d")).expect("a run");
        apply(&mut state, &mut index, Op::CancelRun { run: quick.into() });
        events.observe(&state);
        assert_eq!((created(), cancelled()), (2, 3));
    }
}
