//! `rota-bench`: starts what it measures (a 3-server rota cluster from the
//! binaries beside it, and the peer it is compared with), runs a scenario,
//! prints a table and writes JSON. See BENCHMARKS.md.
//!
//!   cargo build --release --workspace --bins
//!   cargo build --release -p rota-chaos --bin rota-bench --features etcd
//!   ./target/release/rota-bench writes
//!   ./target/release/rota-bench writes --smoke      # tiny, as CI runs it

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rota_chaos::bench;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Durable replicated writes, rota against a 3-member etcd.
    Writes,
    /// Idle resident memory of a server and a worker.
    Footprint,
    /// 1,000 jobs on one cron slot: until all runs are committed and assigned.
    Herd,
    /// 10,000 jobs on minutely slots: trigger lateness, missed, duplicated.
    Lateness,
    /// On-demand exec runs of `true` on 4 workers, runs/s.
    Throughput,
    /// Container runs through rota against a raw engine loop.
    Containers,
    /// SIGKILL the leader under load, 20 times: until writes are accepted.
    Failover,
}

#[derive(Debug, Parser)]
#[command(
    name = "rota-bench",
    about = "rota's benchmarks, each beside its peer on this machine"
)]
struct Args {
    /// What to measure.
    scenario: Scenario,
    /// A tiny run that only checks the tool works (what CI runs).
    #[arg(long)]
    smoke: bool,
    /// Seconds per measurement (default 10; 1 with --smoke).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Concurrent clients, comma-separated (writes: default 1,16,64; 1,4
    /// with --smoke; throughput: the first is the number of callers
    /// triggering runs, default 64).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Jobs (herd: default 1000; lateness: default 10000; footprint: default
    /// 100000, with 10 runs of history each).
    #[arg(long)]
    jobs: Option<usize>,
    /// Runs (throughput: default 4000; containers: default 200; footprint:
    /// runs of history in all, default 1000000).
    #[arg(long)]
    runs: Option<usize>,
    /// Servers holding the history (footprint: default 3; 1 times one
    /// server's load without the others sharing the machine's cores).
    #[arg(long)]
    servers: Option<u64>,
    /// Containers at once (containers: default 8).
    #[arg(long)]
    parallel: Option<usize>,
    /// Leader kills (failover: default 20).
    #[arg(long)]
    rounds: Option<usize>,
    /// Raft timing of the servers for failover, HEARTBEAT,ELECTION_MIN,ELECTION_MAX
    /// (default: the servers' defaults), e.g. 100ms,250ms,500ms.
    #[arg(long, value_parser = bench::failover::RaftTiming::parse)]
    raft_timing: Option<bench::failover::RaftTiming>,
    /// Where to write the JSON report (default: stdout after the table).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let options = bench::Options {
        clients: if !args.clients.is_empty() {
            args.clients.clone()
        } else if args.smoke {
            vec![1, 4]
        } else {
            vec![1, 16, 64]
        },
        duration: args.duration.unwrap_or(if args.smoke {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        }),
    };
    runtime.block_on(async {
        let report = match args.scenario {
            Scenario::Writes => writes(&options).await?,
            Scenario::Footprint => {
                let settle = if args.smoke {
                    Duration::from_secs(1)
                } else {
                    Duration::from_secs(10)
                };
                let servers = args.servers.unwrap_or(3);
                anyhow::ensure!(
                    matches!(servers, 1 | 3),
                    "--servers must be 1 or 3 (footprint: servers holding the history), not {servers}"
                );
                let mut report = bench::footprint::run(settle).await?;
                let (jobs, runs) = if args.smoke { (50, 500) } else { (100_000, 1_000_000) };
                let jobs = args.jobs.unwrap_or(jobs).max(1);
                let runs_per_job = args.runs.unwrap_or(runs) / jobs;
                report["history"] = bench::footprint::with_history(jobs, runs_per_job, servers).await?;
                report
            }
            Scenario::Herd => bench::herd::run(args.jobs.unwrap_or(if args.smoke { 20 } else { 1000 })).await?,
            Scenario::Lateness => {
                let size = bench::lateness::Size {
                    jobs: args.jobs.unwrap_or(if args.smoke { 30 } else { 10_000 }),
                    period: if args.smoke { 2 } else { 60 },
                    window: args.duration.unwrap_or(if args.smoke {
                        Duration::from_secs(6)
                    } else {
                        Duration::from_secs(180)
                    }),
                };
                bench::lateness::run(&size).await?
            }
            Scenario::Throughput => {
                let mut size = bench::throughput::Size::new(args.smoke);
                size.runs = args.runs.unwrap_or(size.runs);
                size.callers = args.clients.first().copied().unwrap_or(size.callers);
                bench::throughput::run(&size).await?
            }
            Scenario::Containers => {
                bench::containers::run(
                    args.runs.unwrap_or(if args.smoke { 6 } else { 200 }),
                    args.parallel.unwrap_or(if args.smoke { 2 } else { 8 }),
                )
                .await?
            }
            Scenario::Failover => {
                bench::failover::run(args.rounds.unwrap_or(if args.smoke { 2 } else { 20 }), args.raft_timing).await?
            }
        };
        let text = serde_json::to_string_pretty(&report)?;
        match &args.json {
            Some(path) => std::fs::write(path, text)?,
            None => println!("\n{text}"),
        }
        Ok(())
    })
}

#[cfg(feature = "etcd")]
async fn writes(options: &bench::Options) -> anyhow::Result<serde_json::Value> {
    bench::writes::run(options).await
}

#[cfg(not(feature = "etcd"))]
async fn writes(options: &bench::Options) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!(
        "this rota-bench was built without etcd, so it cannot run writes ({options:?}): \
         cargo build -p rota-chaos --bin rota-bench --features etcd (needs protoc: Debian's protobuf-compiler)"
    )
}
