//! Scenarios about the leader: killed before cron slots (1), paused past
//! the election timeout (4), removed from the cluster under load (14).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::{SpecFile, proto as pb};

use super::{Answered, Common, LEASE_AND_GRACE, SECOND, kept, wait_slots_handled};
use crate::oracle::{Op, Outcome};
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};
use crate::{Cluster, WorkerSettings};

/// Scenario 1: the leader is SIGKILLed just before a cron slot (at a seeded
/// offset), three times, and restarted; meanwhile a client triggers runs
/// with request ids, retrying each through the failover. Every slot has one
/// record, no `forbid` attempts overlap, every acknowledged trigger has its
/// one run, the servers converge.
pub(super) async fn leader_killed_just_before_cron_slots(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    cluster.start_worker(WorkerSettings::new("steady", "exec"))?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    let spec = SpecFile::parse_yaml(
        "name: every-five\nschedule: { cron: '*/5 * * * * *' }\nconcurrency: forbid\n\
         task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT; sleep 6'] }\n\
         ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual $ROTA_RUN_ID'] }\n",
    )?;
    for spec in &spec {
        recorder.apply_job(&client, kept(spec)).await?;
    }
    let from = now_nanos();
    // A trigger the leader acts on but whose answer is lost (the proxy holds
    // replies back): unknown, retried at the end with its request id.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let proxy = crate::proxy::Proxy::start(&cluster.addr(leader)?).await?;
    let blind = rota_client::Client::with_options(
        [proxy.addr.clone()],
        rota_client::ClientOptions {
            timeout: Duration::from_secs(2),
            max_attempts: 1,
            ..crate::test_client_options()
        },
    )?;
    proxy.cut_replies();
    let lost = recorder.trigger(&blind, "manual", "answer-lost").await;
    anyhow::ensure!(lost.is_err(), "the answer was held back, yet it came: {lost:?}");
    proxy.restore();
    let mut triggers = 0;
    let mut last_slot = 0;
    for kill in 0..3 {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        // Wait until `offset` before the next 5 s boundary not yet killed
        // before (a fast failover can end before the slot it preceded),
        // then kill.
        let offset = rng.random_range(50..800) as i128 * 1_000_000;
        let now = now_nanos();
        let mut slot = (now / (5 * SECOND) + 1) * 5 * SECOND;
        while slot - offset <= now || slot <= last_slot {
            slot += 5 * SECOND;
        }
        last_slot = slot;
        let kill_at = slot - offset;
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
    // The window ends after the last slot a kill preceded (the failover may
    // have ended before it); wait until the cluster has handled the slots up
    // to then, then read the history.
    let until = now_nanos().max(last_slot + SECOND / 10);
    wait_slots_handled(&client, "every-five", until, 5 * SECOND).await?;
    recorder.retry_unknown_triggers(&client).await;
    let history = collect(
        cluster,
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
        history.expected_slots["every-five"].len() >= 3
            && history
                .runs
                .iter()
                .any(|r| r.job == "every-five" && r.state() == pb::RunState::Skipped),
        "the scenario spans slots, some skipped under forbid (tasks outlast the period): {:?}",
        history.expected_slots
    );
    let acknowledged = history
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && matches!(op.op, Op::Trigger { .. }))
        .count();
    anyhow::ensure!(acknowledged > 0, "no trigger was acknowledged: {:?}", history.ops);
    verdict(&history, seed)?;
    anyhow::ensure!(
        history.runs.iter().any(|r| r.request_id == "answer-lost"),
        "the trigger whose answer was lost made its run: {:?}",
        history.ops
    );
    Ok(())
}

/// Scenario 4: the leader is paused (SIGSTOP) past the election timeout
/// while triggers arrive, then resumed (SIGCONT), twice. The paused leader
/// wakes to a newer term and must not act on its old one.
pub(super) async fn leader_paused_past_the_election_timeout_then_resumed(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let common = Common::start(cluster).await?;
    for round in 0..2 {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        cluster.signal(leader, nix::sys::signal::Signal::SIGSTOP)?;
        for t in 0..2 {
            let _ = common
                .recorder
                .trigger(&common.client, "manual", &format!("p{round}-t{t}"))
                .await;
        }
        let others: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
        cluster.wait_for_leader_among(&others, Duration::from_secs(30)).await?;
        // Paused a while longer, while the new leader works.
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        cluster.signal(leader, nix::sys::signal::Signal::SIGCONT)?;
    }
    common
        .finish(
            cluster,
            Answered {
                acknowledged: 2,
                unanswered: 0,
                unanswered_prefix: "",
            },
            seed,
        )
        .await
}

/// Scenario 14: under a steady load of applies and triggers, a fourth
/// server joins, then the leader is removed from the cluster (and stopped).
/// Writes acknowledged across both membership changes stay, triggers stay
/// one run each, the slots of a cron job each have one record.
pub(super) async fn a_server_added_and_the_leader_removed_under_load(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let common = Common::start(cluster).await?.with_load("load");
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    let new = cluster.start_new_server()?;
    common.client.add_node(new, &cluster.addr(new)?, false).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    let members = common.client.remove_node(leader).await?;
    anyhow::ensure!(
        members.len() == 3 && members.iter().all(|m| m.node_id != leader),
        "{members:?}"
    );
    cluster.kill(leader)?;
    let rest: Vec<u64> = cluster.running_ids();
    cluster.wait_for_leader_among(&rest, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
    common
        .finish(
            cluster,
            Answered {
                acknowledged: 10,
                unanswered: 0,
                unanswered_prefix: "",
            },
            seed,
        )
        .await
}
