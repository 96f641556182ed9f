//! On-demand runs through the exec driver: `runs` triggers of jobs running
//! `true`, spread over `jobs` jobs, from 64 concurrent callers (fewer make
//! the triggers the limit), on 4 exec workers; runs/s from the first
//! trigger until every run is seen `Succeeded` (committed), each run's
//! latency from its trigger call to that moment, and where that time goes
//! (waiting for a slot, in a slot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::runs::{RunWatch, leader_cluster, start_exec_workers, true_job, wait_for_workers};
use super::{Latencies, Row};

/// The size of a throughput run.
#[derive(Debug, Clone)]
pub struct Size {
    /// Runs triggered in all.
    pub runs: usize,
    /// Jobs they are spread over.
    pub jobs: usize,
    /// Exec workers.
    pub workers: usize,
    /// Slots of each worker.
    pub slots: u32,
    /// Concurrent callers triggering runs.
    pub callers: usize,
}

impl Size {
    /// The default size, or the smoke size.
    pub fn new(smoke: bool) -> Size {
        if smoke {
            Size {
                runs: 40,
                jobs: 2,
                workers: 2,
                slots: 4,
                callers: 4,
            }
        } else {
            Size {
                runs: 4000,
                jobs: 50,
                workers: 4,
                slots: 32,
                callers: 64,
            }
        }
    }
}

/// Runs the scenario: prints the table, returns the JSON report.
pub async fn run(size: &Size) -> anyhow::Result<serde_json::Value> {
    let (mut cluster, client) = leader_cluster().await?;
    start_exec_workers(&mut cluster, "tp", size.workers, size.slots)?;
    wait_for_workers(&client, size.workers).await?;
    let per_job = size.runs.div_ceil(size.jobs.max(1));
    let keep = u32::try_from(per_job).unwrap_or(u32::MAX).clamp(20, 10_000);
    for j in 0..size.jobs {
        client.create_job(true_job(&format!("tp-{j}"), None, keep)).await?;
    }
    let watch = RunWatch::start(&client).await?;

    let submitted: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let began = SystemTime::now();
    let mut callers = Vec::new();
    for _ in 0..size.callers {
        let (client, submitted, next, size) = (client.clone(), submitted.clone(), next.clone(), size.clone());
        callers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= size.runs {
                    return anyhow::Ok(());
                }
                let at = SystemTime::now();
                let (run, _) = client
                    .trigger_run(&format!("tp-{}", i % size.jobs), None, Default::default(), false)
                    .await?;
                submitted
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(run.id, at);
            }
        }));
    }
    for caller in callers {
        caller.await??;
    }
    let triggered_in = started.elapsed();
    let ids: HashMap<String, SystemTime> = submitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let timeout = Duration::from_secs(60) + Duration::from_millis(50 * size.runs as u64);
    watch
        .wait_until("runs finished", ids.len(), timeout, |s| s.finished.is_some())
        .await?;
    let elapsed = started.elapsed();
    let seen = watch.seen();
    let mut latencies = Latencies::default();
    // Where a run's time goes: waiting for a slot (committed → seen
    // assigned) and in its slot (assigned → Succeeded committed).
    let (mut queued, mut in_slot) = (Latencies::default(), Latencies::default());
    let mut failed = 0;
    let mut last_finish = began;
    for (id, at) in &ids {
        let Some(run) = seen.get(id) else { continue };
        let Some((finished, state)) = run.finished else {
            continue;
        };
        if state != rota_client::proto::RunState::Succeeded {
            failed += 1;
        }
        last_finish = last_finish.max(finished);
        latencies.push(finished.duration_since(*at).unwrap_or_default());
        if let Some(assigned) = run.assigned {
            queued.push(assigned.duration_since(run.created).unwrap_or_default());
            in_slot.push(finished.duration_since(assigned).unwrap_or_default());
        }
    }
    let span = last_finish
        .duration_since(began)
        .unwrap_or(elapsed)
        .max(Duration::from_millis(1));
    let row = Row {
        name: format!("rota exec, {} workers", size.workers),
        per_second: ids.len() as f64 / span.as_secs_f64(),
        p50: latencies.quantile(0.5),
        p99: latencies.quantile(0.99),
        errors: failed,
    };
    super::print_table(
        "throughput: on-demand exec runs of `true`, trigger to Succeeded",
        std::slice::from_ref(&row),
    );
    let ms = |l: &Latencies, q: f64| (l.quantile(q).as_secs_f64() * 10_000.0).round() / 10.0;
    println!(
        "  waiting for a slot p50 {} ms, p99 {} ms; in a slot (assigned to Succeeded) p50 {} ms, p99 {} ms",
        ms(&queued, 0.5),
        ms(&queued, 0.99),
        ms(&in_slot, 0.5),
        ms(&in_slot, 0.99)
    );
    anyhow::ensure!(failed == 0, "{failed} runs did not succeed");
    Ok(json!({
        "scenario": "throughput",
        "runs": ids.len(),
        "jobs": size.jobs,
        "workers": size.workers,
        "slots_each": size.slots,
        "callers": size.callers,
        "triggers_per_second": (ids.len() as f64 / triggered_in.as_secs_f64() * 10.0).round() / 10.0,
        "seconds": span.as_secs_f64(),
        "queued_ms": { "p50": ms(&queued, 0.5), "p99": ms(&queued, 0.99) },
        "in_slot_ms": { "p50": ms(&in_slot, 0.5), "p99": ms(&in_slot, 0.99) },
        "result": row.to_json(),
    }))
}
