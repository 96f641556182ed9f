//! G2 across failovers: with the leader SIGKILLed every few seconds, every
//! slot of an `every: 1s` job still yields exactly one record — none doubled,
//! none missing — and missed ones say why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rota_chaos::{Cluster, ServerSettings, wait_for};
use rota_client::proto as pb;
use rota_client::{Consistency, SpecFile};

fn nanos(ts: &Option<prost_types::Timestamp>) -> i128 {
    ts.as_ref()
        .map_or(0, |t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

const SECOND: i128 = 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_has_exactly_one_record_while_the_leader_is_killed_repeatedly() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let result: anyhow::Result<()> = async {
        let client = cluster.client()?;
        // Two jobs: runs of the first wait (no workers); the second's runs and
        // late slots are missed after 2 s, so missed records are made, each
        // with its reason.
        let specs = SpecFile::parse_yaml(
            "name: every-second\nschedule: { every: 1s }\nconcurrency: allow\ntask: { driver: exec, command: [\"true\"] }\n\
             ---\nname: strict\nschedule: { every: 1s, starting_deadline: 2s }\nhistory: { keep_failed: 10000 }\n\
             task: { driver: exec, command: [\"true\"] }\n",
        )?;
        let mut anchors = Vec::new();
        for spec in &specs {
            let job = client.create_job(spec.to_proto()).await?;
            anchors.push((job.name.clone(), nanos(&job.created_at)));
        }

        // Kill the leader every few seconds for 30 s; bring it back each time
        // once the others have elected a new one.
        let window = Instant::now() + Duration::from_secs(30);
        let mut kills = 0;
        let filter = pb::ListRunsRequest {
            job: "every-second".into(),
            ..Default::default()
        };
        while Instant::now() < window {
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
            // Let the new leader fire a couple of slots before the next kill.
            let before = client.list_runs(&filter).await?.len();
            wait_for("the leader to fire two more slots", Duration::from_secs(30), || async {
                let now = client.list_runs(&filter).await.map_err(|e| e.to_string())?.len();
                Ok((now >= before + 2).then_some(()))
            })
            .await?;
            cluster.kill(leader)?;
            kills += 1;
            let next = cluster.wait_for_leader(Duration::from_secs(30)).await?;
            anyhow::ensure!(next != leader);
            cluster.restart(leader)?;
        }
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let end_of_window = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?).as_nanos() as i128;

        let mut missed_records = 0;
        for (name, anchor) in &anchors {
            let (checked, missed) = check_job(&cluster, &client, name, *anchor, end_of_window).await?;
            anyhow::ensure!(checked >= 30, "{name}: only {checked} slots checked");
            eprintln!("{name}: {checked} slots checked across {kills} leader kills: each has exactly one record ({missed} missed records)");
            missed_records += missed;
        }
        anyhow::ensure!(kills >= 3, "only {kills} leader kills in the window");
        anyhow::ensure!(missed_records > 0, "the strict job made no missed records");
        let _ = client.get_job("every-second", Consistency::Linearizable).await?;
        Ok(())
    }
    .await;
    cluster.settle(result);
}

/// Checks that every slot of job `name` from its anchor to `end_of_window`
/// has exactly one record, on every server; returns the slots checked and the
/// missed records seen.
async fn check_job(
    cluster: &Cluster,
    client: &rota_client::Client,
    name: &str,
    anchor: i128,
    end_of_window: i128,
) -> anyhow::Result<(usize, usize)> {
    let filter = pb::ListRunsRequest {
        job: name.to_owned(),
        ..Default::default()
    };
    // Wait until the schedule has moved past the window.
    let runs = wait_for(
        "records past the end of the window",
        Duration::from_secs(30),
        || async {
            let runs = client.list_runs(&filter).await.map_err(|e| e.to_string())?;
            let latest = runs
                .iter()
                .map(|r| nanos(&r.nominal_time).max(nanos(&r.last_nominal_time)))
                .max();
            Ok(latest.filter(|l| *l > end_of_window).map(|_| runs))
        },
    )
    .await?;

    // Every slot anchor + k s up to the end of the window: exactly one record.
    let mut coverage: BTreeMap<i128, Vec<String>> = BTreeMap::new();
    let mut missed_records = 0;
    for run in runs.iter().filter(|r| r.cause == "scheduled") {
        let first = nanos(&run.nominal_time);
        let last = if run.slot_count > 1 {
            nanos(&run.last_nominal_time)
        } else {
            first
        };
        anyhow::ensure!((first - anchor) % SECOND == 0, "run {} is off the 1 s grid", run.id);
        let mut slot = first;
        while slot <= last {
            coverage.entry(slot).or_default().push(run.id.clone());
            slot += SECOND;
        }
        if run.state == pb::RunState::Missed as i32 {
            missed_records += 1;
            anyhow::ensure!(
                !run.reason.is_empty() && !run.reason_code.is_empty(),
                "missed without a reason: {run:?}"
            );
        }
    }
    let mut slot = anchor + SECOND;
    let mut checked = 0;
    while slot <= end_of_window {
        match coverage.get(&slot).map(Vec::as_slice) {
            Some([_]) => {}
            Some(many) => anyhow::bail!("{name}: slot {slot} has {} records: {many:?}", many.len()),
            None => anyhow::bail!("{name}: slot {slot} has no record"),
        }
        checked += 1;
        slot += SECOND;
    }

    // Every server holds the same records (stale reads on each node).
    let expected: Vec<String> = runs
        .iter()
        .filter(|r| r.cause == "scheduled" && nanos(&r.nominal_time) <= end_of_window)
        .map(|r| r.id.clone())
        .collect();
    let stale = pb::ListRunsRequest {
        consistency: pb::ReadConsistency::Stale as i32,
        ..filter.clone()
    };
    for id in cluster.ids() {
        let local = cluster.client_for(id)?;
        wait_for("each server to hold every record", Duration::from_secs(15), || async {
            let here = local.list_runs(&stale).await.map_err(|e| e.to_string())?;
            let ids: std::collections::HashSet<&str> = here.iter().map(|r| r.id.as_str()).collect();
            Ok(expected.iter().all(|id| ids.contains(id.as_str())).then_some(()))
        })
        .await?;
    }
    Ok((checked, missed_records))
}
