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
            recorder.apply_job(&client, spec.to_proto()).await?;
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
            tokio::time::sleep(Duration::from_nanos(u64::try_from(kill_at - now).unwrap_or_default())).await;
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
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
}
