//! Footprint: the resident memory of an idle server and an idle worker (a
//! 3-server cluster, one exec worker, nothing scheduled), read from
//! `/proc/PID/status` after they have settled.

use std::time::Duration;

use serde_json::json;

use crate::{Cluster, ServerSettings, WorkerSettings, wait_for};

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Runs the scenario: prints the table, returns the JSON report.
pub async fn run(settle: Duration) -> anyhow::Result<serde_json::Value> {
    let mut cluster = Cluster::start(3, ServerSettings::default()).await?;
    cluster.start_worker(WorkerSettings::new("bench-idle", "exec"))?;
    let client = cluster.client()?;
    wait_for("the worker to register", Duration::from_secs(30), || async {
        let workers = client
            .list_workers(rota_client::Consistency::Linearizable)
            .await
            .map_err(|e| e.to_string())?;
        Ok((!workers.is_empty()).then_some(()))
    })
    .await?;
    tokio::time::sleep(settle).await;
    let mut servers = Vec::new();
    for id in cluster.ids() {
        let pid = cluster
            .server(id)?
            .process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("server {id} is not running"))?;
        servers.push(rss(pid)?);
    }
    let worker_pid = cluster
        .worker("bench-idle")?
        .process
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the worker is not running"))?;
    let worker = rss(worker_pid)?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "\nfootprint: idle resident memory after {}",
        humantime::format_duration(settle)
    );
    for (i, bytes) in servers.iter().enumerate() {
        println!("  server {}   {:>8.1} MiB", i + 1, mib(*bytes));
    }
    println!("  worker     {:>8.1} MiB", mib(worker));
    Ok(json!({
        "scenario": "footprint",
        "settle_seconds": settle.as_secs_f64(),
        "server_rss_bytes": servers,
        "worker_rss_bytes": worker,
    }))
}
