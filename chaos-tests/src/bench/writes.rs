//! Durable replicated writes: job creations on a 3-server rota cluster
//! against puts of the same payload size on a 3-member etcd, each at 1, 16
//! and 64 concurrent clients, measured alternately on the same machine.
//! A write counts when its answer arrived, i.e. when a quorum has fsynced
//! it (both systems answer only then).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::json;

use super::etcd::Etcd;
use super::{Latencies, Options, Row};

/// The result of one load: operations done, their latencies, failures.
struct Load {
    done: u64,
    errors: u64,
    latencies: Latencies,
    elapsed: Duration,
}

impl Load {
    fn row(&self, name: String) -> Row {
        Row {
            name,
            per_second: self.done as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50: self.latencies.quantile(0.5),
            p99: self.latencies.quantile(0.99),
            errors: self.errors,
        }
    }
}

/// Runs `op(client, sequence)` from `clients` tasks until `duration` has
/// passed; each task waits for its answer before the next (closed loop).
async fn load<F, Fut>(clients: usize, duration: Duration, op: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let (mut done, mut errors) = (0u64, 0u64);
                let mut sequence = 0u64;
                while Instant::now() < deadline {
                    let at = Instant::now();
                    match op(client, sequence).await {
                        Ok(()) => {
                            latencies.push(at.elapsed());
                            done += 1;
                        }
                        Err(_) => errors += 1,
                    }
                    sequence += 1;
                }
                (done, errors, latencies)
            })
        })
        .collect();
    let mut total = Load {
        done: 0,
        errors: 0,
        latencies: Latencies::default(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        if let Ok((done, errors, latencies)) = task.await {
            total.done += done;
            total.errors += errors;
            total.latencies.extend(latencies);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Runs the scenario: prints the table, returns the JSON report; fails if a
/// measurement completed nothing.
pub async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    // Straight to the leader, as etcd's client reaches its leader through
    // whichever member it dials (a rota follower would forward each call).
    let (cluster, rota) = super::runs::leader_cluster().await?;
    let etcd = Etcd::start().await?;
    let kv = etcd_client::Client::connect(&etcd.endpoints, None).await?;
    let payload = crate::job_spec("payload-size-reference").encode_to_vec();
    let mut rows = Vec::new();
    let mut report = Vec::new();
    for (round, &clients) in options.clients.iter().enumerate() {
        let client = rota.clone();
        let before = super::server_metrics(&cluster).await?;
        let rota_load = load(clients, options.duration, move |task, i| {
            let client = client.clone();
            async move {
                let name = format!("w{round}-{task}-{i}");
                client
                    .create_job(crate::job_spec(&name))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let after = super::server_metrics(&cluster).await?;
        let where_time_went = json!({
            "raft_log_append_ms": after.histogram_means(&before, "rota_raft_log_append_seconds", 1000.0),
            "raft_log_append_entries": after.histogram_means(&before, "rota_raft_log_append_entries", 1.0),
            "proposals_per_entry": after.histogram_means(&before, "rota_raft_proposals_per_entry", 1.0),
            "raft_apply_ms": after.histogram_means(&before, "rota_raft_apply_seconds", 1000.0),
            "raft_apply_entries": after.histogram_means(&before, "rota_raft_apply_entries", 1.0),
            "api_request_ms": after.histogram_means(&before, "rota_api_request_duration_seconds", 1000.0),
        });
        let value = payload.clone();
        let etcd_client = kv.clone();
        let etcd_load = load(clients, options.duration, move |task, i| {
            let mut kv = etcd_client.clone();
            let value = value.clone();
            async move {
                kv.put(format!("w{round}-{task}-{i}"), value, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let rota_row = rota_load.row(format!("rota, {clients} clients"));
        let etcd_row = etcd_load.row(format!("etcd, {clients} clients"));
        let ratio = rota_row.per_second / etcd_row.per_second.max(1e-9);
        report.push(json!({
            "clients": clients,
            "rota": rota_row.to_json(),
            "rota_servers": where_time_went,
            "etcd": etcd_row.to_json(),
            "ratio_rota_to_etcd": (ratio * 100.0).round() / 100.0,
        }));
        rows.push(rota_row);
        rows.push(etcd_row);
    }
    super::print_table(
        "writes: durable replicated writes (rota job creations vs etcd puts)",
        &rows,
    );
    if let Some(row) = rows.iter().find(|row| row.per_second <= 0.0) {
        anyhow::bail!("{}: no write completed", row.name);
    }
    let report = json!({
        "scenario": "writes",
        "payload_bytes": payload.len(),
        "seconds_each": options.duration.as_secs_f64(),
        "etcd_pids": etcd.pids(),
        "results": report,
    });
    Ok(report)
}
