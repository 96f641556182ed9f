//! Scenario 12: one server's wall clock jumps forward and back by ten
//! minutes (libfaketime; monotonic clocks, which leases and elections use,
//! stay true).
//!
//! What rota promises here (docs/architecture.md, "Clocks"): the leader's
//! wall clock is the schedule's clock. A leader whose clock jumps forward
//! handles the slots it jumped over at once — each exactly once, as a run
//! or within a `missed` record, by the catch-up policy — and a clock that
//! goes back never fires a slot again: the replicated cursor only moves
//! forward. Leases are measured on monotonic clocks, so no worker is
//! declared lost by a jump.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::SpecFile;

use super::{LEASE_AND_GRACE, SECOND, kept, wait_slots_handled};
use crate::oracle::Outcome;
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};
use crate::{Cluster, WorkerSettings, wait_for};

/// Ten minutes.
const JUMP: i64 = 600;

/// Scenario 12: the leader's clock jumps ten minutes ahead for a few
/// seconds, then back; then a follower's clock goes ten minutes behind and
/// it is made the leader, then its clock is set right. Triggers go on
/// throughout. Every slot from the start to ten minutes past the forward
/// jump has exactly one record; no attempt is lost; triggers stay one run
/// each.
pub(super) async fn clock_jumps_forward_and_back_on_one_server(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    cluster.start_worker(WorkerSettings::new("steady", "exec"))?;
    let client = cluster.client()?;
    let recorder = Recorder::default();
    // `allow`: attempt times are stamped by skewed clocks, so overlap cannot
    // be judged from them here (G3 has its own scenarios).
    let specs = SpecFile::parse_yaml(
        "name: every-two\nschedule: { cron: '*/2 * * * * *' }\n\
         task: { driver: exec, command: [sh, -c, 'echo slot $ROTA_SCHEDULED_AT'] }\n\
         ---\nname: manual\ntask: { driver: exec, command: [sh, -c, 'echo manual'] }\n",
    )?;
    for spec in &specs {
        recorder.apply_job(&client, kept(spec)).await?;
    }
    let from = now_nanos();
    wait_slots_handled(&client, "every-two", from + 2 * SECOND, 2 * SECOND).await?;
    let mut trigger = 0;
    let mut triggers = async |recorder: &Recorder| -> anyhow::Result<()> {
        for _ in 0..3 {
            trigger += 1;
            recorder.trigger(&client, "manual", &format!("t{trigger}")).await?;
        }
        Ok(())
    };

    // The leader runs ten minutes ahead for a while.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let jumped = now_nanos();
    cluster.set_clock_offset(leader, JUMP)?;
    let ahead = jumped + i128::from(JUMP) * SECOND;
    wait_slots_handled(&client, "every-two", ahead, 2 * SECOND).await?;
    triggers(&recorder).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
    cluster.set_clock_offset(leader, 0)?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
    triggers(&recorder).await?;

    // A follower runs ten minutes behind and leads.
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap_or(leader);
    cluster.set_clock_offset(follower, -JUMP)?;
    wait_for("the slow follower to lead", Duration::from_secs(60), || async {
        // A transfer to a follower still catching up is refused: retried.
        let _ = client.transfer_leadership(follower).await;
        let leader = cluster
            .wait_for_leader_among(&cluster.ids(), Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        Ok((leader == follower).then_some(()))
    })
    .await?;
    triggers(&recorder).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
    cluster.set_clock_offset(follower, 0)?;
    triggers(&recorder).await?;

    let history = collect(
        cluster,
        &recorder,
        None,
        Expectations {
            slots: vec![("every-two".into(), from, ahead)],
            lease_and_grace: LEASE_AND_GRACE,
            ..Expectations::default()
        },
    )
    .await?;
    let lost: Vec<&str> = history
        .runs
        .iter()
        .filter(|r| r.attempts.iter().any(|a| a.outcome == "lost"))
        .map(|r| r.id.as_str())
        .collect();
    anyhow::ensure!(lost.is_empty(), "seed {seed}: runs lost to a clock jump: {lost:?}");
    let acknowledged = history.ops.iter().filter(|op| op.outcome == Outcome::Ok).count();
    anyhow::ensure!(acknowledged >= 12, "the triggers were acknowledged: {:?}", history.ops);
    verdict(&history, seed)
}
