//! Trigger lateness at scale: `jobs` jobs whose slots are spread evenly
//! over every second of a period (minutely: job i fires at second i mod 60
//! of each minute), exec workers running them; over a window of whole
//! periods, how late each slot's run was created (the leader's stamp) and
//! committed (seen through `WatchRuns`) after its nominal time, and how
//! many slots had no run (missed) or more than one (duplicated). Both
//! counts must be zero.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rota_client::proto as pb;
use serde_json::json;

use super::Latencies;
use super::runs::{RunWatch, create_jobs, leader_cluster, start_exec_workers, true_job, wait_for_workers};

/// The size of a lateness run.
#[derive(Debug, Clone)]
pub struct Size {
    /// Jobs.
    pub jobs: usize,
    /// Seconds between a job's slots (60: minutely; must divide 60).
    pub period: u64,
    /// Length of the measured window (rounded up to whole periods).
    pub window: Duration,
}

fn cron(offset: u64, period: u64) -> String {
    if period == 60 {
        format!("{offset} * * * * *")
    } else {
        format!("{offset}-59/{period} * * * * *")
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs the scenario: prints the table, returns the JSON report.
pub async fn run(size: &Size) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        size.period > 0 && 60 % size.period == 0,
        "period {}s must divide a minute",
        size.period
    );
    let (mut cluster, client) = leader_cluster().await?;
    let workers = 4;
    start_exec_workers(&mut cluster, "late", workers, 64)?;
    wait_for_workers(&client, workers).await?;
    let watch = RunWatch::start(&client).await?;
    let specs = (0..size.jobs)
        .map(|i| {
            let schedule = pb::Schedule {
                kind: Some(pb::schedule::Kind::Cron(cron(i as u64 % size.period, size.period))),
                timezone: "UTC".to_owned(),
                ..Default::default()
            };
            true_job(&format!("late-{i}"), Some(schedule), 20)
        })
        .collect();
    let creating = std::time::Instant::now();
    create_jobs(&client, specs, 16).await?;
    let created_in = creating.elapsed();

    // The window: whole periods, starting at the first period boundary at
    // least 5 s from now (every job exists and has settled by then).
    let periods = size.window.as_secs().div_ceil(size.period).max(1);
    let start = (unix_seconds(SystemTime::now()) + 5).div_ceil(size.period) * size.period;
    let end = start + periods * size.period;
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    println!(
        "lateness: {} jobs created in {created_in:?}; measuring slots from {start} to {end} (unix seconds)",
        size.jobs
    );
    // Slots of the window's last second are due at `end - 1`; allow time
    // for them to be created and committed.
    let settle = at(end) + Duration::from_secs(15);
    while SystemTime::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let expected: HashSet<(String, u64)> = (start..end)
        .flat_map(|t| {
            (0..size.jobs)
                .filter(move |i| *i as u64 % size.period == t % size.period)
                .map(move |i| (format!("late-{i}"), t))
        })
        .collect();
    let mut per_slot: HashMap<(String, u64), usize> = HashMap::new();
    let (mut fired, mut committed) = (Latencies::default(), Latencies::default());
    let mut not_run = 0;
    for seen in watch.seen().into_values() {
        let Some(nominal) = seen.nominal else { continue };
        let slot = unix_seconds(nominal);
        if !(start..end).contains(&slot) || !seen.job.starts_with("late-") {
            continue;
        }
        *per_slot.entry((seen.job.clone(), slot)).or_default() += 1;
        if let Some((_, state)) = seen.finished
            && matches!(state, pb::RunState::Missed | pb::RunState::Skipped)
        {
            not_run += 1;
        }
        if let Some(created_at) = seen.created_at {
            fired.push(created_at.duration_since(nominal).unwrap_or_default());
        }
        committed.push(seen.created.duration_since(nominal).unwrap_or_default());
    }
    let missed = expected.iter().filter(|slot| !per_slot.contains_key(*slot)).count() + not_run;
    let duplicated: usize = per_slot.values().map(|n| n.saturating_sub(1)).sum();
    let unexpected = per_slot.keys().filter(|slot| !expected.contains(*slot)).count();
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    println!(
        "\nlateness: {} jobs, one slot each every {}s, {} slots in the window",
        size.jobs,
        size.period,
        expected.len()
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10}",
        "after slot", "p50 ms", "p99 ms", "max ms"
    );
    for (name, l) in [("created", &fired), ("committed", &committed)] {
        println!(
            "{name:<12} {:>10.1} {:>10.1} {:>10.1}",
            ms(l.quantile(0.5)),
            ms(l.quantile(0.99)),
            ms(l.quantile(1.0))
        );
    }
    println!("missed {missed}, duplicated {duplicated}, runs outside the expected slots {unexpected}");
    let summary = |l: &Latencies| json!({"p50_ms": ms(l.quantile(0.5)), "p99_ms": ms(l.quantile(0.99)), "max_ms": ms(l.quantile(1.0))});
    let report = json!({
        "scenario": "lateness",
        "jobs": size.jobs,
        "period_seconds": size.period,
        "window": {"start": start, "end": end},
        "slots": expected.len(),
        "runs": per_slot.values().sum::<usize>(),
        "created_after_slot": summary(&fired),
        "committed_after_slot": summary(&committed),
        "missed": missed,
        "duplicated": duplicated,
        "unexpected": unexpected,
    });
    anyhow::ensure!(
        missed == 0 && duplicated == 0 && unexpected == 0,
        "slots not run exactly once: {report}"
    );
    Ok(report)
}
