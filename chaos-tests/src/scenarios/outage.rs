//! Scenarios where servers go down: the whole cluster across cron slots (9).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::{SpecFile, proto as pb};

use super::{LEASE_AND_GRACE, SECOND, kept, wait_slots_handled};
use crate::Cluster;
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};

/// Scenario 9: the whole cluster is down across many cron slots — longer
/// than the minute after which a slot counts as late — then restarted; one
/// job per catch-up policy. Every slot of the outage has exactly one record
/// — a run or a `missed` range — under each policy.
pub(super) async fn whole_cluster_down_across_cron_slots_under_each_catch_up_policy(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
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
        cluster,
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
        missed("catch-up-none") > 0 && missed("catch-up-latest") > 0 && missed("catch-up-all") == 0,
        "none and latest record the outage's slots as missed (latest runs the last one), all runs them: {:?}",
        history
            .runs
            .iter()
            .map(|r| (&r.job, r.state(), r.slot_count))
            .collect::<Vec<_>>()
    );
    verdict(&history, seed)
}
