//! Scenarios of issue 6, each checked by the oracle (`rota_chaos::oracle`)
//! against BRIEF §3 G1–G8: a recorded history of client writes, run
//! records, per-server views and container lives. Each scenario prints its
//! seed; `ROTA_CHAOS_SEED=N` repeats it.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rota_chaos::oracle::{Op, Outcome};
use rota_chaos::record::{Expectations, Recorder, collect, now_nanos, verdict};
use rota_chaos::{Cluster, ServerSettings, WorkerSettings, scenario_seed, wait_for};
use rota_client::{SpecFile, proto as pb};

const SECOND: i128 = 1_000_000_000;

/// The lease the harness's servers give workers, plus their grace.
const LEASE_AND_GRACE: Duration = Duration::from_secs(20);

/// `spec` keeping (nearly) all its history, so that the oracle finds every
/// run a scenario made (by default only the last 20 succeeded are kept).
fn kept(spec: &SpecFile) -> pb::JobSpec {
    let mut spec = spec.to_proto();
    spec.history = Some(pb::HistoryPolicy {
        keep_succeeded: Some(10_000),
        keep_failed: Some(10_000),
        ..Default::default()
    });
    spec
}

/// Scenario 1: the leader is SIGKILLed just before a cron slot (at a seeded
/// offset), three times, and restarted; meanwhile a client triggers runs
/// with request ids, retrying each through the failover. Every slot has one
/// record, no `forbid` attempts overlap, every acknowledged trigger has its
/// one run, the servers converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_just_before_cron_slots() {
    let seed = scenario_seed("leader_killed_just_before_cron_slots");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("steady", "exec"))
        .expect("worker starts");
    let scenario = async {
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let spec = SpecFile::parse_yaml(
            "name: every-five\nschedule: { cron: '*/5 * * * * *' }\nconcurrency: forbid\n\
             task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT; sleep 1'] }\n\
             ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual $ROTA_RUN_ID'] }\n",
        )?;
        for spec in &spec {
            recorder.apply_job(&client, kept(spec)).await?;
        }
        let from = now_nanos();
        let mut triggers = 0;
        for kill in 0..3 {
            // Wait until `offset` before the next 5 s boundary, then kill.
            let offset = rng.random_range(50..800) as i128 * 1_000_000;
            let now = now_nanos();
            let slot = (now / (5 * SECOND) + 1) * 5 * SECOND;
            let kill_at = if slot - offset > now {
                slot - offset
            } else {
                slot + 5 * SECOND - offset
            };
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
            let now = now_nanos();
            tokio::time::sleep(Duration::from_nanos(u64::try_from(kill_at - now).unwrap_or_default())).await;
            cluster.kill(leader)?;
            // Triggers during the election: the client retries them, the
            // request id keeps each to one run.
            for _ in 0..2 {
                triggers += 1;
                let _ = recorder
                    .trigger(&client, "manual", &format!("k{kill}-t{triggers}"))
                    .await;
            }
            cluster.wait_for_leader(Duration::from_secs(30)).await?;
            cluster.restart(leader)?;
        }
        // Let the cluster handle the slots up to now, then read the history.
        let until = now_nanos();
        wait_for("the last slot's record", Duration::from_secs(60), || async {
            let runs = client
                .list_runs(&pb::ListRunsRequest {
                    job: "every-five".into(),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let latest = runs
                .iter()
                .filter_map(|r| {
                    rota_chaos::oracle::nanos(&r.last_nominal_time).max(rota_chaos::oracle::nanos(&r.nominal_time))
                })
                .max()
                .unwrap_or(0);
            Ok((latest + 5 * SECOND > until).then_some(()))
        })
        .await?;
        let history = collect(
            &cluster,
            &recorder,
            None,
            Expectations {
                slots: vec![("every-five".into(), from, until)],
                forbid: ["every-five".to_owned()].into(),
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        anyhow::ensure!(
            history.expected_slots["every-five"].len() >= 3,
            "the scenario spans slots: {:?}",
            history.expected_slots
        );
        let acknowledged = history
            .ops
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && matches!(op.op, Op::Trigger { .. }))
            .count();
        anyhow::ensure!(acknowledged > 0, "no trigger was acknowledged: {:?}", history.ops);
        verdict(&history, seed)
    };
    let result = scenario.await;
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}

/// A container job that prints `start`, works for `secs` seconds, prints
/// `done`; `forbid`, retried once when lost.
fn container_job(name: &str, secs: u32) -> anyhow::Result<pb::JobSpec> {
    let yaml = format!(
        "name: {name}\nconcurrency: forbid\nretry: {{ max_attempts: 2, backoff: 1s }}\n\
         task: {{ image: '{}', pull: never, command: [sh, -c, 'echo start; sleep {secs}; echo done'] }}\n",
        rota_chaos::docker::TEST_IMAGE
    );
    Ok(kept(&SpecFile::parse_yaml(&yaml)?[0]))
}

/// Waits until run `id` has printed `text`.
async fn wait_for_output(client: &rota_client::Client, id: &str, text: &str) -> anyhow::Result<()> {
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
async fn wait_ended(client: &rota_client::Client, id: &str, within: Duration) -> anyhow::Result<pb::Run> {
    wait_for(&format!("run {id} to end"), within, || async {
        let run = client
            .get_run(id, rota_client::Consistency::Linearizable)
            .await
            .map_err(|e| e.to_string())?;
        Ok(run.finished_at.is_some().then_some(run))
    })
    .await
}

/// Scenario 5: the worker is SIGKILLed while its container runs, then
/// restarted on its data directory: it takes the container over, the run
/// ends once with its whole output, nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_while_its_container_runs_then_restarted() {
    if !rota_chaos::docker::ready_or_skip() {
        return;
    }
    let seed = scenario_seed("worker_killed_while_its_container_runs_then_restarted");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("phoenix", "docker"))
        .expect("worker starts");
    let scenario = async {
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let containers = rota_chaos::record::ContainerWatch::start()?;
        recorder.apply_job(&client, container_job("rises", 6)?).await?;
        let run = recorder.trigger(&client, "rises", "once").await?;
        wait_for_output(&client, &run.id, "start").await?;
        // Somewhere in the container's life.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
        cluster.worker("phoenix")?.process.kill()?;
        cluster.restart_worker("phoenix")?;
        let ended = wait_ended(&client, &run.id, Duration::from_secs(90)).await?;
        anyhow::ensure!(
            ended.state() == pb::RunState::Succeeded && ended.attempts.len() == 1,
            "taken over, not retried: {ended:?}"
        );
        let history = collect(
            &cluster,
            &recorder,
            Some(&containers),
            Expectations {
                forbid: ["rises".to_owned()].into(),
                workers: vec!["phoenix".into()],
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        let log = String::from_utf8_lossy(history.logs.get(&run.id).map_or(&[][..], Vec::as_slice)).into_owned();
        // The task's output once, whole (the worker adds its own note).
        anyhow::ensure!(
            log.matches("start\n").count() == 1 && log.matches("done\n").count() == 1 && log.ends_with("done\n"),
            "the whole output: {log:?}"
        );
        verdict(&history, seed)
    };
    let result = scenario.await;
    rota_chaos::docker::remove_worker_containers("phoenix");
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}

/// Scenario 7: the worker dies for good mid-run (the process SIGKILLed and
/// its containers gone, as when its host is lost): the run is `lost` within
/// lease + grace and retried on the other worker, never both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_lost_for_good_mid_run() {
    if !rota_chaos::docker::ready_or_skip() {
        return;
    }
    let seed = scenario_seed("worker_lost_for_good_mid_run");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("doomed", "docker"))
        .expect("worker starts");
    let scenario = async {
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let containers = rota_chaos::record::ContainerWatch::start()?;
        recorder.apply_job(&client, container_job("outlives", 4)?).await?;
        let run = recorder.trigger(&client, "outlives", "once").await?;
        wait_for_output(&client, &run.id, "start").await?;
        cluster.start_worker(WorkerSettings::new("survivor", "docker"))?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        cluster.worker("doomed")?.process.kill()?;
        rota_chaos::docker::remove_worker_containers("doomed");
        let died = now_nanos();
        let ended = wait_ended(&client, &run.id, Duration::from_secs(120)).await?;
        anyhow::ensure!(
            ended.state() == pb::RunState::Succeeded
                && ended.attempts.len() == 2
                && ended.attempts[0].outcome == "lost"
                && ended.attempts[1].worker == "survivor",
            "lost on the dead worker, then run on the other: {ended:?}"
        );
        let history = collect(
            &cluster,
            &recorder,
            Some(&containers),
            Expectations {
                forbid: ["outlives".to_owned()].into(),
                workers: vec!["doomed".into(), "survivor".into()],
                dead_workers: [("doomed".to_owned(), died)].into(),
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        verdict(&history, seed)
    };
    let result = scenario.await;
    rota_chaos::docker::remove_worker_containers("survivor");
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}

/// Waits until the records of `job` reach past `until` (the cluster has
/// handled every slot up to then).
async fn wait_slots_handled(client: &rota_client::Client, job: &str, until: i128, period: i128) -> anyhow::Result<()> {
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
                    let first = rota_chaos::oracle::nanos(&r.nominal_time);
                    rota_chaos::oracle::nanos(&r.last_nominal_time).max(first)
                })
                .max()
                .unwrap_or(0);
            Ok((latest + period > until).then_some(()))
        },
    )
    .await
}

/// Scenario 4: the leader is paused (SIGSTOP) past the election timeout
/// while triggers arrive, then resumed (SIGCONT), twice. The paused leader
/// wakes to a newer term and must not act on its old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_past_the_election_timeout_then_resumed() {
    let seed = scenario_seed("leader_paused_past_the_election_timeout_then_resumed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("steady", "exec"))
        .expect("worker starts");
    let scenario = async {
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let specs = SpecFile::parse_yaml(
            "name: every-two\nschedule: { cron: '*/2 * * * * *' }\nconcurrency: forbid\n\
             task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT'] }\n\
             ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual'] }\n",
        )?;
        for spec in &specs {
            recorder.apply_job(&client, kept(spec)).await?;
        }
        let from = now_nanos();
        for round in 0..2 {
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
            cluster.signal(leader, nix::sys::signal::Signal::SIGSTOP)?;
            for t in 0..2 {
                let _ = recorder.trigger(&client, "manual", &format!("p{round}-t{t}")).await;
            }
            let others: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
            cluster.wait_for_leader_among(&others, Duration::from_secs(30)).await?;
            // Paused a while longer, while the new leader works.
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
            cluster.signal(leader, nix::sys::signal::Signal::SIGCONT)?;
        }
        let until = now_nanos();
        wait_slots_handled(&client, "every-two", until, 2 * SECOND).await?;
        let history = collect(
            &cluster,
            &recorder,
            None,
            Expectations {
                slots: vec![("every-two".into(), from, until)],
                forbid: ["every-two".to_owned()].into(),
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        anyhow::ensure!(history.expected_slots["every-two"].len() >= 3);
        verdict(&history, seed)
    };
    let result = scenario.await;
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}

/// Scenario 9: the whole cluster is down across many cron slots — longer
/// than the minute after which a slot counts as late — then restarted; one
/// job per catch-up policy. Every slot of the outage has exactly one record
/// — a run or a `missed` range — under each policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_down_across_cron_slots_under_each_catch_up_policy() {
    let seed = scenario_seed("whole_cluster_down_across_cron_slots_under_each_catch_up_policy");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let scenario = async {
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let jobs = ["none", "latest", "all"];
        for policy in jobs {
            let yaml = format!(
                "name: catch-up-{policy}\nschedule: {{ cron: '*/2 * * * * *', catch_up: {policy}, max_catch_up: 100 }}\n\
                 concurrency: allow\ntask: {{ driver: exec, command: ['true'] }}\n"
            );
            recorder
                .apply_job(&client, kept(&SpecFile::parse_yaml(&yaml)?[0]))
                .await?;
        }
        let from = now_nanos();
        wait_slots_handled(&client, "catch-up-none", from + 2 * SECOND, 2 * SECOND).await?;
        for id in cluster.ids() {
            cluster.kill(id)?;
        }
        // Down past the 60 s after which slots are late (and catch-up applies).
        tokio::time::sleep(Duration::from_millis(rng.random_range(62_000..66_000))).await;
        for id in cluster.ids() {
            cluster.restart(id)?;
        }
        cluster.wait_for_leader(Duration::from_secs(60)).await?;
        let until = now_nanos();
        for policy in jobs {
            wait_slots_handled(&client, &format!("catch-up-{policy}"), until, 2 * SECOND).await?;
        }
        let history = collect(
            &cluster,
            &recorder,
            None,
            Expectations {
                slots: jobs
                    .iter()
                    .map(|policy| (format!("catch-up-{policy}"), from, until))
                    .collect(),
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        let missed = |job: &str| {
            history
                .runs
                .iter()
                .filter(|r| r.job == job && r.state() == pb::RunState::Missed)
                .count()
        };
        anyhow::ensure!(
            missed("catch-up-none") > 0 && missed("catch-up-all") == 0,
            "none records the outage's slots as missed, all runs them: {:?}",
            history
                .runs
                .iter()
                .map(|r| (&r.job, r.state(), r.slot_count))
                .collect::<Vec<_>>()
        );
        verdict(&history, seed)
    };
    let result = scenario.await;
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}

/// Scenario 6: a worker is cut off from every server (its connection runs
/// through a proxy the test cuts) longer than its lease while its `forbid`
/// job's container runs. It kills the container before the lease ends; the
/// run is retried on another worker only after lease + grace; the two
/// containers never run at once; healed, the late worker changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_cut_off_longer_than_its_lease() {
    if !rota_chaos::docker::ready_or_skip() {
        return;
    }
    let seed = scenario_seed("worker_cut_off_longer_than_its_lease");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let scenario = async {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let proxy = rota_chaos::proxy::Proxy::start(&cluster.addr(leader)?).await?;
        let mut islanded = WorkerSettings::new("islanded", "docker");
        islanded.servers = Some(vec![proxy.addr.clone()]);
        cluster.start_worker(islanded)?;
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let containers = rota_chaos::record::ContainerWatch::start()?;
        let yaml = format!(
            "name: exclusive\nconcurrency: forbid\nkill_grace: 1s\nretry: {{ max_attempts: 2, backoff: 100ms, on: [lost] }}\n\
             task: {{ image: '{}', pull: never, command: [sh, -c, 'echo start; if [ \"$ROTA_ATTEMPT\" = 1 ]; then sleep 600; fi; echo done'] }}\n",
            rota_chaos::docker::TEST_IMAGE
        );
        recorder
            .apply_job(&client, kept(&SpecFile::parse_yaml(&yaml)?[0]))
            .await?;
        let run = recorder.trigger(&client, "exclusive", "once").await?;
        wait_for_output(&client, &run.id, "start").await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
        proxy.cut();
        cluster.start_worker(WorkerSettings::new("mainland", "docker"))?;
        let ended = wait_ended(&client, &run.id, Duration::from_secs(120)).await?;
        anyhow::ensure!(
            ended.state() == pb::RunState::Succeeded
                && ended.attempts.len() == 2
                && ended.attempts[0].outcome == "lost"
                && ended.attempts[1].worker == "mainland",
            "lost on the cut-off worker, then run elsewhere: {ended:?}"
        );
        // Healed: the cut-off worker reconnects and cleans up after itself.
        proxy.restore();
        wait_for(
            "the cut-off worker's containers to go",
            Duration::from_secs(60),
            || async {
                let left = rota_chaos::docker::containers("islanded", true).map_err(|e| e.to_string())?;
                Ok(left.is_empty().then_some(()))
            },
        )
        .await?;
        let history = collect(
            &cluster,
            &recorder,
            Some(&containers),
            Expectations {
                forbid: ["exclusive".to_owned()].into(),
                workers: vec!["islanded".into(), "mainland".into()],
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        anyhow::ensure!(
            history.containers.iter().filter(|c| c.job == "exclusive").count() == 2,
            "both attempts' containers were seen: {:?}",
            history.containers
        );
        verdict(&history, seed)
    };
    let result = scenario.await;
    rota_chaos::docker::remove_worker_containers("islanded");
    rota_chaos::docker::remove_worker_containers("mainland");
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}

/// Scenario 14: under a steady load of applies and triggers, a fourth
/// server joins, then the leader is removed from the cluster (and stopped).
/// Writes acknowledged across both membership changes stay, triggers stay
/// one run each, the slots of a cron job each have one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_and_the_leader_removed_under_load() {
    let seed = scenario_seed("a_server_added_and_the_leader_removed_under_load");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("steady", "exec"))
        .expect("worker starts");
    let scenario = async {
        let client = cluster.client()?;
        let recorder = Recorder::default();
        let specs = SpecFile::parse_yaml(
            "name: every-two\nschedule: { cron: '*/2 * * * * *' }\nconcurrency: forbid\n\
             task: { driver: exec, command: [sh, -c, 'echo slot'] }\n\
             ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual'] }\n",
        )?;
        for spec in &specs {
            recorder.apply_job(&client, kept(spec)).await?;
        }
        let from = now_nanos();
        // The load: applies of a few jobs and triggers, one after another.
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let load = tokio::spawn({
            let (client, recorder) = (client.clone(), recorder.clone());
            async move {
                let mut i = 0u32;
                while !*stopped.borrow() {
                    i += 1;
                    let yaml = format!(
                        "name: load-{}\ntask: {{ driver: exec, command: [echo, '{i}'] }}\n",
                        i % 3
                    );
                    if let Ok(spec) = SpecFile::parse_yaml(&yaml) {
                        let _ = recorder.apply_job(&client, kept(&spec[0])).await;
                    }
                    let _ = recorder.trigger(&client, "manual", &format!("load-{i}")).await;
                    tokio::select! {
                        _ = stopped.changed() => {}
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        let new = cluster.start_new_server()?;
        client.add_node(new, &cluster.addr(new)?, false).await?;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        let members = client.remove_node(leader).await?;
        anyhow::ensure!(
            members.len() == 3 && members.iter().all(|m| m.node_id != leader),
            "{members:?}"
        );
        cluster.kill(leader)?;
        let rest: Vec<u64> = cluster.running_ids();
        cluster.wait_for_leader_among(&rest, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
        stop.send_replace(true);
        load.await?;
        let until = now_nanos();
        wait_slots_handled(&client, "every-two", until, 2 * SECOND).await?;
        let history = collect(
            &cluster,
            &recorder,
            None,
            Expectations {
                slots: vec![("every-two".into(), from, until)],
                forbid: ["every-two".to_owned()].into(),
                lease_and_grace: LEASE_AND_GRACE,
                ..Expectations::default()
            },
        )
        .await?;
        anyhow::ensure!(
            history.servers.len() == 3,
            "three members answer: {:?}",
            history.servers.keys()
        );
        let acknowledged = history.ops.iter().filter(|op| op.outcome == Outcome::Ok).count();
        anyhow::ensure!(acknowledged > 10, "the load was acknowledged: {acknowledged}");
        verdict(&history, seed)
    };
    let result = scenario.await;
    cluster.settle(result);
    let alive = rota_chaos::record::liveness(&mut cluster).await;
    cluster.settle(alive);
}
