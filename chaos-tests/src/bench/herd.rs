//! A thundering herd: `jobs` jobs on the same cron slot (a 6-field
//! expression for one second a little ahead), exec workers with a slot for
//! each; how long after the slot every run is committed, assigned and
//! finished, as seen through `WatchRuns`.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use rota_client::proto as pb;
use serde_json::json;

use super::Latencies;
use super::runs::{
    RunWatch, create_jobs, leader_cluster, millis_between, start_exec_workers, true_job, wait_for_workers,
};

/// Runs the scenario with `jobs` jobs: prints the table, returns the JSON report.
pub async fn run(jobs: usize) -> anyhow::Result<serde_json::Value> {
    let (mut cluster, client) = leader_cluster().await?;
    let workers = 4;
    let slots = u32::try_from(jobs.div_ceil(workers)).unwrap_or(1024).clamp(1, 1024);
    start_exec_workers(&mut cluster, "herd", workers, slots)?;
    wait_for_workers(&client, workers).await?;
    let watch = RunWatch::start(&client).await?;

    // The slot: a whole second far enough ahead for every job to exist.
    let lead = Duration::from_secs(8) + Duration::from_millis(5 * jobs as u64);
    let slot: DateTime<Utc> = DateTime::<Utc>::from(SystemTime::now() + lead)
        .with_nanosecond(0)
        .unwrap_or_else(Utc::now);
    let cron = format!("{} {} {} * * *", slot.second(), slot.minute(), slot.hour());
    let specs = (0..jobs)
        .map(|i| {
            let schedule = pb::Schedule {
                kind: Some(pb::schedule::Kind::Cron(cron.clone())),
                timezone: "UTC".to_owned(),
                ..Default::default()
            };
            true_job(&format!("herd-{i}"), Some(schedule), 20)
        })
        .collect();
    create_jobs(&client, specs, 16).await?;
    let slot_time = SystemTime::from(slot);
    anyhow::ensure!(
        SystemTime::now() < slot_time,
        "creating {jobs} jobs took past the slot {slot}; lengthen the lead"
    );
    let is_herd = |s: &super::runs::Seen| s.nominal == Some(slot_time) && s.job.starts_with("herd-");
    let timeout = lead + Duration::from_secs(60) + Duration::from_millis(20 * jobs as u64);
    watch
        .wait_until("herd runs finished", jobs, timeout, |s| {
            is_herd(s) && s.finished.is_some()
        })
        .await?;
    let seen: Vec<_> = watch.seen().into_values().filter(|s| is_herd(s)).collect();
    anyhow::ensure!(seen.len() == jobs, "{} runs for {jobs} jobs on one slot", seen.len());
    let failed = seen
        .iter()
        .filter(|s| s.finished.is_some_and(|(_, state)| state != pb::RunState::Succeeded))
        .count();
    let after_slot = |pick: &dyn Fn(&super::runs::Seen) -> Option<SystemTime>| {
        let mut latencies = Latencies::default();
        for s in &seen {
            if let Some(at) = pick(s) {
                latencies.push(Duration::from_secs_f64(millis_between(slot_time, at).max(0.0) / 1000.0));
            }
        }
        latencies
    };
    let committed = after_slot(&|s| Some(s.created));
    let assigned = after_slot(&|s| s.assigned);
    let finished = after_slot(&|s| s.finished.map(|(at, _)| at));
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    println!("\nherd: {jobs} jobs on one cron slot ({slot}), exec workers {workers}x{slots} slots");
    println!(
        "{:<12} {:>12} {:>12} {:>12}",
        "after slot", "p50 ms", "p99 ms", "all ms"
    );
    for (name, l) in [
        ("committed", &committed),
        ("assigned", &assigned),
        ("finished", &finished),
    ] {
        println!(
            "{name:<12} {:>12.1} {:>12.1} {:>12.1}",
            ms(l.quantile(0.5)),
            ms(l.quantile(0.99)),
            ms(l.quantile(1.0))
        );
    }
    anyhow::ensure!(failed == 0, "{failed} herd runs did not succeed");
    let summary = |l: &Latencies| json!({"p50_ms": ms(l.quantile(0.5)), "p99_ms": ms(l.quantile(0.99)), "all_ms": ms(l.quantile(1.0))});
    Ok(json!({
        "scenario": "herd",
        "jobs": jobs,
        "slot": slot.to_rfc3339(),
        "workers": workers,
        "slots_each": slots,
        "committed_after_slot": summary(&committed),
        "assigned_after_slot": summary(&assigned),
        "finished_after_slot": summary(&finished),
    }))
}
