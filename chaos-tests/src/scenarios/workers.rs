//! Scenarios about workers: SIGKILLed and restarted (5), cut off longer
//! than the lease (6), lost for good (7), on lossy, slow links (13).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::{SpecFile, proto as pb};

use super::{
    HEARTBEAT, LEASE_AND_GRACE, container_job, kept, reassigned_after_lease_and_grace, wait_ended, wait_for_output,
};
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};
use crate::{Cluster, WorkerSettings, wait_for};

/// A Docker worker `worker`, the container job `job` working for `secs`
/// seconds ([`container_job`]), and its run triggered and started (it
/// printed `start`), with the engine's container events watched from
/// before.
async fn container_running(
    cluster: &mut Cluster,
    worker: &str,
    job: &str,
    secs: u32,
) -> anyhow::Result<(rota_client::Client, Recorder, crate::record::ContainerWatch, pb::Run)> {
    cluster.start_worker(WorkerSettings::new(worker, "docker"))?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    let containers = crate::record::ContainerWatch::start()?;
    recorder.apply_job(&client, container_job(job, secs)?).await?;
    let run = recorder.trigger(&client, job, "once").await?;
    wait_for_output(&client, &run.id, "start").await?;
    Ok((client, recorder, containers, run))
}

/// Scenario 5: the worker is SIGKILLed while its container runs, then
/// restarted on its data directory: it takes the container over, the run
/// ends once with its whole output, nothing is left behind.
pub(super) async fn worker_killed_while_its_container_runs_then_restarted(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let (client, recorder, containers, run) = container_running(cluster, "phoenix", "rises", 6).await?;
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
        cluster,
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
}

/// Scenario 6: a worker is cut off from every server (its connection runs
/// through a proxy the test cuts) longer than its lease while its `forbid`
/// job's container runs. It kills the container before the lease ends; the
/// run is retried on another worker only after lease + grace; the two
/// containers never run at once; healed, the late worker changes nothing.
pub(super) async fn worker_cut_off_longer_than_its_lease(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let proxy = crate::proxy::Proxy::start(&cluster.addr(leader)?).await?;
    let mut islanded = WorkerSettings::new("islanded", "docker");
    islanded.servers = Some(vec![proxy.addr.clone()]);
    cluster.start_worker(islanded)?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    let containers = crate::record::ContainerWatch::start()?;
    let yaml = format!(
        "name: exclusive\nconcurrency: forbid\nkill_grace: 1s\nretry: {{ max_attempts: 2, backoff: 100ms, on: [lost] }}\n\
         task: {{ image: '{}', pull: never, command: [sh, -c, 'echo start; if [ \"$ROTA_ATTEMPT\" = 1 ]; then sleep 600; fi; echo done'] }}\n",
        crate::docker::TEST_IMAGE
    );
    recorder
        .apply_job(&client, kept(&SpecFile::parse_yaml(&yaml)?[0]))
        .await?;
    let run = recorder.trigger(&client, "exclusive", "once").await?;
    wait_for_output(&client, &run.id, "start").await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
    proxy.cut();
    let cut = now_nanos();
    cluster.start_worker(WorkerSettings::new("mainland", "docker"))?;
    let ended = wait_ended(&client, &run.id, Duration::from_secs(120)).await?;
    anyhow::ensure!(
        ended.state() == pb::RunState::Succeeded
            && ended.attempts.len() == 2
            && ended.attempts[0].outcome == "lost"
            && ended.attempts[1].worker == "mainland",
        "lost on the cut-off worker, then run elsewhere: {ended:?}"
    );
    reassigned_after_lease_and_grace(&ended, cut, LEASE_AND_GRACE, HEARTBEAT)?;
    // Healed: the cut-off worker reconnects and cleans up after itself.
    proxy.restore();
    wait_for(
        "the cut-off worker's containers to go",
        Duration::from_secs(60),
        || async {
            let left = crate::docker::containers("islanded", true).map_err(|e| e.to_string())?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await?;
    let history = collect(
        cluster,
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
    verdict(&history, seed)?;
    anyhow::ensure!(
        history.containers.iter().filter(|c| c.job == "exclusive").count() == 2,
        "both attempts' containers were seen: {:?}",
        history.containers
    );
    // The cut-off worker killed its container before its lease (15 s, from
    // a renewal no later than the cut) ran out.
    let first = ended.attempts[0].epoch;
    let fenced_by = cut + 16 * 1_000_000_000;
    anyhow::ensure!(
        history
            .containers
            .iter()
            .filter(|c| c.run == run.id && c.epoch == first)
            .all(|c| c.stopped.is_some_and(|at| at <= fenced_by)),
        "the cut-off worker's container outlived its lease: cut at {cut}, {:?}",
        history.containers
    );
    // Healed, the late worker changed nothing.
    let after = history
        .runs
        .iter()
        .find(|r| r.id == run.id)
        .ok_or_else(|| anyhow::anyhow!("run {} is gone", run.id))?;
    anyhow::ensure!(
        after.state == ended.state && after.attempts == ended.attempts,
        "the run changed after healing: {ended:?} → {after:?}"
    );
    Ok(())
}

/// Scenario 7: the worker dies for good mid-run (the process SIGKILLed and
/// its containers gone, as when its host is lost): the run is `lost` within
/// lease + grace and retried on the other worker, never both at once.
pub(super) async fn worker_lost_for_good_mid_run(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let (client, recorder, containers, run) = container_running(cluster, "doomed", "outlives", 4).await?;
    cluster.start_worker(WorkerSettings::new("survivor", "docker"))?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
    cluster.worker("doomed")?.process.kill()?;
    crate::docker::remove_worker_containers("doomed");
    let died = now_nanos();
    let ended = wait_ended(&client, &run.id, Duration::from_secs(120)).await?;
    anyhow::ensure!(
        ended.state() == pb::RunState::Succeeded
            && ended.attempts.len() == 2
            && ended.attempts[0].outcome == "lost"
            && ended.attempts[1].worker == "survivor",
        "lost on the dead worker, then run on the other: {ended:?}"
    );
    reassigned_after_lease_and_grace(&ended, died, LEASE_AND_GRACE, HEARTBEAT)?;
    let history = collect(
        cluster,
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
}

/// Scenario 13: the worker reaches the cluster through a proxy that delays
/// every chunk (0–600 ms, changing) and drops every connection now and
/// then, for a while, while cron slots fire and a chatty job streams its
/// output. Heartbeats still arrive within the lease, so no attempt may be
/// declared lost; every slot has its record, every line of output arrives
/// once.
pub(super) async fn lossy_slow_links_between_workers_and_servers(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let proxy = crate::proxy::Proxy::start(&cluster.addr(leader)?).await?;
    let mut wobbly = WorkerSettings::new("wobbly", "exec");
    wobbly.servers = Some(vec![proxy.addr.clone()]);
    cluster.start_worker(wobbly)?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    let specs = SpecFile::parse_yaml(
        "name: every-two\nschedule: { cron: '*/2 * * * * *' }\nconcurrency: forbid\n\
         task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT'] }\n\
         ---\nname: chatty\n\
         task: { driver: exec, command: [sh, -c, 'for i in $(seq 1 40); do echo line $i; sleep 0.2; done'] }\n",
    )?;
    for spec in &specs {
        recorder.apply_job(&client, kept(spec)).await?;
    }
    let from = now_nanos();
    let mut chatty = Vec::new();
    let faults_until = std::time::Instant::now() + Duration::from_millis(rng.random_range(15_000..25_000));
    let mut round = 0;
    while std::time::Instant::now() < faults_until {
        round += 1;
        if round % 4 == 1 {
            chatty.push(
                recorder
                    .trigger(&client, "chatty", &format!("chatty-{round}"))
                    .await?
                    .id,
            );
        }
        proxy.set_delay(Duration::from_millis(rng.random_range(0..600)));
        if rng.random_bool(0.3) {
            proxy.reset_connections();
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
    }
    proxy.set_delay(Duration::ZERO);
    for id in &chatty {
        wait_ended(&client, id, Duration::from_secs(90)).await?;
    }
    let history = super::collect_every_two(cluster, &client, &recorder, from).await?;
    let lost: Vec<(&str, &str)> = history
        .runs
        .iter()
        .flat_map(|r| r.attempts.iter().map(move |a| (r.id.as_str(), a.outcome.as_str())))
        .filter(|(_, outcome)| *outcome == "lost")
        .collect();
    anyhow::ensure!(
        lost.is_empty(),
        "seed {seed}: attempts declared lost while heartbeats arrived: {lost:?}"
    );
    for id in &chatty {
        let log = String::from_utf8_lossy(history.logs.get(id).map_or(&[][..], Vec::as_slice)).into_owned();
        let whole = (1..=40).all(|i| log.matches(&format!("line {i}\n")).count() == 1);
        anyhow::ensure!(whole, "seed {seed}: run {id}'s output must arrive whole, once: {log:?}");
    }
    verdict(&history, seed)
}
