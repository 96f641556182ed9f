//! The chaos scenarios of issue 6, each checked by the oracle
//! ([`crate::oracle`]) against BRIEF §3 G1–G8 and followed by a liveness
//! check (a fresh job runs end to end once every fault is healed).
//!
//! A scenario is a function of a started [`Cluster`] and a seeded random
//! source; [`run`] starts the cluster it asks for, runs it, cleans up and
//! returns every violation with the seed, so `ROTA_CHAOS_SEED=N` (tests) or
//! `rota-chaos --scenario NAME --seed N` repeats a failure. The tests in
//! `tests/guarantees.rs` run each scenario once (the CI profile); the
//! `rota-chaos` binary runs them all, or random ones for a given time (the
//! soak profile).

mod clock;
mod leader;
mod outage;
mod partition;
mod reports;
mod storage;
mod workers;

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rota_client::{Client, SpecFile, proto as pb};

use crate::oracle::{Op, Outcome};
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};
use crate::{Cluster, ServerSettings, wait_for};

/// One scenario of issue 6 (numbered as there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 1: the leader killed just before cron slots, restarted.
    LeaderKilledBeforeSlots,
    /// 2: the leader isolated (then cut off one way) while clients talk to
    /// both sides.
    LeaderIsolated,
    /// 3: a ring of overlapping majorities on five servers under load.
    Ring,
    /// 4: the leader paused past the election timeout, resumed.
    LeaderPaused,
    /// 5: a worker SIGKILLed while its container runs, restarted.
    WorkerKilled,
    /// 6: a worker cut off from every server longer than its lease.
    WorkerCutOff,
    /// 7: a worker lost for good mid-run.
    WorkerLost,
    /// 8: worker reports duplicated, reordered and delayed past a retry.
    DuplicateReports,
    /// 9: the whole cluster down across cron slots.
    ClusterDown,
    /// 10: a server aborted at storage points, restarted.
    StoragePoints,
    /// 11: one server's disk fills up, then is freed.
    DiskFull,
    /// 12: one server's clock jumps forward and back by ten minutes.
    ClockJump,
    /// 13: lossy, slow links between a worker and the servers.
    LossyLinks,
    /// 14: a server added and the leader removed under load.
    Membership,
}

impl Scenario {
    /// Every scenario, in the order.
    pub const ALL: [Scenario; 14] = [
        Scenario::LeaderKilledBeforeSlots,
        Scenario::LeaderIsolated,
        Scenario::Ring,
        Scenario::LeaderPaused,
        Scenario::WorkerKilled,
        Scenario::WorkerCutOff,
        Scenario::WorkerLost,
        Scenario::DuplicateReports,
        Scenario::ClusterDown,
        Scenario::StoragePoints,
        Scenario::DiskFull,
        Scenario::ClockJump,
        Scenario::LossyLinks,
        Scenario::Membership,
    ];

    /// Its name (also its test's name).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderKilledBeforeSlots => "leader_killed_just_before_cron_slots",
            Scenario::LeaderIsolated => "leader_isolated_while_clients_talk_to_both_sides",
            Scenario::Ring => "ring_of_overlapping_majorities_under_write_load",
            Scenario::LeaderPaused => "leader_paused_past_the_election_timeout_then_resumed",
            Scenario::WorkerKilled => "worker_killed_while_its_container_runs_then_restarted",
            Scenario::WorkerCutOff => "worker_cut_off_longer_than_its_lease",
            Scenario::WorkerLost => "worker_lost_for_good_mid_run",
            Scenario::DuplicateReports => "duplicate_and_delayed_worker_reports",
            Scenario::StoragePoints => "server_killed_at_storage_points",
            Scenario::DiskFull => "one_servers_disk_fills_up_then_frees",
            Scenario::ClockJump => "clock_jumps_forward_and_back_on_one_server",
            Scenario::LossyLinks => "lossy_slow_links_between_workers_and_servers",
            Scenario::ClusterDown => "whole_cluster_down_across_cron_slots_under_each_catch_up_policy",
            Scenario::Membership => "a_server_added_and_the_leader_removed_under_load",
        }
    }

    /// The scenario called `name`, if any.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether it needs the Docker engine (and the test image).
    pub fn needs_docker(self) -> bool {
        matches!(
            self,
            Scenario::WorkerKilled | Scenario::WorkerCutOff | Scenario::WorkerLost
        )
    }

    /// How many founding servers, with what settings.
    fn cluster(self) -> (u64, ServerSettings) {
        let linked = ServerSettings {
            link_proxies: true,
            ..ServerSettings::default()
        };
        match self {
            Scenario::LeaderIsolated => (3, linked),
            Scenario::Ring => (5, linked),
            Scenario::StoragePoints | Scenario::DiskFull => (
                3,
                ServerSettings {
                    snapshot_every_logs: storage::SNAPSHOT_EVERY,
                    keep_logs_after_snapshot: 20,
                    ..ServerSettings::default()
                },
            ),
            Scenario::ClockJump => (
                3,
                ServerSettings {
                    skewable_clocks: true,
                    ..ServerSettings::default()
                },
            ),
            Scenario::DuplicateReports => (
                3,
                ServerSettings {
                    env: vec![
                        ("ROTA_WORKER_LEASE".into(), "4s".into()),
                        ("ROTA_WORKER_LEASE_GRACE".into(), "2s".into()),
                    ],
                    ..ServerSettings::default()
                },
            ),
            _ => (3, ServerSettings::default()),
        }
    }
}

/// Runs `scenario` with `seed` on a cluster of its own: the scenario, the
/// oracle's verdict, then liveness. Server and worker logs are printed on
/// failure; the error names the scenario and the seed. `Ok(false)` when it
/// was skipped (it needs Docker and Docker is not there, outside CI).
pub async fn run(scenario: Scenario, seed: u64) -> anyhow::Result<bool> {
    if scenario.needs_docker() && !crate::docker::ready_or_skip() {
        return Ok(false);
    }
    if scenario == Scenario::DiskFull && !storage::can_mount() {
        if std::env::var_os("ROTA_REQUIRE_ROOT").is_some() {
            anyhow::bail!("scenario {} mounts a small filesystem: it needs root", scenario.name());
        }
        eprintln!("skipped: mounting a small filesystem needs root (set ROTA_REQUIRE_ROOT to make this a failure)");
        return Ok(false);
    }
    if scenario == Scenario::ClockJump && crate::faketime_library().is_none() {
        if std::env::var_os("ROTA_REQUIRE_FAKETIME").is_some() {
            anyhow::bail!(
                "scenario {} needs libfaketime: apt-get install faketime",
                scenario.name()
            );
        }
        eprintln!(
            "skipped: no libfaketime (apt-get install faketime; set ROTA_REQUIRE_FAKETIME to make this a failure)"
        );
        return Ok(false);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (size, settings) = scenario.cluster();
    let mut cluster = Cluster::start(size, settings).await?;
    let cluster = &mut cluster;
    let rng = &mut rng;
    let result = match scenario {
        Scenario::LeaderKilledBeforeSlots => leader::leader_killed_just_before_cron_slots(cluster, rng, seed).await,
        Scenario::LeaderIsolated => {
            partition::leader_isolated_while_clients_talk_to_both_sides(cluster, rng, seed).await
        }
        Scenario::Ring => partition::ring_of_overlapping_majorities_under_write_load(cluster, rng, seed).await,
        Scenario::LeaderPaused => {
            leader::leader_paused_past_the_election_timeout_then_resumed(cluster, rng, seed).await
        }
        Scenario::WorkerKilled => {
            workers::worker_killed_while_its_container_runs_then_restarted(cluster, rng, seed).await
        }
        Scenario::WorkerCutOff => workers::worker_cut_off_longer_than_its_lease(cluster, rng, seed).await,
        Scenario::WorkerLost => workers::worker_lost_for_good_mid_run(cluster, rng, seed).await,
        Scenario::ClusterDown => {
            outage::whole_cluster_down_across_cron_slots_under_each_catch_up_policy(cluster, rng, seed).await
        }
        Scenario::DuplicateReports => reports::duplicate_and_delayed_worker_reports(cluster, rng, seed).await,
        Scenario::StoragePoints => storage::server_killed_at_storage_points(cluster, rng, seed).await,
        Scenario::DiskFull => storage::one_servers_disk_fills_up_then_frees(cluster, rng, seed).await,
        Scenario::ClockJump => clock::clock_jumps_forward_and_back_on_one_server(cluster, rng, seed).await,
        Scenario::LossyLinks => workers::lossy_slow_links_between_workers_and_servers(cluster, rng, seed).await,
        Scenario::Membership => leader::a_server_added_and_the_leader_removed_under_load(cluster, rng, seed).await,
    };
    if scenario.needs_docker() {
        for worker in cluster.worker_ids() {
            crate::docker::remove_worker_containers(&worker);
        }
    }
    let result = match result {
        Ok(()) => crate::record::liveness(cluster).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        cluster.dump_logs();
    }
    result
        .map(|()| true)
        .map_err(|e| e.context(format!("scenario {} failed (seed {seed})", scenario.name())))
}

/// The test of `scenario` (the CI profile): its seed from
/// [`crate::scenario_seed`], a panic with the account on failure.
pub async fn test(scenario: Scenario) {
    let seed = crate::scenario_seed(scenario.name());
    if let Err(e) = run(scenario, seed).await {
        panic!("{e:#}");
    }
}

pub(crate) const SECOND: i128 = 1_000_000_000;

/// The lease the harness's servers give workers, plus their grace.
pub(crate) const LEASE_AND_GRACE: Duration = Duration::from_secs(20);

/// `spec` keeping (nearly) all its history, so that the oracle finds every
/// run a scenario made (by default only the last 20 succeeded are kept).
pub(crate) fn kept(spec: &SpecFile) -> pb::JobSpec {
    let mut spec = spec.to_proto();
    spec.history = Some(pb::HistoryPolicy {
        keep_succeeded: Some(10_000),
        keep_failed: Some(10_000),
        ..Default::default()
    });
    spec
}

/// A container job that prints `start`, works for `secs` seconds, prints
/// `done`; `forbid`, retried once when lost.
pub(crate) fn container_job(name: &str, secs: u32) -> anyhow::Result<pb::JobSpec> {
    let yaml = format!(
        "name: {name}\nconcurrency: forbid\nretry: {{ max_attempts: 2, backoff: 1s }}\n\
         task: {{ image: '{}', pull: never, command: [sh, -c, 'echo start; sleep {secs}; echo done'] }}\n",
        crate::docker::TEST_IMAGE
    );
    Ok(kept(&SpecFile::parse_yaml(&yaml)?[0]))
}

/// Waits until run `id` has printed `text`.
pub(crate) async fn wait_for_output(client: &rota_client::Client, id: &str, text: &str) -> anyhow::Result<()> {
    wait_for(&format!("{text:?} from run {id}"), Duration::from_secs(60), || async {
        let mut stream = client.logs(id, false, 0).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(|e| e.to_string())? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(String::from_utf8_lossy(&out).contains(text).then_some(()))
    })
    .await
}

/// Waits until run `id` has ended.
pub(crate) async fn wait_ended(client: &rota_client::Client, id: &str, within: Duration) -> anyhow::Result<pb::Run> {
    wait_for(&format!("run {id} to end"), within, || async {
        let run = client
            .get_run(id, rota_client::Consistency::Linearizable)
            .await
            .map_err(|e| e.to_string())?;
        Ok(run.finished_at.is_some().then_some(run))
    })
    .await
}

/// Waits until the records of `job` reach past `until` (the cluster has
/// handled every slot up to then).
pub(crate) async fn wait_slots_handled(
    client: &rota_client::Client,
    job: &str,
    until: i128,
    period: i128,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{job}'s slots up to {until}"),
        Duration::from_secs(60),
        || async {
            let runs = client
                .list_runs(&pb::ListRunsRequest {
                    job: job.into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let latest = runs
                .iter()
                .filter_map(|r| {
                    let first = crate::oracle::nanos(&r.nominal_time);
                    crate::oracle::nanos(&r.last_nominal_time).max(first)
                })
                .max()
                .unwrap_or(0);
            Ok((latest + period > until).then_some(()))
        },
    )
    .await
}

/// A steady write load recorded for the oracle: applies of a few jobs
/// (`{tag}-0` … `{tag}-2`) and triggers of job `manual` with request ids
/// `{tag}-N`, one after another, until [`Load::stop`].
pub(crate) struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts the load through `client`.
    pub(crate) fn start(client: &rota_client::Client, recorder: &crate::record::Recorder, tag: &str) -> Load {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (client, recorder, tag) = (client.clone(), recorder.clone(), tag.to_owned());
        let task = tokio::spawn(async move {
            let mut i = 0u32;
            while !*stopped.borrow() {
                i += 1;
                let yaml = format!(
                    "name: {tag}-{}\ntask: {{ driver: exec, command: [echo, '{i}'] }}\n",
                    i % 3
                );
                if let Ok(spec) = SpecFile::parse_yaml(&yaml) {
                    let _ = recorder.apply_job(&client, kept(&spec[0])).await;
                }
                let _ = recorder.trigger(&client, "manual", &format!("{tag}-{i}")).await;
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        Load { stop, task }
    }

    /// Stops the load and waits for its last operation.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        Ok(self.task.await?)
    }
}

/// The shortest a scenario of [`Common`] lasts: four slots of `every-two`,
/// so at least three are expected and one meets a running attempt (its task
/// takes three seconds) and is skipped.
const MIN_SPAN: Duration = Duration::from_secs(8);

/// The usual setting of a scenario: an exec worker `steady`, the jobs of
/// [`cron_and_manual_jobs`], a recorder, the instant from which slots are
/// checked, and perhaps a write load ([`Common::with_load`]).
pub(crate) struct Common {
    pub(crate) client: Client,
    pub(crate) recorder: Recorder,
    pub(crate) from: i128,
    /// Writes of the setup (not counted by [`Answered`]).
    setup_ops: usize,
    load: Option<Load>,
}

impl Common {
    /// Starts the worker and applies the jobs.
    pub(crate) async fn start(cluster: &mut Cluster) -> anyhow::Result<Common> {
        cluster.start_worker(crate::WorkerSettings::new("steady", "exec"))?;
        let client = cluster.client()?;
        let recorder = Recorder::default();
        cron_and_manual_jobs(&client, &recorder).await?;
        Ok(Common {
            client,
            setup_ops: recorder.ops().len(),
            recorder,
            from: now_nanos(),
            load: None,
        })
    }

    /// Adds a steady write load through the scenario's client.
    pub(crate) fn with_load(mut self, tag: &str) -> Common {
        self.load = Some(Load::start(&self.client, &self.recorder, tag));
        self
    }

    /// Stops the load, sends every unanswered trigger again (as a client
    /// would) and checks the history ([`check_cron_and_manual`]).
    pub(crate) async fn finish(self, cluster: &Cluster, answered: Answered, seed: u64) -> anyhow::Result<()> {
        // A scenario whose faults healed quickly still spans MIN_SPAN, so
        // the history has the slots `check_cron_and_manual` asks for.
        let left = self.from + i128::try_from(MIN_SPAN.as_nanos())? - now_nanos();
        if let Ok(left) = u64::try_from(left) {
            tokio::time::sleep(Duration::from_nanos(left)).await;
        }
        if let Some(load) = self.load {
            load.stop().await?;
        }
        self.recorder.retry_unknown_triggers(&self.client).await;
        check_cron_and_manual(cluster, &self.recorder, self.from, self.setup_ops, answered, seed).await
    }
}

/// The jobs of most scenarios: `every-two`, a `forbid` cron job every two
/// seconds whose task takes three (so slots meet a running attempt and are
/// skipped: `forbid` is exercised, not vacuous), and `manual`, an on-demand
/// job for triggers ([`Load`]).
async fn cron_and_manual_jobs(client: &Client, recorder: &Recorder) -> anyhow::Result<()> {
    let specs = SpecFile::parse_yaml(
        "name: every-two\nschedule: { cron: '*/2 * * * * *' }\nconcurrency: forbid\n\
         task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT; sleep 3'] }\n\
         ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual'] }\n",
    )?;
    for spec in &specs {
        recorder.apply_job(client, kept(spec)).await?;
    }
    Ok(())
}

/// Waits until the cluster has handled every slot of `every-two` up to now,
/// then reads the history: those slots since `from` expected, `every-two`
/// a `forbid` job.
pub(crate) async fn collect_every_two(
    cluster: &Cluster,
    client: &Client,
    recorder: &Recorder,
    from: i128,
) -> anyhow::Result<crate::oracle::History> {
    let until = now_nanos();
    wait_slots_handled(client, "every-two", until, 2 * SECOND).await?;
    collect(
        cluster,
        recorder,
        None,
        Expectations {
            slots: vec![("every-two".into(), from, until)],
            forbid: ["every-two".to_owned()].into(),
            lease_and_grace: LEASE_AND_GRACE,
            ..Expectations::default()
        },
    )
    .await
}

/// How many writes of a scenario must have been acknowledged, and how many
/// must have gone unanswered (proof that the fault was real).
/// Only the writes the scenario made after its setup count.
pub(crate) struct Answered {
    /// At least this many acknowledged.
    pub(crate) acknowledged: usize,
    /// At least this many unknown among the triggers whose request id
    /// starts with `unanswered_prefix` (`""`: any write).
    pub(crate) unanswered: usize,
    /// See `unanswered`.
    pub(crate) unanswered_prefix: &'static str,
}

/// Reads the history of a scenario run with [`cron_and_manual_jobs`] and
/// checks it: every slot of `every-two` since `from` has one record and
/// some were skipped (the slot met a running attempt), acknowledged writes
/// stay, triggers are one run each, every running server answers and they
/// converge; `answered` says how many writes must have been acknowledged
/// and left unanswered.
async fn check_cron_and_manual(
    cluster: &Cluster,
    recorder: &Recorder,
    from: i128,
    setup_ops: usize,
    answered: Answered,
    seed: u64,
) -> anyhow::Result<()> {
    let history = collect_every_two(cluster, &cluster.client()?, recorder, from).await?;
    // The guarantees first: a violation is the more important account.
    verdict(&history, seed)?;
    let ops = history.ops.get(setup_ops..).unwrap_or_default();
    let acknowledged = ops.iter().filter(|op| op.outcome == Outcome::Ok).count();
    let unanswered = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Unknown)
        .filter(|op| match &op.op {
            // The load names its jobs and request ids after its side.
            Op::Trigger { request_id: key, .. } | Op::CreateJob { name: key, .. } => {
                key.starts_with(answered.unanswered_prefix)
            }
            _ => answered.unanswered_prefix.is_empty(),
        })
        .count();
    anyhow::ensure!(
        acknowledged >= answered.acknowledged,
        "at least {} writes acknowledged after the setup: {ops:?}",
        answered.acknowledged,
    );
    anyhow::ensure!(
        unanswered >= answered.unanswered,
        "at least {} writes ({:?}...) unanswered: {ops:?}",
        answered.unanswered,
        answered.unanswered_prefix,
    );
    anyhow::ensure!(
        history.servers.len() == cluster.running_ids().len(),
        "every server answers after healing: {:?}",
        history.servers.keys()
    );
    anyhow::ensure!(
        history.expected_slots["every-two"].len() >= 3
            && history
                .runs
                .iter()
                .any(|r| r.job == "every-two" && r.state() == pb::RunState::Skipped),
        "the scenario spans slots, some skipped under forbid: {:?}",
        history
            .runs
            .iter()
            .filter(|r| r.job == "every-two")
            .map(|r| (&r.id, r.state()))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// The heartbeat interval of the harness's servers (a fifth of the 15 s
/// lease).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(3);

/// G3's other half: the attempts of `run` after the first were assigned no
/// earlier than lease + grace after the worker's last renewal, which came
/// at most one `heartbeat` before it went quiet at `quiet` (unix
/// nanoseconds). Half a second of slack for clocks read in two processes.
pub(crate) fn reassigned_after_lease_and_grace(
    run: &pb::Run,
    quiet: i128,
    lease_and_grace: Duration,
    heartbeat: Duration,
) -> anyhow::Result<()> {
    let nanos = |d: Duration| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
    let earliest = quiet + nanos(lease_and_grace) - nanos(heartbeat) - nanos(Duration::from_millis(500));
    for attempt in run.attempts.iter().skip(1) {
        let assigned = crate::oracle::nanos(&attempt.assigned_at).unwrap_or(i128::MIN);
        anyhow::ensure!(
            assigned >= earliest,
            "run {}: attempt of epoch {} was assigned {} ms after its worker went quiet; lease + grace is {lease_and_grace:?}",
            run.id,
            attempt.epoch,
            (assigned - quiet) / 1_000_000
        );
    }
    Ok(())
}
