//! Footprint: the resident memory of an idle server and an idle worker (a
//! 3-server cluster, one exec worker, nothing scheduled), read from
//! `/proc/PID/status` after they have settled.

use std::time::Duration;

use serde_json::json;

use crate::{Cluster, ServerSettings, WorkerSettings, wait_for};

/// The value of `key` (in kB) in a /proc file such as /proc/meminfo, in bytes.
fn proc_kib(path: &str, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    let kib = text
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no {key} in {path}"))?;
    Ok(kib * 1024)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn available_memory() -> anyhow::Result<u64> {
    proc_kib("/proc/meminfo", "MemAvailable:")
}

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
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

/// A backup file holding `jobs` jobs with `runs_per_job` finished
/// (cancelled) runs each, built in this process by applying real commands
/// to the server's own state machine code — far faster than proposing
/// millions of writes, and the same rows a cluster would hold.
pub fn history_backup(jobs: usize, runs_per_job: usize) -> anyhow::Result<Vec<u8>> {
    use rota_server::state::{Command, Op, State};
    let mut state = State::default();
    let now = chrono::Utc::now();
    let mut index = 0u64;
    let mut apply = |state: &mut State, op: Op| -> anyhow::Result<rota_server::state::Response> {
        index += 1;
        state
            .apply(index, &Command { now, op })
            .map_err(|e| anyhow::anyhow!("applying at {index}: {e}"))
    };
    for j in 0..jobs {
        let mut proto = crate::job_spec(&format!("history-{j}"));
        proto.history = Some(rota_client::proto::HistoryPolicy {
            keep_failed: Some(u32::try_from(runs_per_job).unwrap_or(u32::MAX).max(1)),
            ..Default::default()
        });
        let spec = rota_server::spec::validate(&proto).map_err(|e| anyhow::anyhow!("{e}"))?;
        apply(
            &mut state,
            Op::CreateJob {
                uid: format!("{j:08x}-0000-4000-8000-000000000000"),
                spec,
            },
        )?;
        for r in 0..runs_per_job {
            let triggered = apply(
                &mut state,
                Op::TriggerRun {
                    job: format!("history-{j}"),
                    request_id: format!("{j}-{r}"),
                    params: Default::default(),
                    force: false,
                    trace: None,
                },
            )?;
            let rota_server::state::Response::Triggered { run, .. } = triggered else {
                anyhow::bail!("a trigger answered {triggered:?}");
            };
            apply(&mut state, Op::CancelRun { run: run.record.id })?;
        }
        // Keep memory flat: the changes are read from `rows` below.
        state.take_changes()?;
    }
    let rows = state.rows().collect::<Result<Vec<_>, _>>()?;
    let data = rota_server::store::snapshot::encode_rows(rows)?;
    let last = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
    let meta = rota_server::raft::SnapshotMeta {
        last_log_id: Some(last),
        last_membership: Default::default(),
        snapshot_id: "rota-bench-history".to_owned(),
    };
    rota_server::store::backup::encode(&meta, &data).map_err(|e| anyhow::anyhow!(e))
}

/// Until every server of `cluster` serves a linearizable read of `job`.
async fn until_serving(cluster: &Cluster, job: &str) -> anyhow::Result<()> {
    cluster.wait_for_leader(Duration::from_secs(600)).await?;
    let client = cluster.client()?;
    wait_for("a linearizable read", Duration::from_secs(600), || async {
        Ok(client
            .get_job(job, rota_client::Consistency::Linearizable)
            .await
            .is_ok()
            .then_some(()))
    })
    .await
}

/// Server RSS with `jobs` jobs and `jobs * runs_per_job` runs of history,
/// and the time from starting (restoring the backup) and from restarting
/// every server (SIGKILL) until the cluster serves a linearizable read; a
/// cluster of `servers` (3, or 1 to time one server's load without others
/// sharing the machine's cores).
pub async fn with_history(jobs: usize, runs_per_job: usize, servers: u64) -> anyhow::Result<serde_json::Value> {
    let building = std::time::Instant::now();
    let file = history_backup(jobs, runs_per_job)?;
    let built_in = building.elapsed();
    // Restoring holds the file (its snapshot data), the state decoded from
    // it and sled's pages at once: about 3.5 times the file per server at
    // the peak (measured: 1.64 GB for a 468 MiB backup). Refuse rather than
    // let the kernel kill processes.
    let need = file.len() as u64 * 4 * servers;
    let available = available_memory()?;
    anyhow::ensure!(
        need < available,
        "restoring a {:.0} MiB backup on {servers} server(s) needs about {:.1} GiB; this machine has {:.1} GiB available. Pass fewer --jobs or --runs.",
        file.len() as f64 / (1 << 20) as f64,
        need as f64 / (1u64 << 30) as f64,
        available as f64 / (1u64 << 30) as f64
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.rota");
    std::fs::write(&path, &file)?;
    println!(
        "footprint: a backup of {jobs} jobs and {} runs ({:.1} MiB) built in {built_in:?}",
        jobs * runs_per_job,
        file.len() as f64 / (1024.0 * 1024.0)
    );
    let settings = ServerSettings {
        env: vec![("ROTA_RESTORE_FROM".into(), path.display().to_string())],
        start_timeout: Duration::from_secs(900),
        ..ServerSettings::default()
    };
    let started = std::time::Instant::now();
    let mut cluster = Cluster::start(servers, settings).await?;
    until_serving(&cluster, "history-0").await?;
    let restore_to_serving = started.elapsed();
    let rss_of = |cluster: &Cluster| -> anyhow::Result<Vec<u64>> {
        cluster
            .ids()
            .into_iter()
            .map(|id| {
                let pid = cluster
                    .server(id)?
                    .process
                    .pid()
                    .ok_or_else(|| anyhow::anyhow!("server {id} is down"))?;
                rss(pid)
            })
            .collect()
    };
    let after_restore = rss_of(&cluster)?;
    // Twice: the first start after a restore also finishes what the restore
    // left to sled (splitting the nodes it wrote, replaying its log since
    // sled's last snapshot); the second is a restart of a settled store.
    let mut restart_to_serving = Vec::new();
    for _ in 0..2 {
        for id in cluster.ids() {
            cluster.kill(id)?;
        }
        let restarting = std::time::Instant::now();
        for id in cluster.ids() {
            cluster.restart(id)?;
        }
        until_serving(&cluster, "history-0").await?;
        restart_to_serving.push(restarting.elapsed());
    }
    let after_restart = rss_of(&cluster)?;
    let mib = |bytes: &u64| *bytes as f64 / (1024.0 * 1024.0);
    println!(
        "footprint with {jobs} jobs and {} runs of history, {servers} server(s):",
        jobs * runs_per_job
    );
    println!("  restore to serving  {restore_to_serving:?}");
    println!(
        "  restart to serving  {:?} then {:?} (every server SIGKILLed and started, twice)",
        restart_to_serving[0], restart_to_serving[1]
    );
    println!(
        "  server RSS after restore {:?} MiB, after restart {:?} MiB",
        after_restore.iter().map(|b| mib(b).round()).collect::<Vec<_>>(),
        after_restart.iter().map(|b| mib(b).round()).collect::<Vec<_>>()
    );
    Ok(json!({
        "jobs": jobs,
        "runs": jobs * runs_per_job,
        "servers": servers,
        "backup_bytes": file.len(),
        "restore_to_serving_seconds": restore_to_serving.as_secs_f64(),
        "restart_to_serving_seconds": restart_to_serving.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
        "server_rss_bytes_after_restore": after_restore,
        "server_rss_bytes_after_restart": after_restart,
    }))
}
