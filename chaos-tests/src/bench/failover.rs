//! Leader failover under load: 8 writers create jobs through the SDK
//! (retrying, as users do) while the leader is SIGKILLed, `rounds` times;
//! each time, how long until a write is accepted again, probed every 10 ms
//! at each surviving server with single-attempt calls. The killed server is
//! restarted and the cluster settles before the next round.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rota_client::{Client, ClientOptions};
use serde_json::json;

use super::{Latencies, Row};
use crate::{Cluster, ServerSettings};

/// A client of server `addr` alone that tries once, briefly.
fn probe_client(addr: &str) -> anyhow::Result<Client> {
    let options = ClientOptions {
        timeout: Duration::from_millis(500),
        max_attempts: 1,
        connect_timeout: Duration::from_millis(200),
        ..crate::test_client_options()
    };
    Ok(Client::with_options([addr], options)?)
}

/// When the survivors first named a new leader, and when a write was
/// accepted again.
struct Recovery {
    elected: Option<Instant>,
    accepted: Instant,
}

/// Probes the servers `addrs` every 10 ms until one accepts a write;
/// returns when, or fails after `timeout`. Notes when a survivor first
/// names a leader other than `old`.
async fn until_a_write_is_accepted(
    addrs: &[String],
    old: u64,
    round: usize,
    timeout: Duration,
) -> anyhow::Result<Recovery> {
    let clients = addrs
        .iter()
        .map(|a| probe_client(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let deadline = Instant::now() + timeout;
    let mut attempt = 0u64;
    let mut elected = None;
    loop {
        if elected.is_none() {
            for (client, addr) in clients.iter().zip(addrs) {
                if let Ok(status) = client.server_status(addr).await
                    && status.leader_id != 0
                    && status.leader_id != old
                {
                    elected = Some(Instant::now());
                }
            }
        }
        let probes = clients.iter().enumerate().map(|(n, client)| {
            let name = format!("probe-{round}-{attempt}-{n}");
            async move { client.create_job(crate::job_spec(&name)).await }
        });
        let results = futures::future::join_all(probes).await;
        if results.iter().any(Result::is_ok) {
            return Ok(Recovery {
                elected,
                accepted: Instant::now(),
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no write accepted within {timeout:?}: {results:?}"
        );
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Raft timing for the servers (`raft.heartbeat_interval`,
/// `raft.election_timeout_min`, `raft.election_timeout_max`).
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout, lower bound.
    pub election_min: Duration,
    /// Election timeout, upper bound (and leader lease).
    pub election_max: Duration,
}

impl RaftTiming {
    /// Parses `HEARTBEAT,MIN,MAX`, e.g. `100ms,250ms,500ms`.
    pub fn parse(text: &str) -> Result<RaftTiming, String> {
        let parts = text
            .split(',')
            .map(|p| humantime::parse_duration(p.trim()).map_err(|e| format!("{p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        match parts[..] {
            [heartbeat, election_min, election_max] => Ok(RaftTiming {
                heartbeat,
                election_min,
                election_max,
            }),
            _ => Err(format!(
                "{text:?}: expected HEARTBEAT,ELECTION_MIN,ELECTION_MAX, e.g. 100ms,250ms,500ms"
            )),
        }
    }

    fn env(self) -> Vec<(String, String)> {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        vec![
            ("ROTA_RAFT__HEARTBEAT_INTERVAL".to_owned(), text(self.heartbeat)),
            ("ROTA_RAFT__ELECTION_TIMEOUT_MIN".to_owned(), text(self.election_min)),
            ("ROTA_RAFT__ELECTION_TIMEOUT_MAX".to_owned(), text(self.election_max)),
        ]
    }
}

/// Runs the scenario with the servers' default Raft timing or `timing`:
/// prints the table, returns the JSON report.
pub async fn run(rounds: usize, timing: Option<RaftTiming>) -> anyhow::Result<serde_json::Value> {
    let env = timing.map(RaftTiming::env).unwrap_or_default();
    let mut cluster = Cluster::start(
        3,
        ServerSettings {
            env,
            ..ServerSettings::default()
        },
    )
    .await?;
    let client = cluster.client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, stop, done, failed) = (client.clone(), stop.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match client.create_job(crate::job_spec(&format!("load-{w}-{i}"))).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        })
        .collect();

    let mut recoveries = Latencies::default();
    let mut report = Vec::new();
    for round in 0..rounds {
        let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
        let survivors: Vec<String> = cluster
            .ids()
            .into_iter()
            .filter(|&id| id != leader)
            .map(|id| cluster.addr(id))
            .collect::<anyhow::Result<_>>()?;
        let killed = Instant::now();
        cluster.kill(leader)?;
        let recovery = until_a_write_is_accepted(&survivors, leader, round, Duration::from_secs(30)).await?;
        let took = recovery.accepted.duration_since(killed);
        let elected = recovery.elected.map(|at| at.duration_since(killed));
        recoveries.push(took);
        report.push(json!({
            "round": round,
            "killed": leader,
            "ms": took.as_secs_f64() * 1000.0,
            "new_leader_named_ms": elected.map(|d| d.as_secs_f64() * 1000.0),
        }));
        println!(
            "round {round}: killed leader {leader}; a new leader named after {elected:?}, writes accepted again after {took:?}"
        );
        cluster.restart(leader)?;
        cluster.wait_for_leader(Duration::from_secs(60)).await?;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    let row = Row {
        name: format!("rota, {rounds} leader kills"),
        per_second: 0.0,
        p50: recoveries.quantile(0.5),
        p99: recoveries.quantile(0.99),
        errors: failed.load(Ordering::Relaxed),
    };
    println!("\nfailover: SIGKILL the leader under load, time until a write is accepted again");
    println!("{:<28} {:>10} {:>10} {:>10}", "", "p50 ms", "p99 ms", "max ms");
    println!(
        "{:<28} {:>10.1} {:>10.1} {:>10.1}",
        row.name,
        row.p50.as_secs_f64() * 1000.0,
        row.p99.as_secs_f64() * 1000.0,
        recoveries.quantile(1.0).as_secs_f64() * 1000.0
    );
    Ok(json!({
        "scenario": "failover",
        "rounds": rounds,
        "raft_timing": timing.map_or_else(|| "defaults".to_owned(), |t| format!("{t:?}")),
        "p50_ms": row.p50.as_secs_f64() * 1000.0,
        "p99_ms": row.p99.as_secs_f64() * 1000.0,
        "max_ms": recoveries.quantile(1.0).as_secs_f64() * 1000.0,
        "writes_during": done.load(Ordering::Relaxed),
        "writes_failed_after_sdk_retries": failed.load(Ordering::Relaxed),
        "rounds_detail": report,
    }))
}
