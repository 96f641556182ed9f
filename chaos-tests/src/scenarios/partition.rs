//! Network partitions between servers, through the harness's per-link
//! proxies: the leader isolated, then cut off one way, while clients talk
//! to both sides (2); a ring of overlapping majorities on five servers
//! under write load (3).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::{Client, ClientOptions, SpecFile};

use super::{LEASE_AND_GRACE, Load, SECOND, kept, wait_slots_handled};
use crate::oracle::Outcome;
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};
use crate::{Cluster, WorkerSettings};

/// The jobs of the partition scenarios: a `forbid` cron job every two
/// seconds and an on-demand job for triggers.
async fn partition_jobs(client: &Client, recorder: &Recorder) -> anyhow::Result<()> {
    let specs = SpecFile::parse_yaml(
        "name: every-two\nschedule: { cron: '*/2 * * * * *' }\nconcurrency: forbid\n\
         task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT'] }\n\
         ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual'] }\n",
    )?;
    for spec in &specs {
        recorder.apply_job(client, kept(spec)).await?;
    }
    Ok(())
}

/// A client of server `id` alone that gives up soon (a request to a
/// cut-off leader never gets an answer; its outcome is unknown).
fn impatient_client(cluster: &Cluster, id: u64) -> anyhow::Result<Client> {
    Ok(Client::with_options(
        [cluster.addr(id)?],
        ClientOptions {
            timeout: Duration::from_secs(2),
            max_attempts: 2,
            ..crate::test_client_options()
        },
    )?)
}

/// Reads the history of the partition scenarios and checks it: every
/// slot of `every-two` since `from` has one record, writes acknowledged on
/// either side stay, triggers are one run each, the servers converge; at
/// least `unknown_at_least` writes went unanswered (the fault was real).
async fn check(
    cluster: &Cluster,
    recorder: &Recorder,
    from: i128,
    unknown_at_least: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let until = now_nanos();
    wait_slots_handled(&client, "every-two", until, 2 * SECOND).await?;
    let history = collect(
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
    .await?;
    let count = |outcome| history.ops.iter().filter(|op| op.outcome == outcome).count();
    anyhow::ensure!(count(Outcome::Ok) > 5, "writes were acknowledged: {:?}", history.ops);
    anyhow::ensure!(
        count(Outcome::Unknown) >= unknown_at_least,
        "writes to a cut-off leader went unanswered: {:?}",
        history.ops
    );
    anyhow::ensure!(
        history.servers.len() == cluster.running_ids().len(),
        "every server answers after healing: {:?}",
        history.servers.keys()
    );
    verdict(&history, seed)
}

/// Scenario 2: the leader is isolated from both followers while one client
/// writes through it (its writes never come back: unknown) and another
/// through the majority; healed, then the new leader is cut off one way
/// (it cannot send, it still receives); healed again.
pub(super) async fn leader_isolated_while_clients_talk_to_both_sides(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    cluster.start_worker(WorkerSettings::new("steady", "exec"))?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    partition_jobs(&client, &recorder).await?;
    let from = now_nanos();
    let ids = cluster.ids();
    for round in 0..2 {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let others: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
        let minority = Load::start(&impatient_client(cluster, leader)?, &recorder, &format!("old-{round}"));
        let majority = Load::start(&cluster.client_for(others[0])?, &recorder, &format!("new-{round}"));
        if round == 0 {
            cluster.partition(&[&[leader], &others])?;
        } else {
            // One way: nothing the leader sends arrives; the others reach it.
            cluster.connect_only(|from, _| from != leader)?;
        }
        cluster.wait_for_leader_among(&others, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        cluster.heal();
        minority.stop().await?;
        majority.stop().await?;
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    check(cluster, &recorder, from, 1, seed).await
}

/// Scenario 3: five servers in a ring — each reaches only its two
/// neighbours, so every server sees a majority (itself and two others) and
/// no two majorities agree on who leads — under write load, then healed.
pub(super) async fn ring_of_overlapping_majorities_under_write_load(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    cluster.start_worker(WorkerSettings::new("steady", "exec"))?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    partition_jobs(&client, &recorder).await?;
    let from = now_nanos();
    let load = Load::start(&client, &recorder, "ring");
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    let size = u64::try_from(cluster.ids().len())?;
    // Ids are 1..=size; neighbours differ by one, modulo the ring.
    cluster.connect_only(|from, to| {
        let distance = (from + size - to) % size;
        distance == 1 || distance == size - 1
    })?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(6000..10_000))).await;
    cluster.heal();
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    load.stop().await?;
    check(cluster, &recorder, from, 0, seed).await
}
